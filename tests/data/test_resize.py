"""dataset.resize: batches resized on the device after augmentation, on every data path, and the model built
for the resized side."""
import pytest
import torch
import torch.nn.functional as F

from hydra.errors import ConfigCompositionException

from repl.config import compose, to_config, unknown_key_error
from repl.data import ImageDataConfig, build_data
from repl.data.resident import ResidentData
from repl.data.streaming import StreamingData
from repl.errors import ConfigError
from repl.run import train
from tests.data.fabricate import make_cifar10

CPU = torch.device("cpu")
SMALL = dict(num_train=48, num_eval=20, batch_size=16, image_size=16)


def upsampled(images, size):
    """What the resize must equal: the same bilinear interpolation of the batch at the stored size."""
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)


def assert_resized(native, resized, size):
    """`resized` are the batches of `native` (same seed), each resized to `size`, bit for bit."""
    native, resized = list(native), list(resized)
    assert len(native) == len(resized) > 0
    for (x, y), (xr, yr) in zip(native, resized):
        assert xr.shape == (len(x), 3, size, size) and xr.dtype == torch.float32
        assert torch.equal(yr, y) and torch.equal(xr, upsampled(x, size))


@pytest.mark.parametrize("size", [40, 8])  # up- and downsampling
def test_resident_batches_are_resized_after_augmentation(size):
    native = build_data(ImageDataConfig(**SMALL), seed=3, device=CPU)
    resized = build_data(ImageDataConfig(**SMALL, resize=size), seed=3, device=CPU)
    assert isinstance(resized, ResidentData) and resized.augment is not None
    assert (native.image_size, resized.image_size) == (16, size)
    for epoch, start in ((0, 0), (1, 1)):
        assert_resized(native.train_batches(epoch, start), resized.train_batches(epoch, start), size)
    assert_resized(native.eval_batches(), resized.eval_batches(), size)


@pytest.mark.parametrize("resident", ["true", "false"])
def test_real_dataset_batches_are_resized_on_both_paths(resident, tmp_path):
    make_cifar10(tmp_path)
    cfg = dict(name="cifar10", root=str(tmp_path), batch_size=10, num_workers=0, resident=resident)
    native = build_data(ImageDataConfig(**cfg), seed=1, device=CPU)
    resized = build_data(ImageDataConfig(**cfg, resize=48), seed=1, device=CPU)
    assert isinstance(resized, ResidentData if resident == "true" else StreamingData)
    torch.manual_seed(0)  # the streaming path's random crops and flips come from the global RNG
    native_train = list(native.train_batches(0))
    torch.manual_seed(0)
    assert_resized(native_train, resized.train_batches(0), 48)
    assert_resized(native.eval_batches(), resized.eval_batches(), 48)


def test_a_vit_is_built_for_the_resized_side_and_trains(tmp_path):
    overrides = ["model=vit_t", "dataset=synthetic", "dataset.image_size=16", "dataset.resize=64",
                 "dataset.num_train=8", "dataset.num_eval=4", "dataset.batch_size=4", "trainer.max_steps=2",
                 "trainer.progress=false", "trainer.timing_warmup=0"]
    summary = train(to_config(compose(overrides)), tmp_path)
    assert summary["status"] == "completed" and summary["steps_done"] == 2 and summary["input_size"] == 64
    weights = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)["model"]
    # 64 px takes patch 8 (16 px would take patch 4): 8x8 patches + the class token
    assert weights["patch_embed.proj.weight"].shape[-2:] == (8, 8)
    assert weights["pos_embed"].shape[1] == 1 + 8 * 8


@pytest.mark.parametrize("value", [0, -32, 7])
def test_bad_sizes_are_refused_in_one_line(value):
    with pytest.raises(ConfigError) as err:
        to_config(compose([f"dataset.resize={value}"]))
    message = str(err.value)
    assert message.startswith(f"dataset.resize={value} ") and "at least 8" in message and "\n" not in message


@pytest.mark.parametrize("task", ["detection", "segmentation"])
def test_tasks_without_resize_refuse_it_before_anything_is_built(task):
    with pytest.raises(ConfigError) as err:
        to_config(compose([f"task={task}", "dataset.resize=64"]))
    message = str(err.value)
    assert message.startswith("dataset.resize=64 ") and f"task={task}" in message and "\n" not in message
    with pytest.raises(ConfigError, match="dataset.resize=64"):
        build_data(ImageDataConfig(resize=64), seed=0, device=CPU, task=task)


def test_input_size_is_resize_or_the_stored_size():
    assert ImageDataConfig(image_size=32).input_size == 32
    assert ImageDataConfig(image_size=32, resize=224).validate().input_size == 224


def test_text_data_has_no_resize_key():
    """task=lm reads text data: dataset.resize is a key of the other kind, refused naming it and the tasks of its kind."""
    with pytest.raises(ConfigCompositionException) as err:
        compose(["task=lm", "dataset.resize=64"])
    message = str(unknown_key_error(err.value.__cause__.full_key))
    assert message.startswith("dataset.resize is a key of image data (task=classification|") and "\n" not in message
    with pytest.raises(ConfigError, match="dataset.resize is a key of image data .* task=lm takes text data"):
        build_data({"name": "synthetic", "resize": 64}, seed=0, device=CPU, task="lm")
