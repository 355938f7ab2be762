"""Real image datasets read with torchvision: CIFAR-10, SVHN, STL-10 and ImageNet (folder layout).

Files already on disk are accepted when present: the torchvision classes below check presence
instead of the md5 of the official release (so subsets, re-packed copies and test fixtures load, and
nothing hashes gigabytes at every start). Downloads, when `dataset.download=true`, are still checked
against the published md5 by torchvision.
"""
from __future__ import annotations

import os
import pickle
import sys
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence, Tuple, Type

import numpy as np
import torch
from PIL import Image
from scipy.io.matlab import MatReadError
from torch.utils.data import Dataset
from torchvision import datasets, transforms

from repl.data.config import CIFAR10, IMAGENET, STL10, SVHN, ImageDataConfig
from repl.data.tensors import TensorSplit
from repl.errors import ConfigError, DataError

CIFAR10_FILES = tuple(f"cifar-10-batches-py/{name}" for name in (
    "data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch", "batches.meta"
))
SVHN_FILES = ("train_32x32.mat", "test_32x32.mat")
STL10_FILES = tuple(f"stl10_binary/{name}" for name in ("train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin"))
IMAGENET_FOLDERS = ("train", "val")
# Errors of reading a file that is present but not in the expected format.
MALFORMED = (OSError, EOFError, ValueError, KeyError, IndexError, pickle.UnpicklingError, MatReadError)
# Errors of decoding one image file of a folder dataset (unreadable, truncated, not an image, too large).
UNREADABLE_IMAGE = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)
MAX_SKIPPED_IN_A_ROW = 16  # more unreadable images in a row than this: the folder itself is broken


def missing_path(root: str, relative_paths: Tuple[str, ...]) -> Optional[str]:
    """The first of `relative_paths` under `root` that does not exist, else None."""
    for relative in relative_paths:
        path = os.path.join(root, relative)
        if not os.path.exists(path):
            return path
    return None


class _PresentFiles:
    """Mixin for torchvision datasets: the data counts as intact when the `required` files exist.

    Each subclass also says which files a split reads and how to read one alone, so that a malformed
    file or labels out of range are reported naming the file at fault.
    """

    required: Tuple[str, ...] = ()
    stored_labels = "0 to 9"  # the label values the files hold, for messages
    label_offset = 0  # a file's label minus the class index it stands for
    root: str

    def _check_integrity(self) -> bool:
        return missing_path(self.root, self.required) is None

    @classmethod
    def split_files(cls, train: bool) -> Tuple[str, ...]:
        """The paths under root that the split reads."""
        raise NotImplementedError

    @classmethod
    def image_files(cls, train: bool) -> Tuple[str, ...]:
        """The paths under root that hold the split's images and labels (split_files less any shared metadata)."""
        return cls.split_files(train)

    @classmethod
    def read_labels(cls, path: str) -> Optional[np.ndarray]:
        """Read one file of a split alone, as the dataset would; its labels as class indices (None for a file of
        images only). Raises one of MALFORMED when the file is not in the expected format."""
        raise NotImplementedError

    @classmethod
    def bad_file(cls, root: str, train: bool, num_classes: int) -> Optional[str]:
        """What is wrong with the first file of the split that is malformed or holds a label out of range."""
        for relative in cls.split_files(train):
            path = os.path.join(root, relative)
            try:
                labels = cls.read_labels(path)
            except MALFORMED as err:
                return f"{path} is malformed or incomplete ({_first_line(err)})"
            wrong = out_of_range(labels, num_classes) if labels is not None else None
            if wrong is not None:
                found = labels.reshape(-1)[wrong] + cls.label_offset
                return f"{path} holds the label {found} (its label number {wrong}), but {cls.stored_labels} are accepted"
        return None

    def label_problem(self, train: bool, num_classes: int) -> Optional[str]:
        """What is wrong with the labels of the split (train or test), if anything: there must be one per
        image, each a class index below `num_classes`. Cheap on the arrays; reads the files again only to
        name the one at fault."""
        labels = np.asarray(self.labels_array())
        files = ", ".join(os.path.join(self.root, f) for f in self.split_files(train))
        if len(labels) != len(self.data):
            return self.bad_file(self.root, train, num_classes) or \
                f"{files} hold {len(self.data)} images but {len(labels)} labels; one label per image is needed"
        if out_of_range(labels, num_classes) is None:
            return None
        problem = self.bad_file(self.root, train, num_classes) or f"{files} hold labels out of range"
        return f"{problem} ({num_classes} classes)"

    def labels_array(self) -> Sequence[int]:
        """The split's labels as class indices."""
        return self.labels


