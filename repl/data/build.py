"""The data layer's front door: a run's DataModule, the model's output size and inputs, from (data config, task).

Which builder a task uses, and what its model's output size counts, is the task's record
(repl.tasks.registry); nothing here names a task.
"""
from __future__ import annotations

from typing import Any, Dict, Union

import torch
from omegaconf import DictConfig

from repl.data.config import DataConfig, as_data_config
from repl.data.module import DataModule
from repl.tasks.registry import DEFAULT_TASK, Outputs, task_spec


def num_outputs(cfg: Union[DataConfig, DictConfig], task: str = DEFAULT_TASK) -> int:
    """The model's output size: the dataset's classes, or the vocabulary size of its tokenizer (task=lm)."""
    cfg = as_data_config(cfg, task).validate(task=task)
    if task_spec(task).outputs is Outputs.VOCABULARY:
        from repl.data.text import vocabulary_size

        return vocabulary_size(cfg)
    return cfg.num_classes


def model_inputs(cfg: Union[DataConfig, DictConfig], task: str = DEFAULT_TASK) -> Dict[str, Any]:
    """The keyword arguments repl.models.build_model takes from the data: `build_model(model_cfg, **model_inputs(...))`.

    Images: num_classes, in_chans and image_size (the side the model sees, dataset.resize if set);
    text: vocab_size (of the tokenizer) and seq_len.
    """
    data_cfg = as_data_config(cfg, task).validate(task=task)
    return data_cfg.model_inputs(num_outputs(data_cfg, task))


def build_data(
    cfg: Union[DataConfig, DictConfig],
    *,
    seed: int,
    device: torch.device,
    rank: int = 0,
    world_size: int = 1,
    task: str = DEFAULT_TASK,
) -> DataModule:
    """The data of one run: validates the config for `task`, then the task's data builder reads or generates it."""
    data_cfg = as_data_config(cfg, task).validate(world_size, task)
    return task_spec(task).build_data(data_cfg, seed=seed, device=torch.device(device), rank=rank,
                                      world_size=world_size)


def check_present(cfg: Union[DataConfig, DictConfig], task: str = DEFAULT_TASK) -> None:
    """DataError naming what is missing when the dataset's files are not under dataset.root, without reading them
    (the task's data_check, the look its builder takes first). Generated data, and files dataset.download=true
    will fetch, pass (a failed download stops its run)."""
    task_spec(task).check_data(as_data_config(cfg, task).validate(task=task))
