"""The whole run's config: one typed schema composed by Hydra from the groups under configs/.

The schema is registered as `train_schema` and sits first in configs/train.yaml's defaults list,
so a wrong type or an unknown key fails at composition, before anything is built.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from repl.data.config import DatasetConfig
from repl.engine.config import LoggerConfig, OptimConfig, TaskConfig, TrainerConfig
from repl.method.config import ReplConfig
from repl.models.config import ModelConfig
from repl.resources import shipped_dir


@dataclass
class TrainConfig:
    """Everything one run needs. Field names are the Hydra groups and top-level keys."""

    seed: int = 0
    experiment_name: str = "default"
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    repl: ReplConfig = field(default_factory=ReplConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)


def run_dirname(overrides: str) -> str:
    """A file-system-safe directory name for a run from Hydra's override_dirname."""
    if not overrides:
        return "default"
    return re.sub(r"[^A-Za-z0-9_.,=+-]", "_", overrides)


def register() -> None:
    """Register the schema and the resolvers Hydra needs; safe to call more than once."""
    ConfigStore.instance().store(name="train_schema", node=TrainConfig)
    if not OmegaConf.has_resolver("rundir"):
        OmegaConf.register_new_resolver("rundir", run_dirname)


def config_dir() -> Path:
    """The Hydra configs: the checkout's configs/ (clone, `pip install -e .`) or the wheel's repl/configs."""
    return shipped_dir("configs")


def compose(overrides: Optional[List[str]] = None) -> DictConfig:
    """Compose configs/train.yaml with overrides, as train.py would (for tests and notebooks)."""
    with initialize_config_dir(config_dir=str(config_dir()), version_base=None):
        return hydra_compose(config_name="train", overrides=list(overrides or []))


def to_config(cfg: DictConfig) -> TrainConfig:
    """Turn the composed DictConfig into validated dataclasses (ConfigError on a bad value)."""
    obj: TrainConfig = OmegaConf.to_object(cfg)  # type: ignore[assignment]
    obj.dataset.validate(task=obj.task.name)  # which dataset keys apply depends on the task (dataset.resize)
    for part in (obj.repl, obj.task, obj.trainer, obj.optim, obj.logger):
        validate = getattr(part, "validate", None)
        if validate is not None:
            validate()
    skips = obj.repl.method == "stochastic_depth" or (obj.repl.method == "repl" and obj.repl.stochastic_depth)
    obj.trainer.validate_with(obj.task.name, per_batch_skips=skips)  # trainer.accumulate, once each key is valid
    return obj


register()
