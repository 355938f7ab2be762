"""Batched device augmentation equals the per-image definition (zero-padded random crop, h-flip)."""
import torch
import torch.nn.functional as F

from repl.data.augment import CropFlip, Normalize, RandomShift, shifted_windows


def test_crop_flip_matches_per_image_slicing():
    images = torch.randint(0, 256, (32, 3, 12, 12), dtype=torch.uint8)
    aug = CropFlip(pad=3, flip=True)
    params = aug.draw(32, torch.Generator().manual_seed(0))
    out = aug.apply(images, params)
    assert out.shape == images.shape and out.dtype == torch.uint8
    padded = F.pad(images, [3, 3, 3, 3])
    for img, (top, left, flip), got in zip(padded, params.tolist(), out):
        expected = img[:, top : top + 12, left : left + 12]
        assert torch.equal(got, expected.flip(2) if flip else expected)
    assert 0 < params[:, 2].sum() < 32 and params[:, :2].min() == 0 and params[:, :2].max() == 6


def test_no_flip_when_the_dataset_forbids_it():
    params = CropFlip(pad=4, flip=False).draw(64, torch.Generator().manual_seed(0))
    assert params[:, 2].eq(0).all()


def test_shifted_windows_wrap_around_like_roll():
    images = torch.arange(2 * 1 * 5 * 5).view(2, 1, 5, 5)
    out = shifted_windows(images, torch.tensor([1, 4]), torch.tensor([2, 0]), 5, 5)
    assert torch.equal(out[0], images[0].roll((-1, -2), dims=(1, 2)))
    assert torch.equal(out[1], images[1].roll((-4, 0), dims=(1, 2)))


def test_random_shift_rolls_each_image():
    images = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8)
    shift = RandomShift(8)
    params = shift.draw(16, torch.Generator().manual_seed(1))
    out = shift.apply(images, params)
    assert params.min() >= 0 and params.max() <= 7 and len(set(params[:, 0].tolist())) > 1
    for img, (top, left), got in zip(images, params.tolist(), out):
        assert torch.equal(got, img.roll((-top, -left), dims=(1, 2)))


def test_normalize_is_to_tensor_then_normalize():
    images = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    mean, std = (0.1, 0.5, 0.9), (0.2, 0.3, 0.4)
    expected = (images.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    assert torch.allclose(Normalize(mean, std, torch.device("cpu"))(images), expected, atol=1e-6)
