"""The task registry is the one place a task is described: data, builders, scoring, output size and options."""
import importlib.util

import pytest
import torch

from repl.data import ImageDataConfig, TextDataConfig, build_data, model_inputs, num_outputs
from repl.data.module import DataModule
from repl.data.build import check_present
from repl.engine.config import TaskConfig, TrainerConfig
from repl.errors import ConfigError
from repl.models import build_model
from repl.models.config import ModelConfig
from repl.tasks import build_task
from repl.tasks import registry
from repl.tasks.registry import TASKS, DataKind, Outputs, TaskSpec, check_precision, task_spec, tasks_where

CPU = torch.device("cpu")
NEEDS_MM = {DataKind.DETECTION, DataKind.SEGMENTATION}


@pytest.mark.parametrize("name", sorted(TASKS))
def test_each_task_object_is_scored_as_its_record_says(name):
    spec = task_spec(name)
    if spec.data in NEEDS_MM and importlib.util.find_spec("mmdet") is None:
        pytest.skip("needs the openmmlab extra")
    task = build_task(TaskConfig(name=name))
    assert (task.name, task.primary, task.higher_is_better, task.unit) == (
        name, spec.primary, spec.higher_is_better, spec.unit)
    module, _, function = spec.data_builder.partition(":")
    assert callable(getattr(importlib.import_module(module), function))


def test_records_answer_what_the_rest_of_the_code_asks():
    assert task_spec("lm").outputs is Outputs.VOCABULARY and not task_spec("lm").takes_images
    assert task_spec("classification").image_batches and task_spec("detection").takes_images
    assert tasks_where(accumulates=True) == ("classification", "lm")
    assert tasks_where(image_batches=True) == ("classification",)


def test_an_unknown_task_names_the_key_and_the_choices():
    with pytest.raises(ConfigError, match="task.name='ocr': choose one of classification, detection, segmentation, lm"):
        task_spec("ocr")
    with pytest.raises(ConfigError, match="task.name='ocr'"):
        TaskConfig(name="ocr").validate()


def test_accumulation_and_mixing_follow_the_record():
    with pytest.raises(ConfigError, match="trainer.accumulate=2 splits classification and lm batches only"):
        TrainerConfig(accumulate=2).validate_with("segmentation", per_batch_skips=None)
    with pytest.raises(ConfigError, match="task.mixup=0.8 mixes images for classification only, not task.name=lm"):
        TaskConfig(name="lm", mixup=0.8).validate()


@pytest.mark.parametrize("task", ["lm", "detection", "segmentation"])
def test_channels_last_is_refused_where_batches_are_not_image_tensors(task):
    """Token ids (rank 2) and mm batches (dicts) have no NHWC layout: the trainer's conversion raised mid-run."""
    with pytest.raises(ConfigError, match=f"trainer.channels_last=true lays out batches of images \\(classification\\), "
                                          f"not task.name={task}'s; use trainer.channels_last=false"):
        TrainerConfig(channels_last=True).validate_with(task, per_batch_skips=None)
    TrainerConfig(channels_last=True).validate_with("classification", per_batch_skips=None)


class _Constant(DataModule):
    """A DataModule of one constant batch, to show a new task's builder is reached through its record."""

    def train_batches(self, epoch, start_step=0):
        yield torch.zeros(1)

    def eval_batches(self):
        yield torch.zeros(1)


def build_constant_data(cfg, *, seed, device, rank, world_size):
    from repl.data.order import BatchOrder

    order = BatchOrder(4, cfg.batch_size, seed=seed, rank=rank, world_size=world_size)
    return _Constant(num_eval=1, order=order, eval_batch_size=1, rank=rank, world_size=world_size, device=device)


CHECKED: list = []


def no_files(cfg) -> None:
    """The counting task's data check: its data is generated; records what it was asked about."""
    CHECKED.append(cfg.batch_size)


def test_a_new_task_is_one_record(monkeypatch):
    spec = TaskSpec("counting", DataKind.IMAGE, f"{__name__}:build_constant_data", f"{__name__}:no_files",
                    "repl.tasks.classification:ClassificationTask",
                    primary="mae", higher_is_better=False, unit="samples", outputs=Outputs.CLASSES,
                    image_batches=False, accumulates=False)
    monkeypatch.setitem(registry.TASKS, "counting", spec)
    data = build_data(ImageDataConfig(batch_size=2), seed=0, device=CPU, task="counting")
    assert isinstance(data, _Constant) and data.steps_per_epoch == 2
    assert num_outputs(ImageDataConfig(num_classes=7), "counting") == 7
    with pytest.raises(ConfigError, match="dataset.resize=64 is for task=classification only; unset it for task=counting"):
        build_data(ImageDataConfig(resize=64), seed=0, device=CPU, task="counting")
    check_present(ImageDataConfig(batch_size=3), "counting")  # a multirun's pre-check asks the record's data check
    assert CHECKED == [3]


def test_model_inputs_name_what_the_data_gives():
    assert model_inputs(ImageDataConfig(image_size=32, resize=64, in_chans=1, num_classes=5)) == {
        "num_classes": 5, "in_chans": 1, "image_size": 64}
    text = TextDataConfig(vocab_size=40, seq_len=12)
    assert model_inputs(text, "lm") == {"vocab_size": 40, "seq_len": 12}
    with pytest.raises(ConfigError, match="task=lm takes text data"):
        model_inputs(ImageDataConfig(), "lm")


def test_a_token_model_is_the_same_built_from_named_inputs_or_the_older_image_names():
    cfg = ModelConfig(name="lm", kwargs={"context": None, "layers": 1, "dim": 16, "heads": 2})
    torch.manual_seed(0)
    named = build_model(cfg, vocab_size=40, seq_len=12)
    torch.manual_seed(0)
    older = build_model(cfg, num_classes=40, in_chans=1, image_size=12)
    assert named.context == older.context == 12
    assert all(torch.equal(a, b) for a, b in zip(named.state_dict().values(), older.state_dict().values()))
    with pytest.raises(ConfigError, match="model.name=resnet20 reads images; the data gives token ids"):
        build_model(ModelConfig(name="resnet20"), vocab_size=40, seq_len=12)


@pytest.mark.parametrize("task,precision,device,refused", [
    ("detection", "bf16", "cpu", True), ("detection", "16", "cpu", True), ("detection", "bf16", "cuda", True),
    ("detection", "16", "cuda", False), ("detection", "32", "cpu", False),
    ("classification", "bf16", "cpu", False), ("segmentation", "bf16", "cpu", False), ("lm", "16", "cpu", False)])
def test_mixed_precision_follows_the_record(task, precision, device, refused):
    """mmcv's NMS and RoIAlign have float32-only CPU kernels and no bfloat16 CUDA kernel: a detector under such
    autocast stopped at its first step with a traceback; it is refused before the run dir is touched."""
    if not refused:
        check_precision(task, precision, device)
        return
    with pytest.raises(ConfigError, match=f"trainer.precision={precision} on {device}: task.name=detection's ops have "
                                          "no kernel for it; use trainer.precision=32 \\(or 16 on cuda\\)"):
        check_precision(task, precision, device)
