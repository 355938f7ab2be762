"""Tiny COCO and CityScapes copies in their real on-disk layouts, for the OpenMMLab tests (no downloads here).

Written independently of repl/data's synthetic generators, with what the real downloads have and
those do not: COCO's 80 named categories with their gapped ids (1..90), images of several sizes,
crowd boxes, images without annotations; CityScapes' several cities, the full 34 labelIds and the
sibling files (color, instanceIds, polygons) a reader must ignore.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List

import numpy as np
from PIL import Image

# COCO 2017's category ids: 1..90 without the 10 ids no category uses
COCO_IDS = [i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]
CITYSCAPES_TO_TRAIN = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12,
                       26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}


def make_coco(root: Path, coco_names: List[str], n_train: int = 6, n_val: int = 3, seed: int = 0) -> Dict[str, int]:
    """annotations/instances_{train,val}2017.json + {train,val}2017/*.jpg. Returns per split the number of
    images a training reader keeps (those with a non-crowd box) and the total ('train', 'val', 'train_all')."""
    rng = np.random.default_rng(seed)
    categories = [{"id": cid, "name": name, "supercategory": "thing"} for cid, name in zip(COCO_IDS, coco_names)]
    counts: Dict[str, int] = {}
    for split, n in (("train", n_train), ("val", n_val)):
        folder = root / f"{split}2017"
        folder.mkdir(parents=True)
        images, annotations, kept = [], [], 0
        for k in range(n):
            width, height = (int(v) for v in rng.choice([64, 80, 96], 2))
            image_id = int(rng.integers(1, 10**6)) * 10 + k  # unique, not contiguous, like COCO's
            name = f"{image_id:012d}.jpg"
            Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(folder / name)
            images.append({"id": image_id, "file_name": name, "width": width, "height": height,
                           "license": 1, "coco_url": "", "date_captured": ""})
            n_boxes = 0 if k == n - 1 else int(rng.integers(1, 4))  # the last image has no annotation
            for b in range(n_boxes):
                w, h = float(rng.integers(8, width // 2)), float(rng.integers(8, height // 2))
                x, y = float(rng.integers(0, width - w)), float(rng.integers(0, height - h))
                annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                    "category_id": int(rng.choice(COCO_IDS)), "bbox": [x, y, w, h], "area": w * h,
                                    "iscrowd": int(b == 2), "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]]})
            kept += n_boxes > 0
        (root / "annotations").mkdir(exist_ok=True)
        (root / "annotations" / f"instances_{split}2017.json").write_text(json.dumps(
            {"info": {"description": "fabricated"}, "licenses": [], "images": images,
             "annotations": annotations, "categories": categories}))
        counts[split] = kept if split == "train" else n
        counts[f"{split}_all"] = n
    return counts


def make_cityscapes(root: Path, n_train: int = 4, n_val: int = 2, height: int = 48, seed: int = 0) -> Dict[str, Dict[str, np.ndarray]]:
    """leftImg8bit/ and gtFine/ for train and val, two cities each. Returns {split: {image stem: trainId map}}."""
    rng = np.random.default_rng(seed)
    expected: Dict[str, Dict[str, np.ndarray]] = {}
    lut = np.full(256, 255, np.uint8)
    for label_id, train_id in CITYSCAPES_TO_TRAIN.items():
        lut[label_id] = train_id
    for split, n, cities in (("train", n_train, ("aachen", "bochum")), ("val", n_val, ("frankfurt", "lindau"))):
        expected[split] = {}
        for k in range(n):
            city = cities[k % 2]
            stem = f"{city}_{k:06d}_000019"
            img_dir, gt_dir = root / "leftImg8bit" / split / city, root / "gtFine" / split / city
            img_dir.mkdir(parents=True, exist_ok=True)
            gt_dir.mkdir(parents=True, exist_ok=True)
            labels = rng.integers(0, 34, (height, 2 * height), dtype=np.uint8)  # every labelId, trained or not
            Image.fromarray(rng.integers(0, 256, (height, 2 * height, 3), dtype=np.uint8)).save(img_dir / f"{stem}_leftImg8bit.png")
            Image.fromarray(labels).save(gt_dir / f"{stem}_gtFine_labelIds.png")
            Image.fromarray(lut[labels]).save(gt_dir / f"{stem}_gtFine_color.png")  # a sibling the reader ignores
            Image.fromarray(labels.astype(np.uint16) * 1000).save(gt_dir / f"{stem}_gtFine_instanceIds.png")
            (gt_dir / f"{stem}_gtFine_polygons.json").write_text(json.dumps({"imgHeight": height, "objects": []}))
            expected[split][stem] = lut[labels]
    return expected
