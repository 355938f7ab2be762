"""The embedded default dataset: deterministic from the seed, shaped by the config, and learnable."""

import pytest
import torch
from torch import nn

from repl.data import ImageDataConfig, build_data
from repl.data.synthetic import make_synthetic

CPU = torch.device("cpu")


def test_same_seed_same_data_other_seed_other_data():
    cfg = ImageDataConfig(num_train=200, num_eval=50)
    (a, a_eval), (b, b_eval) = make_synthetic(cfg, seed=3), make_synthetic(cfg, seed=3)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert torch.equal(a_eval.images, b_eval.images)
    c, _ = make_synthetic(cfg, seed=4)
    assert not torch.equal(a.images, c.images)


def test_shapes_dtypes_and_balanced_classes_follow_the_config():
    cfg = ImageDataConfig(num_train=100, num_eval=30, image_size=24, in_chans=1, num_classes=5)
    train, evaluation = make_synthetic(cfg, seed=0)
    assert train.images.shape == (100, 1, 24, 24) and train.images.dtype == torch.uint8
    assert evaluation.images.shape == (30, 1, 24, 24) and train.labels.dtype == torch.int64
    assert torch.bincount(train.labels).tolist() == [20] * 5
    assert train.images.float().std() > 20  # uses the grey range, not a flat image


def test_train_and_eval_samples_are_disjoint():
    train, evaluation = make_synthetic(ImageDataConfig(num_train=500, num_eval=200), seed=0)
    seen = {bytes(img.numpy()) for img in train.images}
    assert not any(bytes(img.numpy()) in seen for img in evaluation.images)


def test_normalised_batches_have_unit_scale():
    data = build_data(ImageDataConfig(num_train=256, num_eval=64, batch_size=64, augment=False), seed=0, device=CPU)
    images = torch.cat([x for x, _ in data.train_batches(0)])
    assert images.mean().abs() < 0.05 and (images.std() - 1).abs() < 0.05


def test_a_small_convnet_learns_the_classes():
    """Real class structure: a tiny CNN trained for a few seconds is far above chance (10%) on eval."""
    torch.manual_seed(0)
    data = build_data(ImageDataConfig(num_train=2048, num_eval=500, batch_size=64), seed=0, device=CPU)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 5, padding=2), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10),
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for epoch in range(3):
        for images, labels in data.train_batches(epoch):
            loss = nn.functional.cross_entropy(model(images), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        correct = sum((model(x).argmax(1) == y).sum().item() for x, y in data.eval_batches())
    assert correct / data.num_eval > 0.5


@pytest.mark.parametrize("size", [4, 7])
def test_too_small_images_are_a_config_error(size):
    from repl.errors import ConfigError

    with pytest.raises(ConfigError, match="dataset.image_size"):
        build_data(ImageDataConfig(image_size=size), seed=0, device=CPU)


def test_synthetic_augmentation_only_moves_pixels():
    """A circular shift keeps every image's pixel values: augmented data stay in the generator's distribution."""
    cfg = dict(num_train=128, num_eval=16, batch_size=64)
    plain = build_data(ImageDataConfig(**cfg, augment=False), seed=0, device=CPU)
    shifted = build_data(ImageDataConfig(**cfg), seed=0, device=CPU)
    for (xp, yp), (xs, ys) in zip(plain.train_batches(0), shifted.train_batches(0)):
        assert torch.equal(yp, ys) and not torch.equal(xp, xs)
        assert torch.equal(xp.flatten(1).sort(1).values, xs.flatten(1).sort(1).values)