def out_of_range(labels: np.ndarray, num_classes: int) -> Optional[int]:
    """The position of the first label that is not a class index below `num_classes`, else None."""
    labels = np.asarray(labels).reshape(-1)
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    return int(bad[0]) if len(bad) else None


class LocalCIFAR10(_PresentFiles, datasets.CIFAR10):
    """torchvision's CIFAR10 (python pickled batches) accepting any present batch files."""

    required = CIFAR10_FILES
    meta = {**datasets.CIFAR10.meta, "md5": None}

    def tensors(self) -> TensorSplit:
        """The whole split as uint8 NCHW images and int64 labels (what the resident path holds)."""
        return TensorSplit(torch.from_numpy(self.data).permute(0, 3, 1, 2).contiguous(), torch.tensor(self.targets))

    def labels_array(self) -> Sequence[int]:
        return self.targets

    @classmethod
    def split_files(cls, train: bool) -> Tuple[str, ...]:
        batches = cls.train_list if train else cls.test_list
        return tuple(os.path.join(cls.base_folder, name) for name, _ in batches) + \
            (os.path.join(cls.base_folder, cls.meta["filename"]),)

    @classmethod
    def image_files(cls, train: bool) -> Tuple[str, ...]:
        return cls.split_files(train)[:-1]  # not batches.meta (the class names)

    @classmethod
    def read_labels(cls, path: str) -> Optional[np.ndarray]:
        with open(path, "rb") as f:
            entry = pickle.load(f, encoding="latin1")
        if os.path.basename(path) == cls.meta["filename"]:
            if cls.meta["key"] not in entry:
                raise KeyError(f"no {cls.meta['key']!r} (the class names)")
            return None
        labels = np.asarray(entry["labels"] if "labels" in entry else entry["fine_labels"])
        if len(labels) != len(entry["data"]):
            raise ValueError(f"{len(entry['data'])} images but {len(labels)} labels")
        return labels


class LocalSVHN(_PresentFiles, datasets.SVHN):
    """torchvision's SVHN (cropped digits, .mat files; digit 0 stored as label 10 becomes 0)."""

    required = SVHN_FILES
    stored_labels = "1 to 10 (10 for the digit 0)"

    def tensors(self) -> TensorSplit:
        """The whole split as uint8 NCHW images and int64 labels (what the resident path holds)."""
        return TensorSplit(torch.from_numpy(self.data).contiguous(), torch.from_numpy(self.labels).long())

    @classmethod
    def split_files(cls, train: bool) -> Tuple[str, ...]:
        return (cls.split_list["train" if train else "test"][1],)

    @classmethod
    def read_labels(cls, path: str) -> Optional[np.ndarray]:
        from scipy.io import loadmat

        digits = loadmat(path)["y"].astype(np.int64).reshape(-1)
        return np.where(digits == 10, 0, digits)


class LocalSTL10(_PresentFiles, datasets.STL10):
    """torchvision's STL10 (binary, 96x96, labelled splits only: the unlabelled file is not required)."""

    required = STL10_FILES
    stored_labels = "1 to 10"
    label_offset = 1

    def tensors(self) -> TensorSplit:
        """The whole split as uint8 NCHW images and int64 labels (what the resident path holds)."""
        return TensorSplit(torch.from_numpy(self.data).contiguous(), torch.from_numpy(self.labels).long())

    @classmethod
    def split_files(cls, train: bool) -> Tuple[str, ...]:
        images, labels = (cls.train_list if train else cls.test_list)[:2]
        return os.path.join(cls.base_folder, images[0]), os.path.join(cls.base_folder, labels[0])

    @classmethod
    def read_labels(cls, path: str) -> Optional[np.ndarray]:
        if path.endswith("_X.bin"):
            np.fromfile(path, dtype=np.uint8).reshape(-1, 3, 96, 96)
            return None
        return np.fromfile(path, dtype=np.uint8).astype(np.int64) - 1


