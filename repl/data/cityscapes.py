"""Segmentation data (task=segmentation): CityScapes, or the embedded synthetic set written in its layout.

Both are read by mmseg's CityscapesDataset through mmseg's transforms. Layout under the root (the
official leftImg8bit_trainvaltest + gtFine_trainvaltest downloads):
    leftImg8bit/{train,val}/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    gtFine/{train,val}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png
labelIds are mapped to the 19 trainIds on load (CityscapesLabelIdsToTrainIds). The synthetic set
(dataset.name=synthetic) is generated once per (seed, size, counts) into `dataset.root/<key>/`:
street-like scenes (sky, buildings, road, sidewalk, vegetation, cars, people, poles) whose classes
differ in colour and texture, at 2:1 like CityScapes.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np
import torch
from PIL import Image

from repl.data.config import SYNTHETIC, ImageDataConfig
from repl.data.files import write_once
from repl.data.module import DataModule
from repl.data.order import derive_seed
from repl.errors import ConfigError, DataError

CITYSCAPES_CLASSES = 19
DEFAULT_NUM_TRAIN = 32
DEFAULT_NUM_EVAL = 8
IMG_SUFFIX, SEG_SUFFIX = "_leftImg8bit.png", "_gtFine_labelIds.png"
CITIES = {"train": "synthburg", "val": "testhausen"}
# labelId -> (mean RGB, texture amplitude) of the synthetic scenes; 0 (unlabeled) is ignored by the metric
_LOOK = {0: ((20, 20, 20), 5), 7: ((128, 64, 128), 12), 8: ((244, 35, 232), 12), 11: ((70, 70, 70), 30),
         17: ((153, 153, 153), 5), 21: ((107, 142, 35), 40), 23: ((70, 130, 180), 6), 24: ((220, 20, 60), 15),
         26: ((0, 0, 142), 10)}


# ----------------------------------------------------------------------------- the synthetic set

def _scene(height: int, rng: np.random.Generator) -> np.ndarray:
    """One labelId map (height x 2*height, uint8) of a street-like scene."""
    width = 2 * height
    labels = np.zeros((height, width), np.uint8)
    horizon = int(height * rng.uniform(0.35, 0.5))
    labels[:horizon] = 23  # sky
    x = 0
    while x < width:  # a skyline of buildings
        w = int(rng.integers(width // 10, width // 4))
        labels[int(horizon * rng.uniform(0.2, 0.8)):horizon, x:x + w] = 11
        x += w + int(rng.integers(0, width // 12))
    labels[horizon:] = 7  # road
    walk = int(rng.integers(height // 12, height // 6))
    labels[horizon:horizon + walk] = 8  # sidewalk along the horizon
    for _ in range(int(rng.integers(1, 4))):  # trees over the skyline
        cx, cy, r = int(rng.integers(0, width)), horizon - int(rng.integers(0, height // 6)), int(rng.integers(height // 12, height // 5))
        yy, xx = np.ogrid[:height, :width]
        labels[((yy - cy) ** 2 + (xx - cx) ** 2 < r * r) & (yy < horizon + walk)] = 21
    for _ in range(int(rng.integers(1, 4))):  # cars on the road
        w, h = int(rng.integers(width // 12, width // 6)), int(rng.integers(height // 12, height // 6))
        x0, y0 = int(rng.integers(0, width - w)), int(rng.integers(horizon + walk, height - h))
        labels[y0:y0 + h, x0:x0 + w] = 26
    for _ in range(int(rng.integers(0, 4))):  # people and poles on the sidewalk
        w, h = int(rng.integers(2, max(3, width // 40))), int(rng.integers(height // 8, height // 3))
        x0 = int(rng.integers(0, width - w))
        labels[max(0, horizon + walk - h):horizon + walk, x0:x0 + w] = 24 if rng.random() < 0.5 else 17
    return labels


def _render(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The RGB image of a labelId map: per-class colour, per-class texture amplitude, global lighting."""
    image = np.zeros((*labels.shape, 3), np.float64)
    noise = rng.normal(0, 1, labels.shape)
    for label_id, (colour, texture) in _LOOK.items():
        mask = labels == label_id
        image[mask] = np.asarray(colour, np.float64) + texture * noise[mask][:, None]
    return np.clip(image * rng.uniform(0.75, 1.25), 0, 255).astype(np.uint8)


def _write_split(folder: Path, split: str, count: int, size: int, seed: int) -> None:
    city = CITIES[split]
    img_dir, seg_dir = folder / "leftImg8bit" / split / city, folder / "gtFine" / split / city
    img_dir.mkdir(parents=True)
    seg_dir.mkdir(parents=True)
    rng = np.random.default_rng(derive_seed(seed, f"synthetic_cityscapes/{split}"))
    for frame in range(count):
        stem = f"{city}_000000_{frame:06d}"
        labels = _scene(size, rng)
        Image.fromarray(_render(labels, rng)).save(img_dir / f"{stem}{IMG_SUFFIX}")
        Image.fromarray(labels).save(seg_dir / f"{stem}{SEG_SUFFIX}")


