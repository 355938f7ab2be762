"""Detection data (task=detection): COCO 2017, or the embedded synthetic set written in COCO's own layout.

Both are read by mmdet's CocoDataset (COCO json + images) through mmdet's transforms, so the real
and the synthetic set take the same path. Layout under the root:
    annotations/instances_train2017.json  train2017/*.jpg
    annotations/instances_val2017.json    val2017/*.jpg
The synthetic set (dataset.name=synthetic) is generated once per (seed, size, classes, counts) into
`dataset.root/<key>/`: on a noisy smooth background, 1 to 4 non-overlapping filled shapes whose
category fixes both the shape (rectangle, ellipse, triangle) and the colour, boxed exactly.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np
import torch
from PIL import Image, ImageDraw

from repl.data.config import SYNTHETIC, ImageDataConfig
from repl.data.files import write_once
from repl.data.module import DataModule
from repl.data.order import derive_seed
from repl.errors import ConfigError, DataError

SPLITS = {"train": ("annotations/instances_train2017.json", "train2017/"),
          "val": ("annotations/instances_val2017.json", "val2017/")}
COCO_CLASSES = 80
DEFAULT_NUM_TRAIN = 64
DEFAULT_NUM_EVAL = 16
SHAPES = ("rectangle", "ellipse", "triangle")
MAX_OBJECTS = 4


# ----------------------------------------------------------------------------- the synthetic set

def _palette(num_classes: int, seed: int) -> np.ndarray:
    """A saturated colour per category (uint8, num_classes x 3), fixed by the seed."""
    rng = np.random.default_rng(derive_seed(seed, "synthetic_coco/palette"))
    colours = rng.uniform(0, 255, (num_classes, 3))
    colours[np.arange(num_classes), rng.integers(0, 3, num_classes)] = rng.uniform(0, 40, num_classes)  # saturate
    return colours.astype(np.uint8)


def _background(size: int, rng: np.random.Generator) -> np.ndarray:
    """A smooth grey-ish gradient with pixel noise (size x size x 3, uint8)."""
    ramp = np.linspace(0, 1, size)
    base = rng.uniform(70, 170) + rng.uniform(-40, 40) * ramp[None, :, None] + rng.uniform(-40, 40) * ramp[:, None, None]
    return np.clip(base + rng.normal(0, 12, (size, size, 3)), 0, 255).astype(np.uint8)


def _overlaps(box: List[float], boxes: List[List[float]]) -> bool:
    x, y, w, h = box
    return any(x < bx + bw and bx < x + w and y < by + bh and by < y + h for bx, by, bw, bh in boxes)


def _draw_image(size: int, num_classes: int, palette: np.ndarray, rng: np.random.Generator) -> Tuple[Image.Image, list]:
    """One image and its objects [(category index, [x, y, w, h]), ...]."""
    image = Image.fromarray(_background(size, rng))
    draw = ImageDraw.Draw(image)
    objects: List[Tuple[int, List[float]]] = []
    for _ in range(int(rng.integers(1, MAX_OBJECTS + 1))):
        for _attempt in range(10):
            w, h = (int(v) for v in rng.integers(max(6, size // 6), max(8, size // 2), 2))
            x, y = int(rng.integers(0, size - w)), int(rng.integers(0, size - h))
            if not _overlaps([x, y, w, h], [b for _, b in objects]):
                break
        else:
            continue
        category = int(rng.integers(0, num_classes))
        colour = tuple(int(c) for c in palette[category])
        shape = SHAPES[category % len(SHAPES)]
        corners = [x, y, x + w - 1, y + h - 1]
        if shape == "rectangle":
            draw.rectangle(corners, fill=colour)
        elif shape == "ellipse":
            draw.ellipse(corners, fill=colour)
        else:
            draw.polygon([(x, y + h - 1), (x + w - 1, y + h - 1), (x + (w - 1) / 2, y)], fill=colour)
        objects.append((category, [float(x), float(y), float(w), float(h)]))
    return image, objects


def _write_split(folder: Path, split: str, count: int, cfg: ImageDataConfig, seed: int, palette: np.ndarray) -> None:
    ann_file, img_dir = SPLITS[split]
    (folder / img_dir).mkdir(parents=True)
    rng = np.random.default_rng(derive_seed(seed, f"synthetic_coco/{split}"))
    images, annotations = [], []
    for index in range(count):
        image_id = index + 1
        image, objects = _draw_image(cfg.image_size, cfg.num_classes, palette, rng)
        name = f"{image_id:012d}.jpg"
        image.save(folder / img_dir / name, quality=95)
        images.append({"id": image_id, "file_name": name, "width": cfg.image_size, "height": cfg.image_size})
        for category, box in objects:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": category + 1,
                                "bbox": box, "area": box[2] * box[3], "iscrowd": 0})
    categories = [{"id": c + 1, "name": f"{SHAPES[c % len(SHAPES)]}{c}", "supercategory": "shape"}
                  for c in range(cfg.num_classes)]
    (folder / ann_file).parent.mkdir(parents=True, exist_ok=True)
    (folder / ann_file).write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))


def write_synthetic_coco(cfg: ImageDataConfig, seed: int) -> Path:
    """The synthetic set's folder for (cfg, seed), generated on first use (atomically: concurrent runs are safe)."""
    num_train, num_eval = cfg.num_train or DEFAULT_NUM_TRAIN, cfg.num_eval or DEFAULT_NUM_EVAL
    folder = Path(cfg.root) / f"seed{seed}_{cfg.image_size}px_{cfg.num_classes}c_{num_train}+{num_eval}"

    def write(tmp: Path) -> None:
        palette = _palette(cfg.num_classes, seed)
        _write_split(tmp, "train", num_train, cfg, seed, palette)
        _write_split(tmp, "val", num_eval, cfg, seed, palette)

    return write_once(folder, write)