@dataclass(frozen=True)
class VisionSpec:
    """What the loaders need to know about one real dataset."""

    title: str
    open_split: Callable[..., Dataset]  # (root, train, transform, download) -> torchvision dataset
    required: Tuple[str, ...]  # paths under root that must exist
    where: str  # how to get the data, completed with the root folder
    mean: Tuple[float, float, float]
    std: Tuple[float, float, float]
    crop_pad: int  # padding of the random crop (datasets of fixed size)
    flip: bool  # horizontal flips are label-preserving
    image_size: Optional[int] = None  # native side; None = any (resized)
    num_classes: Optional[int] = None  # None = the number of class folders
    files: Optional[Type[_PresentFiles]] = None  # the reader of a dataset of fixed files: names a bad one
    downloadable: bool = True
    fits_in_memory: bool = True


class SkippingImageFolder(datasets.ImageFolder):
    """ImageFolder that skips an image it cannot decode, with a one-line warning naming its path.

    One bad file among a million must not end a run mid-epoch with a worker traceback: the next
    readable image of the folder list takes its place (the same one every epoch, so runs stay
    reproducible). Many bad files in a row stop the run with a DataError naming the first.
    """

    def __getitem__(self, index: int):
        return read_skipping(index, len(self.samples), super().__getitem__, lambda i, _: self.samples[i][0], self.root)


def read_skipping(index: int, count: int, read: Callable[[int], Any], path: Callable[[int, Exception], str],
                  root: str) -> Any:
    """`read(index)`, or when that image cannot be decoded (UNREADABLE_IMAGE) the next readable one of the `count`
    (wrapping around), with a one-line warning naming `path(position, error)`, the file at fault; a DataError after
    more than MAX_SKIPPED_IN_A_ROW unreadable ones in a row. The project's policy for an unreadable image met
    while training (SkippingImageFolder; repl.integrations.mm_data for COCO and CityScapes)."""
    for offset in range(MAX_SKIPPED_IN_A_ROW + 1):
        position = (index + offset) % count
        try:
            return read(position)
        except UNREADABLE_IMAGE as err:
            print(f"warning: skipping unreadable image {path(position, err)} ({_first_line(err)})", file=sys.stderr)
    raise DataError(f"{MAX_SKIPPED_IN_A_ROW + 1} images in a row from {path(index, None)} on cannot be read; "
                    f"check the files under {root}")


def _open_imagenet(root: str, train: bool, transform: Optional[Callable], download: bool) -> Dataset:
    return SkippingImageFolder(os.path.join(root, "train" if train else "val"), transform=transform)


VISION = {  # keyed by repl.data.config.VISION_DATASETS, in its order
    CIFAR10: VisionSpec(
        title="CIFAR-10",
        open_split=lambda root, train, transform, download: LocalCIFAR10(root, train, transform, download=download),
        required=CIFAR10_FILES,
        where="place the CIFAR-10 python batches (cifar-10-python.tar.gz, extracted) in",
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
        crop_pad=4,
        flip=True,
        image_size=32,
        num_classes=10,
        files=LocalCIFAR10,
    ),
    SVHN: VisionSpec(
        title="SVHN",
        open_split=lambda root, train, transform, download: LocalSVHN(
            root, "train" if train else "test", transform, download=download
        ),
        required=SVHN_FILES,
        where="place train_32x32.mat and test_32x32.mat (SVHN format 2, cropped digits) in",
        mean=(0.4377, 0.4438, 0.4728),
        std=(0.1980, 0.2010, 0.1970),
        crop_pad=4,
        flip=False,
        image_size=32,
        num_classes=10,
        files=LocalSVHN,
    ),
    STL10: VisionSpec(
        title="STL-10",
        open_split=lambda root, train, transform, download: LocalSTL10(
            root, "train" if train else "test", transform=transform, download=download
        ),
        required=STL10_FILES,
        where="place the STL-10 binaries (stl10_binary.tar.gz, extracted) in",
        mean=(0.4467, 0.4398, 0.4066),
        std=(0.2603, 0.2566, 0.2713),
        crop_pad=12,
        flip=True,
        image_size=96,
        num_classes=10,
        files=LocalSTL10,
    ),
    IMAGENET: VisionSpec(
        title="ImageNet",
        open_split=_open_imagenet,
        required=IMAGENET_FOLDERS,
        where="torchvision cannot download it; place train/<wnid>/*.JPEG and val/<wnid>/*.JPEG "
        "(val sorted into class folders) in",
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        crop_pad=0,
        flip=True,
        downloadable=False,
        fits_in_memory=False,
    ),
}


