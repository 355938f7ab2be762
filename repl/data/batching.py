"""What every image data path checks and builds the same way: subset sizes and the DataModule's batching arguments."""
from __future__ import annotations

from typing import Any, Dict

import torch

from repl.data.config import ImageDataConfig
from repl.data.order import BatchOrder
from repl.errors import ConfigError


def subset_size(cfg: ImageDataConfig, key: str, available: int) -> int:
    """dataset.num_train / num_eval, checked against what the split holds (None = all)."""
    wanted = getattr(cfg, key)
    if wanted is not None and wanted > available:
        raise ConfigError(f"dataset.{key}={wanted} exceeds the {available} images of this {cfg.name} split")
    return available if wanted is None else wanted


def batching_args(cfg: ImageDataConfig, num_train: int, *, seed: int, device: torch.device, rank: int,
                  world_size: int) -> Dict[str, Any]:
    """The DataModule arguments shared by every image data path; the batch size must fit the training set."""
    if cfg.batch_size > num_train:
        raise ConfigError(f"dataset.batch_size={cfg.batch_size} exceeds the training set ({num_train} images)")
    order = BatchOrder(num_train, cfg.batch_size, seed=seed, rank=rank, world_size=world_size,
                       repeats=cfg.repeated_aug)
    return dict(order=order, eval_batch_size=cfg.eval_batch, rank=rank, world_size=world_size, device=device)
