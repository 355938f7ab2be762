"""build_data: from a DatasetConfig to the DataModule the trainer iterates."""
from __future__ import annotations

import importlib
from typing import Any, Callable, Union

import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import Subset

from repl.data.augment import CropFlip, RandomShift
from repl.data.config import DatasetConfig
from repl.data.module import DataModule
from repl.data.order import BatchOrder, subset_indices
from repl.data.resident import ResidentData
from repl.data.streaming import StreamingData
from repl.data.synthetic import make_synthetic
from repl.data.vision import VISION, VisionSpec, check_shape, open_vision
from repl.errors import ConfigError

MIN_SYNTHETIC_SIZE = 8

# Tasks other than classification: "module:function" building their DataModule from every dataset
# the task accepts (the embedded synthetic one included). Imported on use, so that optional
# extras (openmmlab, datasets) are needed only by the tasks that use them.
TASK_DATA = {
    "lm": "repl.data.text:build_text_data",
    "detection": "repl.data.coco:build_detection_data",
    "segmentation": "repl.data.cityscapes:build_segmentation_data",
}
CLASSIFICATION_DATASETS = ("synthetic", "cifar10", "svhn", "stl10", "imagenet")


def _task_builder(task: str) -> Callable[..., DataModule]:
    module, _, function = TASK_DATA[task].partition(":")
    return getattr(importlib.import_module(module), function)


def as_dataset_config(cfg: Union[DatasetConfig, DictConfig, dict]) -> DatasetConfig:
    """A DatasetConfig from the dataclass itself, a Hydra DictConfig or a plain dict."""
    if isinstance(cfg, DatasetConfig):
        return cfg
    values: Any = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    try:
        return DatasetConfig(**values)
    except TypeError:
        unknown = sorted(set(values) - set(DatasetConfig.__dataclass_fields__))
        raise ConfigError(f"unknown dataset keys {', '.join('dataset.' + k for k in unknown)}") from None


def num_outputs(cfg: Union[DatasetConfig, DictConfig], task: str = "classification") -> int:
    """The model's output size: the dataset's classes, or for task=lm its vocabulary size (from its tokenizer)."""
    cfg = as_dataset_config(cfg)
    if task == "lm":
        from repl.data.text import vocabulary_size

        return vocabulary_size(cfg)
    return cfg.num_classes


def build_data(
    cfg: Union[DatasetConfig, DictConfig],
    *,
    seed: int,
    device: torch.device,
    rank: int = 0,
    world_size: int = 1,
    task: str = "classification",
) -> DataModule:
    """The data of one run: validates the config, reads or generates the dataset, picks the data path."""
    cfg = as_dataset_config(cfg).validate(world_size, task)
    device = torch.device(device)
    if task in TASK_DATA:
        return _task_builder(task)(cfg, seed=seed, device=device, rank=rank, world_size=world_size)
    if cfg.name not in CLASSIFICATION_DATASETS:
        raise ConfigError(
            f"dataset.name={cfg.name!r} is not a classification dataset; choose one of "
            f"{', '.join(CLASSIFICATION_DATASETS)}, or the task it belongs to (task=lm|detection|segmentation)"
        )
    if cfg.name == "synthetic":
        if cfg.per_image_augment:
            raise ConfigError("dataset.randaugment and dataset.random_erasing need a streamed dataset (per-image "
                              "transforms); the synthetic set is held on the device: set dataset.randaugment=null and dataset.random_erasing=0")
        return _synthetic(cfg, seed=seed, device=device, rank=rank, world_size=world_size)
    spec = VISION[cfg.name]
    check_shape(cfg, spec)
    streaming = _is_streaming(cfg, spec)
    train, evaluation = open_vision(cfg, spec, streaming=streaming)
    keep_train = subset_indices(len(train), subset_size(cfg, "num_train", len(train)))
    keep_eval = subset_indices(len(evaluation), subset_size(cfg, "num_eval", len(evaluation)))
    common = image_data_args(cfg, len(keep_train), seed=seed, device=device, rank=rank, world_size=world_size)
    if streaming:
        return StreamingData(
            Subset(train, keep_train.tolist()),
            Subset(evaluation, keep_eval.tolist()),
            num_workers=cfg.num_workers,
            **common,
        )
    augment = CropFlip(spec.crop_pad, spec.flip) if cfg.augment else None
    return ResidentData(
        train.tensors().subset(keep_train),
        evaluation.tensors().subset(keep_eval),
        mean=spec.mean,
        std=spec.std,
        augment=augment,
        **common,
    )


