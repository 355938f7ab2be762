"""Tasks: what is learned and measured (loss, evaluation, primary metric); repl.tasks.registry says which exist."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from repl.tasks.registry import TASKS, TaskSpec, task_spec

if TYPE_CHECKING:
    from repl.engine.config import TaskConfig

__all__ = ["TASKS", "TaskSpec", "build_task", "task_spec"]


def build_task(cfg: "TaskConfig") -> Any:
    """The task object for task.name (validated by TaskConfig.validate)."""
    return task_spec(cfg.name).build_task(cfg)
