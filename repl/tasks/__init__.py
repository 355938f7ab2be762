"""Tasks: what is learned and measured (loss, evaluation, primary metric)."""
from __future__ import annotations

import importlib

from repl.engine.config import TaskConfig

# task.name -> "module:class"; imported on use, so a task's optional extra is needed only by that task.
TASKS = {
    "classification": "repl.tasks.classification:ClassificationTask",
    "lm": "repl.tasks.lm:LanguageModelTask",
    "detection": "repl.tasks.detection:DetectionTask",
    "segmentation": "repl.tasks.segmentation:SegmentationTask",
}


def build_task(cfg: TaskConfig):
    """The task object for task.name (validated by TaskConfig.validate)."""
    module, _, name = TASKS[cfg.name].partition(":")
    return getattr(importlib.import_module(module), name)(cfg)
