"""Datasets and the two data paths (resident on the device, or streamed by DataLoader workers).

    data = build_data(cfg.dataset, seed=cfg.seed, device=device, rank=rank, world_size=world_size)
    for images, labels in data.train_batches(epoch, start_step): ...
"""
from repl.data.build import build_data, num_outputs
from repl.data.config import DATASETS, DatasetConfig
from repl.data.module import DataModule

__all__ = ["DATASETS", "DataModule", "DatasetConfig", "build_data", "num_outputs"]
