"""Small datasets written in each dataset's real on-disk format, for tests (no downloads here).

Each `make_*` writes under `root` and returns what a correct reader must produce:
{"train": (images, labels), "test": (images, labels)} with uint8 NCHW images and 0-based int64 labels.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Dict, Sequence, Tuple

import numpy as np
from PIL import Image

Split = Tuple[np.ndarray, np.ndarray]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def random_split(n: int, size: int, seed: int) -> Split:
    """`n` random uint8 NCHW images of side `size` and labels cycling through the 10 classes."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 3, size, size), dtype=np.uint8)
    labels = rng.permutation(np.arange(n) % 10).astype(np.int64)
    return images, labels


def make_cifar10(root: Path, n_train: int = 50, n_test: int = 20, seed: int = 0) -> Dict[str, Split]:
    """cifar-10-batches-py/: data_batch_1..5 and test_batch (pickled dicts: 'data' N x 3072 uint8 rows of
    R, G, B planes row-major; 'labels' list of int) and batches.meta ('label_names')."""
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    train, test = random_split(n_train, 32, seed), random_split(n_test, 32, seed + 1)
    parts = np.array_split(np.arange(n_train), 5)
    batches = [(f"data_batch_{i + 1}", train[0][p], train[1][p]) for i, p in enumerate(parts)]
    for name, images, labels in batches + [("test_batch", *test)]:
        entry = {
            "batch_label": name,
            "labels": labels.tolist(),
            "data": images.reshape(len(images), 3 * 32 * 32),
            "filenames": [f"{name}_{i}.png" for i in range(len(images))],
        }
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": CIFAR10_CLASSES, "num_cases_per_batch": 10000, "num_vis": 3072}, f)
    return {"train": train, "test": test}


def make_svhn(root: Path, n_train: int = 40, n_test: int = 20, seed: int = 0) -> Dict[str, Split]:
    """train_32x32.mat / test_32x32.mat: X is 32x32x3xN uint8, y is Nx1 with digit 0 stored as 10."""
    from scipy.io import savemat

    Path(root).mkdir(parents=True, exist_ok=True)
    splits = {"train": random_split(n_train, 32, seed), "test": random_split(n_test, 32, seed + 1)}
    for split, (images, labels) in splits.items():
        digits = np.where(labels == 0, 10, labels).astype(np.uint8).reshape(-1, 1)
        savemat(os.path.join(root, f"{split}_32x32.mat"), {"X": images.transpose(2, 3, 1, 0), "y": digits})
    return splits


def make_stl10(root: Path, n_train: int = 20, n_test: int = 10, seed: int = 0) -> Dict[str, Split]:
    """stl10_binary/{train,test}_{X,y}.bin: images 3x96x96 uint8 each stored column-major (channel by
    channel, column by column), labels one uint8 per image in 1..10."""
    folder = Path(root) / "stl10_binary"
    folder.mkdir(parents=True, exist_ok=True)
    splits = {"train": random_split(n_train, 96, seed), "test": random_split(n_test, 96, seed + 1)}
    for split, (images, labels) in splits.items():
        images.transpose(0, 1, 3, 2).tofile(folder / f"{split}_X.bin")
        (labels + 1).astype(np.uint8).tofile(folder / f"{split}_y.bin")
    return splits


def make_imagenet(
    root: Path, classes: Sequence[str] = ("n01440764", "n01443537", "n01484850"), n_train: int = 4, n_val: int = 2,
    seed: int = 0,
) -> Dict[str, Sequence[str]]:
    """train/<wnid>/*.JPEG and val/<wnid>/*.JPEG: small RGB JPEGs of varied sizes, `n_*` per class.
    Returns the class names (the label of class folder i is its index in sorted order)."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("val", n_val)):
        for wnid in classes:
            folder = Path(root) / split / wnid
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                height, width = rng.integers(40, 72, size=2)
                pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{wnid}_{i}.JPEG", quality=90)
    return {"classes": sorted(classes)}
