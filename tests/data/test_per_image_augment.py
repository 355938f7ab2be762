"""RandAugment and random erasing: per-image transforms of the streaming path, on fabricated CIFAR-10."""
import pytest
import torch

from repl.data import ImageDataConfig, build_data
from repl.data.streaming import StreamingData
from repl.data.vision import VISION
from repl.errors import ConfigError
from tests.data.fabricate import make_cifar10
from tests.data.test_vision import CPU, config


DEIT = "rand-m9-mstd0.5-inc1"


def first_batch(data):
    return next(iter(data.train_batches(0)))[0]


@pytest.fixture
def root(tmp_path):
    make_cifar10(tmp_path)
    return tmp_path


def test_randaugment_streams_changes_training_images_only_and_is_seeded(root):
    plain = build_data(config("cifar10", root, resident="false", num_workers=1), seed=0, device=CPU)
    strong = [build_data(config("cifar10", root, randaugment=DEIT, num_workers=1), seed=s, device=CPU) for s in (0, 0, 1)]
    assert all(isinstance(d, StreamingData) for d in strong)  # resident=auto streams it
    assert torch.equal(first_batch(strong[0]), first_batch(strong[1]))
    assert not torch.equal(first_batch(strong[0]), first_batch(strong[2]))
    assert not torch.equal(first_batch(plain), first_batch(strong[0]))
    for (xa, ya), (xb, yb) in zip(plain.eval_batches(), strong[0].eval_batches()):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_random_erasing_replaces_one_box_of_every_image_with_noise(root):
    erased = first_batch(build_data(config("cifar10", root, random_erasing=1.0, num_workers=1), seed=0, device=CPU))
    spec = VISION["cifar10"]
    mean, std = torch.tensor(spec.mean)[:, None], torch.tensor(spec.std)[:, None]
    levels = (torch.arange(256) / 255 - mean) / std  # [3, 256]: every value a stored 8-bit pixel can become
    for image in erased:
        # noise: a channel off every level (levels are 0.016 apart: a normal draw lands within 1e-5 of one
        # with probability ~1e-3 per channel, so on all three ~1e-9 per pixel)
        off = (image[..., None] - levels[:, None, None, :]).abs().min(-1).values > 1e-5
        noise = off.any(0)
        rows, cols = noise.any(1).nonzero().flatten(), noise.any(0).nonzero().flatten()
        assert noise.any()
        box = noise[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        assert box.all() and box.sum() == noise.sum()  # one solid rectangle, nothing outside it


@pytest.mark.parametrize("overrides, message", [
    ({"randaugment": "9"}, "dataset.randaugment='9' is not a timm RandAugment config; use e.g. rand-m9-mstd0.5-inc1"),
    ({"randaugment": "rand-m9-x3"}, "dataset.randaugment='rand-m9-x3' is not a timm RandAugment config"),
    ({"randaugment": "rand-m9-mstd"}, "dataset.randaugment='rand-m9-mstd' is not a timm"),  # timm would skip it
    ({"randaugment": "augmix-m5"}, "dataset.randaugment='augmix-m5' is not a timm RandAugment config"),
    ({"random_erasing": 1.5}, "dataset.random_erasing=1.5 must be a probability"),
    ({"randaugment": DEIT, "augment": False}, "needs dataset.augment=true"),
])
def test_bad_values_are_one_line_naming_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message) as info:
        ImageDataConfig(**overrides).validate()
    assert "\n" not in str(info.value)


def test_other_tasks_are_refused():
    with pytest.raises(ConfigError, match="dataset.random_erasing=0.25 is for task=classification only"):
        ImageDataConfig(name="coco", random_erasing=0.25).validate(task="detection")


def test_paths_that_cannot_run_per_image_transforms_are_refused_before_reading(root):
    with pytest.raises(ConfigError, match="dataset.resident=true cannot run dataset.randaugment"):
        build_data(config("cifar10", root, resident="true", randaugment=DEIT), seed=0, device=CPU)
    with pytest.raises(ConfigError, match="the synthetic set is held on the device"):
        build_data(ImageDataConfig(random_erasing=0.25), seed=0, device=CPU)


def test_randaugment_is_timms_with_deits_hyper_parameters(root):
    """The config string reaches timm: magnitude noise 0.5, increasing ops, 2 ops per image, DeiT's fill."""
    from timm.data.auto_augment import RandAugment
    from repl.data.vision import train_transform

    steps = train_transform(config("cifar10", root, randaugment=DEIT), VISION["cifar10"]).transforms
    (augment,) = [t for t in steps if isinstance(t, RandAugment)]
    assert augment.num_layers == 2 and len(augment.ops) == 15
    op = augment.ops[0]
    assert op.magnitude == 9 and op.magnitude_std == 0.5 and "Increasing" in " ".join(o.name for o in augment.ops)
    assert op.hparams["translate_const"] == int(32 * 0.45) and op.hparams["img_mean"] == (125, 123, 114)


def test_posterize_to_zero_bits_gives_a_black_image_instead_of_stopping_the_run():
    """rand-m9-mstd0.5-inc1 draws the level cap ~2% of the time; PosterizeIncreasing then keeps 0 bits, which
    Pillow >= 11 refuses. It is the black image older Pillow returned (what DeiT trained with)."""
    from PIL import Image
    from timm.data.auto_augment import RandAugment
    from repl.data.vision import train_transform

    steps = train_transform(config("cifar10", "unused", randaugment=DEIT), VISION["cifar10"]).transforms
    (augment,) = [t for t in steps if isinstance(t, RandAugment)]
    (op,) = [o for o in augment.ops if o.name == "PosterizeIncreasing"]
    image = Image.new("RGB", (8, 8), (200, 100, 50))
    assert op.aug_fn(image, 0).getextrema() == ((0, 0), (0, 0), (0, 0))
    assert op.aug_fn(image, 4).getpixel((0, 0)) == (192, 96, 48)  # the top 4 bits, as timm's own op