# ----------------------------------------------------------------------------- mmdet datasets

def _pipelines(size: int, augment: bool) -> Tuple[List[Dict[str, Any]], List[Dict[str, Any]]]:
    """mmdet's train and test transforms at training scale `size` (the short side; 1333:800 like mmdet's)."""
    scale = (size * 1333 // 800, size)
    train = [dict(type="LoadImageFromFile"), dict(type="LoadAnnotations", with_bbox=True),
             dict(type="Resize", scale=scale, keep_ratio=True)]
    if augment:
        train.append(dict(type="RandomFlip", prob=0.5))
    train.append(dict(type="PackDetInputs"))
    test = [dict(type="LoadImageFromFile"), dict(type="Resize", scale=scale, keep_ratio=True),
            dict(type="LoadAnnotations", with_bbox=True),
            dict(type="PackDetInputs", meta_keys=("img_id", "img_path", "ori_shape", "img_shape", "scale_factor"))]
    return train, test


def _check_layout(root: Path) -> None:
    for ann_file, img_dir in SPLITS.values():
        for path in (root / ann_file, root / img_dir):
            if not path.exists():
                raise DataError(f"dataset.root={str(root)!r} has no {path.relative_to(root)}: download COCO 2017 "
                                "(train2017, val2017, annotations_trainval2017 from cocodataset.org) and unpack it there")


def _annotation_problem(root: Path, split: str, err: Exception) -> Exception:
    """What is wrong with a split's annotation file when mmdet's CocoDataset failed on it (read again only then):
    not JSON, no image listed, no image with a box to train on; else mmdet's own error, unchanged."""
    ann_file = root / SPLITS[split][0]
    try:
        content = json.loads(ann_file.read_text())
    except (OSError, ValueError) as parse:
        reason = (str(parse).strip() or type(parse).__name__).splitlines()[0]
        return DataError(f"{ann_file} is not readable COCO json ({reason}); download annotations_trainval2017.zip "
                         "from cocodataset.org and unpack it there again")
    images = content.get("images") if isinstance(content, dict) else None
    if not images:
        return DataError(f"the {split} split is empty: {ann_file} lists no image")
    listed = {image.get("id") for image in images if isinstance(image, dict)}
    boxed = {a.get("image_id") for a in content.get("annotations") or () if isinstance(a, dict) and not a.get("iscrowd")}
    if split == "train" and not listed & boxed:  # CocoDataset trains on images with a non-crowd box only
        return DataError(f"the {split} split has nothing to train on: none of the {len(images)} images of {ann_file} "
                         "has a (non-crowd) box")
    return err


def check_detection_files(cfg: ImageDataConfig) -> None:
    """DataError when COCO's files are not under dataset.root (read nothing); the synthetic set is generated."""
    if cfg.name == "coco":
        _check_layout(Path(cfg.root))


def build_detection_data(cfg: ImageDataConfig, *, seed: int, device: torch.device, rank: int, world_size: int) -> DataModule:
    """The DataModule of task=detection for dataset.name synthetic or coco."""
    from repl.integrations.mm_extra import require_openmmlab

    require_openmmlab()
    from mmdet.datasets import CocoDataset
    from mmengine.registry import init_default_scope

    from repl.integrations.mm_data import MMData

    if cfg.name == SYNTHETIC:
        root = write_synthetic_coco(cfg, seed)
    elif cfg.name == "coco":
        root = Path(cfg.root)
        _check_layout(root)
        if cfg.num_classes != COCO_CLASSES:
            raise ConfigError(f"dataset.num_classes={cfg.num_classes}: COCO detection has {COCO_CLASSES} classes")
    else:
        raise ConfigError(f"dataset.name={cfg.name!r} is not a detection dataset; choose coco or synthetic")
    categories = json.loads((root / SPLITS["val"][0]).read_text())["categories"] if cfg.name == SYNTHETIC else None
    metainfo = {"classes": tuple(c["name"] for c in categories)} if categories else None
    train_pipeline, test_pipeline = _pipelines(cfg.image_size, cfg.augment)
    init_default_scope("mmdet")

    def dataset(split: str, pipeline: List[Dict[str, Any]], test_mode: bool) -> CocoDataset:
        ann_file, img_dir = SPLITS[split]
        try:
            return CocoDataset(data_root=str(root), ann_file=ann_file, data_prefix=dict(img=img_dir),
                               metainfo=metainfo, filter_cfg=None if test_mode else dict(filter_empty_gt=True, min_size=0),
                               pipeline=pipeline, test_mode=test_mode)
        except (ValueError, KeyError, TypeError) as err:  # json's, or numpy's on a split without a sample
            raise _annotation_problem(root, split, err) from None

    train, evaluation = dataset("train", train_pipeline, False), dataset("val", test_pipeline, True)
    meta = {**evaluation.metainfo, "ann_file": str(root / SPLITS["val"][0])}
    return MMData(cfg, train, evaluation, meta, seed=seed, device=device, rank=rank, world_size=world_size)