def check_shape(cfg: ImageDataConfig, spec: VisionSpec) -> None:
    """Raise ConfigError if the static shape keys disagree with the dataset's images."""
    expected = {"image_size": spec.image_size, "in_chans": 3, "num_classes": spec.num_classes}
    for key, value in expected.items():
        given = getattr(cfg, key)
        if value is not None and given != value:
            mismatch = f"dataset.{key}={given} does not match {cfg.name} ({key} {value})"
            raise ConfigError(f"{mismatch}; set dataset.{key}={value}")


def require_files(root: str, spec: VisionSpec) -> None:
    """DataError naming the first file `spec` needs that is missing under `root`, and how to get it."""
    missing = missing_path(root, spec.required)
    if missing is not None:
        how = spec.where if not spec.downloadable else f"set dataset.download=true or {spec.where}"
        raise DataError(f"{spec.title} not found: {missing} does not exist; {how} {root}")


def open_vision(cfg: ImageDataConfig, spec: VisionSpec, *, streaming: bool) -> Tuple[Dataset, Dataset]:
    """The (train, eval) torchvision datasets; with `streaming` they carry the per-sample transforms."""
    root = os.path.abspath(os.path.expanduser(cfg.root))
    if cfg.download and spec.downloadable and missing_path(root, spec.required) is not None:
        try:
            for train in (True, False):
                spec.open_split(root, train, None, True)
        except (OSError, RuntimeError) as err:
            reason = _first_line(err)
            raise DataError(f"downloading {spec.title} to {root} failed ({reason}); {spec.where} {root}") from None
    require_files(root, spec)
    train_tf, eval_tf = (train_transform(cfg, spec), eval_transform(cfg, spec)) if streaming else (None, None)
    train, evaluation = _open_split(spec, root, True, train_tf), _open_split(spec, root, False, eval_tf)
    if spec.num_classes is None:
        check_folder_classes(cfg, train, evaluation)
    return train, evaluation


def _split_location(spec: VisionSpec, root: str, train: bool) -> str:
    """Where the split's images are, for messages: its files, or its folder (ImageNet's train/ or val/)."""
    if spec.files is not None:
        return ", ".join(os.path.join(root, f) for f in spec.files.image_files(train))
    return os.path.join(root, "train" if train else "val")


def _open_split(spec: VisionSpec, root: str, train: bool, transform: Optional[Callable]) -> Dataset:
    """One split of a dataset present under `root`, its labels checked and at least one image in it (an empty
    evaluation split would score 0, an empty training split train nothing); DataError naming the file at fault."""
    split = "training" if train else "evaluation"
    try:
        dataset = spec.open_split(root, train, transform, False)
    except MALFORMED as err:
        problem = spec.files.bad_file(root, train, spec.num_classes) if spec.files is not None else None
        if spec.files is None and isinstance(err, FileNotFoundError):  # ImageFolder: no class folder, or no image
            problem = f"the {split} split {_split_location(spec, root, train)} has no images in class folders ({_first_line(err)})"
        problem = problem or f"the files under {root} are malformed or incomplete ({_first_line(err)})"
        raise DataError(f"{spec.title}: {problem}; {spec.where} {root}") from None
    problem = dataset.label_problem(train, spec.num_classes) if spec.files is not None else None
    if problem is None and len(dataset) == 0:
        problem = f"the {split} split {_split_location(spec, root, train)} has no images"
    if problem is not None:
        raise DataError(f"{spec.title}: {problem}; {spec.where} {root}")
    return dataset


