"""RandAugment and random erasing: per-image transforms of the streaming path, on fabricated CIFAR-10."""
import pytest
import torch

from repl.data import DatasetConfig, build_data
from repl.data.streaming import StreamingData
from repl.data.vision import VISION
from repl.errors import ConfigError
from tests.data.fabricate import make_cifar10
from tests.data.test_vision import CPU, config


def first_batch(data):
    return next(iter(data.train_batches(0)))[0]


@pytest.fixture
def root(tmp_path):
    make_cifar10(tmp_path)
    return tmp_path


def test_randaugment_streams_changes_training_images_only_and_is_seeded(root):
    plain = build_data(config("cifar10", root, resident="false", num_workers=1), seed=0, device=CPU)
    strong = [build_data(config("cifar10", root, randaugment=9, num_workers=1), seed=0, device=CPU) for _ in range(2)]
    assert all(isinstance(d, StreamingData) for d in strong)  # resident=auto streams it
    assert torch.equal(first_batch(strong[0]), first_batch(strong[1]))
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
    ({"randaugment": 31}, "dataset.randaugment=31 must be a magnitude in"),
    ({"randaugment": -1}, "dataset.randaugment=-1 must be a magnitude in"),
    ({"random_erasing": 1.5}, "dataset.random_erasing=1.5 must be a probability"),
    ({"randaugment": 9, "augment": False}, "needs dataset.augment=true"),
])
def test_bad_values_are_one_line_naming_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message) as info:
        DatasetConfig(**overrides).validate()
    assert "\n" not in str(info.value)


def test_other_tasks_are_refused():
    with pytest.raises(ConfigError, match="dataset.random_erasing=0.25 is for task=classification only"):
        DatasetConfig(name="wikitext2", random_erasing=0.25).validate(task="lm")


def test_paths_that_cannot_run_per_image_transforms_are_refused_before_reading(root):
    with pytest.raises(ConfigError, match="dataset.resident=true cannot run dataset.randaugment"):
        build_data(config("cifar10", root, resident="true", randaugment=9), seed=0, device=CPU)
    with pytest.raises(ConfigError, match="the synthetic set is held on the device"):
        build_data(DatasetConfig(random_erasing=0.25), seed=0, device=CPU)
