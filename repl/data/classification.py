"""The data of task=classification: the embedded synthetic set or a torchvision dataset, resident or streamed."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Dict

import torch
from torch.utils.data import Subset

from repl.data.augment import CropFlip, RandomShift
from repl.data.batching import batching_args, subset_size
from repl.data.config import SYNTHETIC, VISION_DATASETS, ImageDataConfig
from repl.data.module import DataModule
from repl.data.order import subset_indices
from repl.data.resident import ResidentData
from repl.data.streaming import StreamingData
from repl.data.synthetic import make_synthetic
from repl.errors import ConfigError

if TYPE_CHECKING:  # repl.data.vision (torchvision) is imported only when a real dataset is read
    from repl.data.vision import VisionSpec

MIN_SYNTHETIC_SIZE = 8


def classification_datasets() -> tuple:
    """The dataset.name values task=classification accepts."""
    return (SYNTHETIC, *VISION_DATASETS)


def check_classification_files(cfg: ImageDataConfig) -> None:
    """DataError when the dataset's files are not under dataset.root (read nothing); generated data, and files
    dataset.download=true will fetch, pass (a failed download stops its run)."""
    if cfg.name not in VISION_DATASETS:
        return
    from repl.data.vision import VISION, require_files

    spec = VISION[cfg.name]
    if not (cfg.download and spec.downloadable):
        require_files(os.path.abspath(os.path.expanduser(cfg.root)), spec)


def build_classification_data(cfg: ImageDataConfig, *, seed: int, device: torch.device, rank: int = 0,
                              world_size: int = 1) -> DataModule:
    """The classification data of one run: reads or generates the dataset, picks the data path."""
    if cfg.name not in classification_datasets():
        raise ConfigError(
            f"dataset.name={cfg.name!r} is not a classification dataset; choose one of "
            f"{', '.join(classification_datasets())}, or the task it belongs to (task=lm|detection|segmentation)"
        )
    if cfg.name == SYNTHETIC:
        if cfg.per_image_augment:
            raise ConfigError("dataset.randaugment and dataset.random_erasing need a streamed dataset (per-image "
                              "transforms); the synthetic set is held on the device: set dataset.randaugment=null and dataset.random_erasing=0")
        return _synthetic(cfg, seed=seed, device=device, rank=rank, world_size=world_size)
    from repl.data.vision import VISION, check_shape, open_vision

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


def _synthetic(cfg: ImageDataConfig, *, seed: int, device: torch.device, rank: int, world_size: int) -> DataModule:
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


def _is_streaming(cfg: ImageDataConfig, spec: VisionSpec) -> bool:
    """resident=auto holds datasets that fit in memory on the device, unless per-image transforms are on; true insists."""
    if cfg.resident_mode == "true" and not spec.fits_in_memory:
        raise ConfigError(f"dataset.resident=true is not supported for {cfg.name} (too large); use auto or false")
    if cfg.resident_mode == "true" and cfg.per_image_augment:
        raise ConfigError("dataset.resident=true cannot run dataset.randaugment / dataset.random_erasing "
                          "(per-image transforms of the streaming path); use resident=auto or false")
    return cfg.resident_mode == "false" or not spec.fits_in_memory or cfg.per_image_augment


def image_data_args(cfg: ImageDataConfig, num_train: int, **placement: Any) -> Dict[str, Any]:
    """The ImageData arguments of both classification data paths: batches come out at dataset.resize if set."""
    return {**batching_args(cfg, num_train, **placement), "num_classes": cfg.num_classes,
            "image_size": cfg.input_size, "in_chans": cfg.in_chans, "resize": cfg.resize}
