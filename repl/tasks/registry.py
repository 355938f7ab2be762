"""The task registry: one record per task.name saying everything the rest of the code asks about a task.

    spec = task_spec("lm")
    spec.data            # DataKind.TEXT: the data config it takes (repl.data.config.config_class)
    spec.build_data(...) # its DataModule builder, imported on use
    spec.check_data(cfg) # DataError when the dataset's files are missing, reading none of them
    spec.primary, spec.higher_is_better, spec.unit, spec.outputs, spec.image_batches, spec.accumulates

Builders and task classes are "module:attribute" strings imported on first use, so a task's optional
extra (openmmlab for detection and segmentation) is needed only by the task that uses it. Adding a
task is one TaskSpec in TASKS below plus its task class and data builder (docs/extending.md#data-and-tasks).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, Tuple

from repl.engine.precision import Precision
from repl.errors import ConfigError

if TYPE_CHECKING:
    from repl.engine.config import TaskConfig


class DataKind(str, Enum):
    """What a task's batches hold; IMAGE, DETECTION and SEGMENTATION read an image data config, TEXT a text one."""

    IMAGE = "image"
    TEXT = "text"
    DETECTION = "detection"
    SEGMENTATION = "segmentation"


class Outputs(str, Enum):
    """What the model's output size counts: the dataset's classes or the tokenizer's vocabulary."""

    CLASSES = "classes"
    VOCABULARY = "vocabulary"


@dataclass(frozen=True)
class TaskSpec:
    """One task: its data, its builders, how it is scored and what the rest of the run may do with it."""

    name: str
    data: DataKind  # the kind of data it takes
    data_builder: str  # "module:function"(cfg, *, seed, device, rank, world_size) -> DataModule
    data_check: str  # "module:function"(cfg): DataError when the dataset's files are missing; reads nothing
    task_class: str  # "module:class"(TaskConfig): loss and evaluation
    primary: str  # the metric a run is judged by (summary.json "primary")
    higher_is_better: bool
    unit: str  # what throughput counts: "samples" or "tokens"
    outputs: Outputs  # the model's output size rule
    image_batches: bool  # batches are plain images: dataset.resize, per-image augmentation and mixing apply
    accumulates: bool  # the batch loss splits exactly into micro-batches (trainer.accumulate)
    # "device:precision" pairs its models train in besides trainer.precision=32 (autocast); None: every pair
    mixed_precision: Optional[Tuple[str, ...]] = None

    @property
    def takes_images(self) -> bool:
        """Whether the model reads images (it has an input side; text models read token ids)."""
        return self.data is not DataKind.TEXT

    def build_data(self, *args: Any, **kwargs: Any) -> Any:
        """Call the task's data builder (imported now)."""
        return _load(self.data_builder)(*args, **kwargs)

    def check_data(self, cfg: Any) -> None:
        """DataError when the files of data config `cfg` are not where it says (a multirun's pre-check)."""
        _load(self.data_check)(cfg)

    def build_task(self, cfg: "TaskConfig") -> Any:
        """The task object (loss and evaluation) for `cfg`."""
        return _load(self.task_class)(cfg)


def _load(target: str) -> Callable[..., Any]:
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)


TASKS: Dict[str, TaskSpec] = {spec.name: spec for spec in (
    TaskSpec("classification", DataKind.IMAGE, "repl.data.classification:build_classification_data",
             "repl.data.classification:check_classification_files",
             "repl.tasks.classification:ClassificationTask", primary="top1", higher_is_better=True,
             unit="samples", outputs=Outputs.CLASSES, image_batches=True, accumulates=True),
    TaskSpec("detection", DataKind.DETECTION, "repl.data.coco:build_detection_data", "repl.data.coco:check_detection_files",
             "repl.tasks.detection:DetectionTask", primary="box_mAP", higher_is_better=True, unit="samples",
             outputs=Outputs.CLASSES, image_batches=False, accumulates=False,
             # mmcv's NMS and RoIAlign have float32-only CPU kernels and no bfloat16 CUDA kernel; fp16 on CUDA is
             # mmdet's own mixed precision
             mixed_precision=("cuda:16",)),
    TaskSpec("segmentation", DataKind.SEGMENTATION, "repl.data.cityscapes:build_segmentation_data",
             "repl.data.cityscapes:check_segmentation_files",
             "repl.tasks.segmentation:SegmentationTask", primary="pixel_acc", higher_is_better=True,
             unit="samples", outputs=Outputs.CLASSES, image_batches=False, accumulates=False),
    TaskSpec("lm", DataKind.TEXT, "repl.data.text:build_text_data", "repl.data.text:check_text_files",
             "repl.tasks.lm:LanguageModelTask",
             primary="test_ppl", higher_is_better=False, unit="tokens", outputs=Outputs.VOCABULARY,
             image_batches=False, accumulates=True),
)}


DEFAULT_TASK = "classification"  # task.name when none is given


def task_spec(name: str) -> TaskSpec:
    """The record of task `name`; ConfigError naming task.name and the choices if there is none."""
    if name not in TASKS:
        raise ConfigError(f"task.name={name!r}: choose one of {', '.join(TASKS)}")
    return TASKS[name]


def check_precision(name: str, precision: str, device: str) -> None:
    """ConfigError unless task `name` trains in trainer.precision=`precision` on a `device` ("cpu", "cuda")."""
    allowed = task_spec(name).mixed_precision
    if not Precision(precision).autocasts or allowed is None or f"{device}:{precision}" in allowed:
        return
    others = ", ".join(f"{pair.split(':')[1]} on {pair.split(':')[0]}" for pair in allowed)
    raise ConfigError(f"trainer.precision={precision} on {device}: task.name={name}'s ops have no kernel for it; "
                      f"use trainer.precision=32{' (or ' + others + ')' if others else ''}")


def tasks_where(**wanted: Any) -> Tuple[str, ...]:
    """The names of the tasks whose records have the given values (e.g. accumulates=True), in registry order."""
    return tuple(name for name, spec in TASKS.items() if all(getattr(spec, k) == v for k, v in wanted.items()))


class Scored:
    """primary / higher_is_better / unit of a task class, read from its record: the registry is their one place."""

    name = ""

    @property
    def primary(self) -> str:
        """The metric a run is judged by, from the task's record."""
        return task_spec(self.name).primary

    @property
    def higher_is_better(self) -> bool:
        """Whether a larger primary metric is better, from the task's record."""
        return task_spec(self.name).higher_is_better

    @property
    def unit(self) -> str:
        """What throughput counts (samples or tokens), from the task's record."""
        return task_spec(self.name).unit
