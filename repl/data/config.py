"""DatasetConfig: the schema of the Hydra `dataset` group, validated before any data is read."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

from repl.errors import ConfigError

DATASETS = ("synthetic", "cifar10", "svhn", "stl10", "imagenet", "coco", "cityscapes", "wikitext2")
TOKENIZERS = ("word", "bpe")
RESIDENT_CHOICES = ("auto", "true", "false")
MIN_RESIZE = 8  # smallest side dataset.resize accepts (it may up- or downsample)
IMAGE_BATCH_TASKS = ("classification",)  # resize and per-image augmentation; the other tasks transform their own way
# timm's RandAugment config: "rand" and dash-separated sections (magnitude m, ops n, probability p, magnitude
# noise mstd, bound mmax, increasing ops inc, transform set t...); timm skips a section it cannot read, so this is checked
RANDAUGMENT_CONFIG = re.compile(r"rand(-(mstd|mmax|inc|m|n|p)\d+(\.\d+)?|-t\w+)*")


@dataclass
class DatasetConfig:
    """Which images to train on and how to batch them. Shape fields are static: models are built from them."""

    name: str = "synthetic"  # synthetic | cifar10 | svhn | stl10 | imagenet | coco | cityscapes | wikitext2
    root: str = "data"  # folder holding the dataset files (not used by synthetic)
    download: bool = False  # let torchvision fetch missing files (needs internet)
    batch_size: int = 128  # GLOBAL training batch over all ranks
    eval_batch_size: Optional[int] = None  # GLOBAL evaluation batch; None = batch_size
    num_workers: int = 2  # DataLoader workers of the streaming path
    image_size: int = 32  # side of the square images stored and augmented (native size; ImageNet: the crop)
    resize: Optional[int] = None  # side the model sees: batches resized (bilinear) on the device after augmentation
    in_chans: int = 3
    num_classes: int = 10
    num_train: Optional[int] = None  # training subset size; synthetic: dataset size (None = 5000)
    num_eval: Optional[int] = None  # evaluation subset size; synthetic: dataset size (None = 1000)
    augment: bool = True  # random crop (+ flip where the dataset allows) on training batches
    randaugment: Optional[str] = None  # timm RandAugment config (DeiT: rand-m9-mstd0.5-inc1); null = off; streaming path
    random_erasing: float = 0.0  # probability of erasing a box of a training image with noise (DeiT: 0.25)
    repeated_aug: int = 1  # repeated augmentation: each sample of an epoch k times, augmented apart (DeiT: 3); 1 = off
    resident: str = "auto"  # auto | true | false: hold the dataset on the device and augment there
    noise: float = 0.3  # synthetic: per-pixel noise, relative to the class pattern's amplitude
    clutter: float = 0.5  # synthetic: strength of a per-sample random pattern over the class pattern
    # text (task=lm): batch_size counts sequences of seq_len tokens
    seq_len: int = 128  # context length of training and evaluation sequences
    tokenizer: str = "word"  # word (the standard WikiText-2 vocabulary) | bpe (byte-level BPE trained on train)
    vocab_size: int = 8192  # bpe: target vocabulary size; synthetic corpus: number of token types

    @property
    def resident_mode(self) -> str:
        """`resident` lower-cased: the command line turns `true` into a bool that OmegaConf stores as 'True'."""
        return str(self.resident).lower()

    @property
    def input_size(self) -> int:
        """The side of the images the model sees: `resize` if set, else the stored `image_size`."""
        return self.resize if self.resize is not None else self.image_size

    @property
    def eval_batch(self) -> int:
        """The global evaluation batch size."""
        return self.eval_batch_size if self.eval_batch_size is not None else self.batch_size

    def validate(self, world_size: int = 1, task: str = "classification") -> "DatasetConfig":
        """Raise ConfigError naming the key if any value is outside what is accepted (by `task`)."""
        if self.name not in DATASETS:
            raise ConfigError(f"dataset.name={self.name!r} is not supported; choose one of {', '.join(DATASETS)}")
        if self.resident_mode not in RESIDENT_CHOICES:
            raise ConfigError(
                f"dataset.resident={self.resident!r} is not supported; choose one of {', '.join(RESIDENT_CHOICES)}"
            )
        positive = {
            "batch_size": self.batch_size,
            "eval_batch_size": self.eval_batch,
            "image_size": self.image_size,
            "in_chans": self.in_chans,
            "num_train": self.num_train,
            "num_eval": self.num_eval,
        }
        for key, value in positive.items():
            if value is not None and value < 1:
                raise ConfigError(f"dataset.{key}={value} must be a positive integer")
        if self.num_classes < 2:
            raise ConfigError(f"dataset.num_classes={self.num_classes} must be at least 2")
        if self.num_workers < 0:
            raise ConfigError(f"dataset.num_workers={self.num_workers} must be 0 or more")
        if self.batch_size % world_size != 0:
            raise ConfigError(
                f"dataset.batch_size={self.batch_size} must be divisible by the number of processes ({world_size})"
            )
        if self.seq_len < 2:
            raise ConfigError(f"dataset.seq_len={self.seq_len} must be at least 2")
        if self.tokenizer not in TOKENIZERS:
            raise ConfigError(f"dataset.tokenizer={self.tokenizer!r} is not supported; choose one of {', '.join(TOKENIZERS)}")
        if self.vocab_size < 16:
            raise ConfigError(f"dataset.vocab_size={self.vocab_size} must be at least 16")
        if self.noise < 0 or self.clutter < 0:
            raise ConfigError(f"dataset.noise={self.noise} and dataset.clutter={self.clutter} must be 0 or more")
        self._check_resize(task)
        self._check_per_image_augment(task)
        self._check_repeated_aug(task)
        return self

    def _check_repeated_aug(self, task: str) -> None:
        if self.repeated_aug < 1:
            raise ConfigError(f"dataset.repeated_aug={self.repeated_aug} must be an integer >= 1 (1 = off; DeiT: 3)")
        if self.repeated_aug == 1:
            return
        self._classification_only("repeated_aug", task)
        if not self.augment:
            raise ConfigError(f"dataset.repeated_aug={self.repeated_aug} repeats samples to augment them apart: "
                              "it needs dataset.augment=true")

    @property
    def per_image_augment(self) -> bool:
        """True when training images need per-image transforms (RandAugment, random erasing): the streaming path."""
        return self.randaugment is not None or self.random_erasing > 0

    def _check_per_image_augment(self, task: str) -> None:
        if self.randaugment is not None and not valid_randaugment(self.randaugment):
            raise ConfigError(f"dataset.randaugment={self.randaugment!r} is not a timm RandAugment config; "
                              "use e.g. rand-m9-mstd0.5-inc1 (DeiT), or null for none")
        if not 0 <= self.random_erasing <= 1:
            raise ConfigError(f"dataset.random_erasing={self.random_erasing} must be a probability in [0, 1]")
        if not self.per_image_augment:
            return
        key = "randaugment" if self.randaugment is not None else "random_erasing"
        self._classification_only(key, task)
        if not self.augment:
            raise ConfigError(f"dataset.{key}={getattr(self, key)} is a training augmentation: it needs dataset.augment=true")

    def _check_resize(self, task: str) -> None:
        """`resize`: null, or a side of at least MIN_RESIZE px (up- or downsampling), for classification only."""
        if self.resize is None:
            return
        if self.resize < MIN_RESIZE:
            raise ConfigError(f"dataset.resize={self.resize} must be null or an image side of at least {MIN_RESIZE}")
        self._classification_only("resize", task)

    def _classification_only(self, key: str, task: str) -> None:
        """ConfigError if the set `dataset.<key>` is used with a task whose batches are not plain images."""
        if task not in IMAGE_BATCH_TASKS:
            raise ConfigError(f"dataset.{key}={getattr(self, key)} is for task=classification only; unset it for task={task}")


def valid_randaugment(config: str) -> bool:
    """Whether timm builds RandAugment from `config` with every section read (no section silently skipped)."""
    if not RANDAUGMENT_CONFIG.fullmatch(str(config)):
        return False
    from timm.data.auto_augment import rand_augment_transform

    try:
        rand_augment_transform(str(config), {})
    except (AssertionError, ValueError, KeyError):
        return False
    return True
