"""Datasets and the data paths behind one DataModule interface; what each task takes is its record in repl.tasks.registry.

    data = build_data(cfg.dataset, seed=cfg.seed, device=device, rank=rank, world_size=world_size, task=cfg.task.name)
    model = build_model(cfg.model, **model_inputs(cfg.dataset, cfg.task.name))
    for batch in data.train_batches(epoch, start_step): ...
"""
from repl.data.build import build_data, model_inputs, num_outputs
from repl.data.config import DataConfig, ImageDataConfig, TextDataConfig, as_data_config
from repl.data.module import DataModule

__all__ = ["DataConfig", "DataModule", "ImageDataConfig", "TextDataConfig", "as_data_config", "build_data",
           "model_inputs", "num_outputs"]