def check_folder_classes(cfg: ImageDataConfig, train: datasets.ImageFolder, evaluation: datasets.ImageFolder) -> None:
    """Both splits must have the same class folders, as many as `dataset.num_classes`."""
    if train.classes != evaluation.classes:
        raise DataError(
            f"the class folders of {train.root} ({len(train.classes)}) and {evaluation.root} "
            f"({len(evaluation.classes)}) differ; both need one folder per class with the same names"
        )
    if cfg.num_classes != len(train.classes):
        raise ConfigError(
            f"dataset.num_classes={cfg.num_classes} but {train.root} has {len(train.classes)} class folders; "
            f"set dataset.num_classes={len(train.classes)}"
        )


def _first_line(err: Exception) -> str:
    """A one-line description of an exception from a third-party reader."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def train_transform(cfg: ImageDataConfig, spec: VisionSpec) -> Callable:
    """Per-sample PIL -> normalised tensor transform of training images (the streaming path)."""
    if not cfg.augment:
        return eval_transform(cfg, spec)
    if spec.image_size is None:
        steps = [transforms.RandomResizedCrop(cfg.image_size)]
    else:
        steps = [transforms.RandomCrop(cfg.image_size, padding=spec.crop_pad)]
    if spec.flip:
        steps.append(transforms.RandomHorizontalFlip())
    if cfg.randaugment is not None:
        steps.append(randaugment(cfg.randaugment, cfg.image_size, spec.mean))
    steps += [transforms.ToTensor(), transforms.Normalize(spec.mean, spec.std)]
    if cfg.random_erasing:  # on the normalised tensor, noise of its scale: DeiT's (timm's) "pixel" mode
        steps.append(transforms.RandomErasing(p=cfg.random_erasing, value="random"))
    return transforms.Compose(steps)


def randaugment(config: str, image_size: int, mean: Sequence[float]) -> Callable:
    """timm's RandAugment from its config string, with the hyper-parameters timm's create_transform gives it
    (DeiT): translations up to 45% of the side, the dataset mean as fill, bicubic resampling.

    Draws come from Python's and NumPy's RNGs, which DataLoader seeds per worker from the run's seed.
    """
    from timm.data.auto_augment import posterize as timm_posterize
    from timm.data.auto_augment import rand_augment_transform
    from timm.data.transforms import str_to_pil_interp

    hparams = {"translate_const": int(image_size * 0.45), "img_mean": tuple(min(255, round(255 * m)) for m in mean),
               "interpolation": str_to_pil_interp("bicubic")}
    augment = rand_augment_transform(config, hparams)
    for op in augment.ops:
        if op.aug_fn is timm_posterize:
            op.aug_fn = posterize
    return augment


def posterize(image: Image.Image, bits_to_keep: int, **_: Any) -> Image.Image:
    """timm's posterize op, also at 0 bits kept: a black image, as Pillow < 11 made it when DeiT was trained.

    PosterizeIncreasing keeps 4 - int(level * 0.4) bits, so a magnitude-noise draw at the level cap (10;
    ~2% of draws at rand-m9-mstd0.5) asks for 0 bits, which Pillow >= 11 refuses with a ValueError that
    stops the run.
    """
    from timm.data.auto_augment import posterize as timm_posterize

    if bits_to_keep <= 0:
        return image.point(lambda _: 0)
    return timm_posterize(image, bits_to_keep)


def eval_transform(cfg: ImageDataConfig, spec: VisionSpec) -> Callable:
    """Per-sample transform of evaluation images: resize + centre crop (resized datasets), normalise."""
    steps = []
    if spec.image_size is None:
        steps = [transforms.Resize(round(cfg.image_size / 0.875)), transforms.CenterCrop(cfg.image_size)]
    return transforms.Compose([*steps, transforms.ToTensor(), transforms.Normalize(spec.mean, spec.std)])