def write_synthetic_cityscapes(cfg: ImageDataConfig, seed: int) -> Path:
    """The synthetic set's folder for (cfg, seed), generated on first use (atomically: concurrent runs are safe)."""
    num_train, num_eval = cfg.num_train or DEFAULT_NUM_TRAIN, cfg.num_eval or DEFAULT_NUM_EVAL
    folder = Path(cfg.root) / f"seed{seed}_{cfg.image_size}px_{num_train}+{num_eval}"

    def write(tmp: Path) -> None:
        _write_split(tmp, "train", num_train, cfg.image_size, seed)
        _write_split(tmp, "val", num_eval, cfg.image_size, seed)

    return write_once(folder, write)


# ----------------------------------------------------------------------------- mmseg datasets

def _pipelines(size: int, augment: bool) -> Tuple[List[Dict[str, Any]], List[Dict[str, Any]]]:
    """mmseg's CityScapes transforms, scaled so that images are resized to (2*size, size) and cropped to size^2."""
    scale = (2 * size, size)
    load = [dict(type="LoadImageFromFile"), dict(type="LoadAnnotations"), dict(type="CityscapesLabelIdsToTrainIds")]
    if augment:
        train = load + [dict(type="RandomResize", scale=scale, ratio_range=(0.5, 2.0), keep_ratio=True),
                        dict(type="RandomCrop", crop_size=(size, size), cat_max_ratio=0.75),
                        dict(type="RandomFlip", prob=0.5), dict(type="PhotoMetricDistortion")]
    else:
        train = load + [dict(type="Resize", scale=scale, keep_ratio=True),
                        dict(type="RandomCrop", crop_size=(size, size))]
    train.append(dict(type="PackSegInputs"))
    test = [dict(type="LoadImageFromFile"), dict(type="Resize", scale=scale, keep_ratio=True),
            *load[1:], dict(type="PackSegInputs")]
    return train, test


def _check_layout(root: Path) -> None:
    for split in ("train", "val"):
        for top in ("leftImg8bit", "gtFine"):
            if not (root / top / split).is_dir():
                raise DataError(f"dataset.root={str(root)!r} has no {top}/{split}: download leftImg8bit_trainvaltest.zip "
                                "and gtFine_trainvaltest.zip from cityscapes-dataset.com and unpack both there")


def check_segmentation_files(cfg: ImageDataConfig) -> None:
    """DataError when CityScapes' files are not under dataset.root (read nothing); the synthetic set is generated."""
    if cfg.name == "cityscapes":
        _check_layout(Path(cfg.root))


def build_segmentation_data(cfg: ImageDataConfig, *, seed: int, device: torch.device, rank: int, world_size: int) -> DataModule:
    """The DataModule of task=segmentation for dataset.name synthetic or cityscapes (19 trainId classes)."""
    # the plug-in module: importing it registers CityscapesLabelIdsToTrainIds, which the pipeline names
    from repl.integrations.openmmlab import require_openmmlab

    require_openmmlab()
    from mmengine.registry import init_default_scope
    from mmseg.datasets import CityscapesDataset

    from repl.integrations.mm_data import MMData

    if cfg.name == SYNTHETIC:
        root = write_synthetic_cityscapes(cfg, seed)
    elif cfg.name == "cityscapes":
        root = Path(cfg.root)
        _check_layout(root)
    else:
        raise ConfigError(f"dataset.name={cfg.name!r} is not a segmentation dataset; choose cityscapes or synthetic")
    if cfg.num_classes != CITYSCAPES_CLASSES:
        raise ConfigError(f"dataset.num_classes={cfg.num_classes}: CityScapes segmentation has {CITYSCAPES_CLASSES} classes")
    train_pipeline, test_pipeline = _pipelines(cfg.image_size, cfg.augment)
    init_default_scope("mmseg")

    def dataset(split: str, pipeline: List[Dict[str, Any]]) -> CityscapesDataset:
        if not any((root / "leftImg8bit" / split).rglob(f"*{IMG_SUFFIX}")):  # mmengine fails on an empty split
            raise DataError(f"the {split} split is empty: dataset.root={str(root)!r} has no *{IMG_SUFFIX} image under "
                            f"leftImg8bit/{split}")
        found = CityscapesDataset(data_root=str(root), data_prefix=dict(img_path=f"leftImg8bit/{split}",
                                  seg_map_path=f"gtFine/{split}"), seg_map_suffix=SEG_SUFFIX, pipeline=pipeline)
        for index in range(len(found)):  # every image has its labels (else: a failure after an epoch, at evaluation)
            labels = found.get_data_info(index)["seg_map_path"]
            if not Path(labels).is_file():
                raise DataError(f"{labels} does not exist: each leftImg8bit/{split} image needs its gtFine "
                                f"*{SEG_SUFFIX}; unpack gtFine_trainvaltest.zip in {str(root)!r} again")
        return found

    train, evaluation = dataset("train", train_pipeline), dataset("val", test_pipeline)
    return MMData(cfg, train, evaluation, dict(evaluation.metainfo), seed=seed, device=device, rank=rank,
                  world_size=world_size)