def _synthetic(cfg: DatasetConfig, *, seed: int, device: torch.device, rank: int, world_size: int) -> DataModule:
    """The embedded default, normalised by its own training-set statistics.

    Its augmentation is a random circular shift, which keeps the images in the generator's own
    distribution (a zero-padded crop or a flip would not, and hurts eval-mode BatchNorm early on).
    """
    if cfg.image_size < MIN_SYNTHETIC_SIZE:
        raise ConfigError(
            f"dataset.image_size={cfg.image_size} is too small for synthetic; use {MIN_SYNTHETIC_SIZE} or more"
        )
    train, evaluation = make_synthetic(cfg, seed)
    pixels = train.images.float().div_(255)
    mean, std = pixels.mean((0, 2, 3)).tolist(), pixels.std((0, 2, 3)).tolist()
    augment = RandomShift(cfg.image_size) if cfg.augment else None
    common = image_data_args(cfg, len(train), seed=seed, device=device, rank=rank, world_size=world_size)
    return ResidentData(train, evaluation, mean=mean, std=std, augment=augment, **common)


def _is_streaming(cfg: DatasetConfig, spec: VisionSpec) -> bool:
    """resident=auto holds datasets that fit in memory on the device, unless per-image transforms are on; true insists."""
    if cfg.resident_mode == "true" and not spec.fits_in_memory:
        raise ConfigError(f"dataset.resident=true is not supported for {cfg.name} (too large); use auto or false")
    if cfg.resident_mode == "true" and cfg.per_image_augment:
        raise ConfigError("dataset.resident=true cannot run dataset.randaugment / dataset.random_erasing "
                          "(per-image transforms of the streaming path); use resident=auto or false")
    return cfg.resident_mode == "false" or not spec.fits_in_memory or cfg.per_image_augment


def subset_size(cfg: DatasetConfig, key: str, available: int) -> int:
    """dataset.num_train / num_eval, checked against what the split holds (None = all)."""
    wanted = getattr(cfg, key)
    if wanted is not None and wanted > available:
        raise ConfigError(f"dataset.{key}={wanted} exceeds the {available} images of this {cfg.name} split")
    return available if wanted is None else wanted


def datamodule_args(cfg: DatasetConfig, num_train: int, *, seed: int, device: torch.device, rank: int, world_size: int) -> dict:
    """The DataModule arguments shared by every data path; the batch size must fit the training set."""
    if cfg.batch_size > num_train:
        raise ConfigError(f"dataset.batch_size={cfg.batch_size} exceeds the training set ({num_train} images)")
    order = BatchOrder(num_train, cfg.batch_size, seed=seed, rank=rank, world_size=world_size, repeats=cfg.repeated_aug)
    return dict(
        num_classes=cfg.num_classes,
        image_size=cfg.image_size,
        in_chans=cfg.in_chans,
        order=order,
        eval_batch_size=cfg.eval_batch,
        rank=rank,
        world_size=world_size,
        device=device,
    )


def image_data_args(cfg: DatasetConfig, num_train: int, **placement: Any) -> dict:
    """The ImageData arguments of both classification data paths: batches come out at dataset.resize if set."""
    return {**datamodule_args(cfg, num_train, **placement), "image_size": cfg.input_size, "resize": cfg.resize}
