"""Tasks: what is learned and measured (loss, evaluation, primary metric)."""
from __future__ import annotations

from repl.engine.config import TaskConfig
from repl.tasks.classification import ClassificationTask

TASKS = {"classification": ClassificationTask}


def build_task(cfg: TaskConfig):
    """The task object for task.name (validated by TaskConfig.validate)."""
    return TASKS[cfg.name](cfg)
