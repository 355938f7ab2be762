"""The schemas of the Hydra `dataset` group: a common base and one config per kind of data, each validated for itself.

    DataConfig        what every dataset has: name, root, batch sizes, workers, subset sizes
    ImageDataConfig   images (classification, detection, segmentation): size, classes, augmentation, synthetic set
    TextDataConfig    token streams (lm): seq_len, tokenizer, vocab_size

Each configs/dataset/*.yaml names its kind in its defaults list (`/schema/dataset/image@_here_` or
`/schema/dataset/text@_here_`, registered by `register_schemas`), so a key of the other kind is refused
when the config is composed, and `to_config` hands the run the kind's own dataclass.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, fields
from typing import Any, Dict, Optional, Tuple, Type, Union

from omegaconf import DictConfig, OmegaConf

from repl.bounds import check_numbers
from repl.errors import ConfigError
from repl.tasks.registry import DEFAULT_TASK, DataKind, task_spec, tasks_where

TOKENIZERS = ("word", "bpe", "hf")
RESIDENT_CHOICES = ("auto", "true", "false")
MIN_RESIZE = 8  # smallest side dataset.resize accepts (it may up- or downsample)
# timm's RandAugment config: "rand" and dash-separated sections (magnitude m, ops n, probability p, magnitude
# noise mstd, bound mmax, increasing ops inc, transform set t...); timm skips a section it cannot read, so this is checked
RANDAUGMENT_CONFIG = re.compile(r"rand(-(mstd|mmax|inc|m|n|p)\d+(\.\d+)?|-t\w+)*")
SCHEMA_GROUP = "schema/dataset"  # the Hydra group of the kind schemas a dataset yaml names in its defaults
SYNTHETIC = "synthetic"  # the embedded dataset of every task, generated from the seed: its one name
# task=classification's real datasets (repl/data/vision.py reads them, keyed by these names). Named here so that a
# synthetic run, and every check of dataset.name, needs no torchvision import (about 1.4 s, most of it torch._dynamo,
# which a training run imports anyway through torch.optim: the saving is a config error's, found sooner).
CIFAR10, SVHN, STL10, IMAGENET = "cifar10", "svhn", "stl10", "imagenet"
VISION_DATASETS = (CIFAR10, SVHN, STL10, IMAGENET)


@dataclass
class DataConfig:
    """What every dataset has. Sizes and batch sizes are global (over all ranks)."""

    name: str = SYNTHETIC  # the dataset; which names a task accepts is checked by its data builder
    task: Optional[str] = None  # the task this dataset option is made for (set by configs/dataset/*.yaml); null = any
    root: str = "data"  # folder holding the dataset files (not used by the embedded synthetic sets)
    download: bool = False  # let the dataset's reader fetch missing files (needs internet)
    batch_size: int = 128  # GLOBAL training batch over all ranks
    eval_batch_size: Optional[int] = None  # GLOBAL evaluation batch; None = batch_size
    num_workers: int = 2  # DataLoader workers of the streaming path
    num_train: Optional[int] = None  # training subset size (images, or tokens for text); synthetic: dataset size
    num_eval: Optional[int] = None  # evaluation subset size (images, or scored tokens for text); synthetic: dataset size

    kind_name = "any"  # what the errors call this kind of data

    @property
    def eval_batch(self) -> int:
        """The global evaluation batch size."""
        return self.eval_batch_size if self.eval_batch_size is not None else self.batch_size

    def validate(self, world_size: int = 1, task: str = DEFAULT_TASK) -> "DataConfig":
        """Raise ConfigError naming the key if any value is outside what is accepted (by `task`)."""
        check_numbers(self, "dataset.")
        if self.task is not None and self.task != task:
            raise ConfigError(f"dataset.task={self.task}: this dataset option is made for task={self.task}, not "
                              f"task={task}; set task={self.task} or choose a {task} dataset")
        wanted = config_class(task)
        if type(self) is DataConfig:
            raise ConfigError(f"dataset.name={self.name}: the dataset option names no kind of data; start its yaml with "
                              f"defaults: [{SCHEMA_GROUP}/{wanted.kind_name}@_here_, _self_]")
        if not isinstance(self, wanted):
            raise ConfigError(f"dataset.name={self.name}: this is {self.kind_name} data; task={task} takes "
                              f"{wanted.kind_name} data: choose one of its datasets (configs/dataset/*.yaml)")
        positive = {"batch_size": self.batch_size, "eval_batch_size": self.eval_batch, "num_train": self.num_train,
                    "num_eval": self.num_eval, **self._positive()}
        for key, value in positive.items():
            if value is not None and value < 1:
                raise ConfigError(f"dataset.{key}={value} must be a positive integer")
        if self.num_workers < 0:
            raise ConfigError(f"dataset.num_workers={self.num_workers} must be 0 or more")
        if self.batch_size % world_size != 0:
            raise ConfigError(
                f"dataset.batch_size={self.batch_size} must be divisible by the number of processes ({world_size})"
            )
        self._validate_kind(task)
        return self

    def _positive(self) -> Dict[str, Optional[int]]:
        """The kind's own keys that must be positive integers."""
        return {}

    def model_inputs(self, outputs: int) -> Dict[str, int]:
        """The keyword arguments of repl.models.build_model this data gives, with the model's output size."""
        raise NotImplementedError(f"{type(self).__name__} gives no model inputs")

    def _validate_kind(self, task: str) -> None:
        """The kind's own rules (overridden by each kind)."""


@dataclass
class ImageDataConfig(DataConfig):
    """Images: their stored and model-facing size, classes, augmentation; the embedded synthetic set's look."""

    image_size: int = 32  # side of the square images stored and augmented (native size; ImageNet: the crop)
    resize: Optional[int] = None  # side the model sees: batches resized (bilinear) on the device after augmentation
    in_chans: int = 3
    num_classes: int = 10
    augment: bool = True  # random crop (+ flip where the dataset allows) on training batches
    randaugment: Optional[str] = None  # timm RandAugment config (DeiT: rand-m9-mstd0.5-inc1); null = off; streaming path
    random_erasing: float = 0.0  # probability of erasing a box of a training image with noise (DeiT: 0.25)
    repeated_aug: int = 1  # repeated augmentation: each sample of an epoch k times, augmented apart (DeiT: 3); 1 = off
    resident: str = "auto"  # auto | true | false: hold the dataset on the device and augment there
    noise: float = 0.3  # synthetic: per-pixel noise, relative to the class pattern's amplitude
    clutter: float = 0.5  # synthetic: strength of a per-sample random pattern over the class pattern

    kind_name = "image"

    @property
    def resident_mode(self) -> str:
        """`resident` lower-cased: the command line turns `true` into a bool that OmegaConf stores as 'True'."""
        return str(self.resident).lower()

    @property
    def input_size(self) -> int:
        """The side of the images the model sees: `resize` if set, else the stored `image_size`."""
        return self.resize if self.resize is not None else self.image_size

    @property
    def per_image_augment(self) -> bool:
        """True when training images need per-image transforms (RandAugment, random erasing): the streaming path."""
        return self.randaugment is not None or self.random_erasing > 0

    def _positive(self) -> Dict[str, Optional[int]]:
        return {"image_size": self.image_size, "in_chans": self.in_chans}

    def model_inputs(self, outputs: int) -> Dict[str, int]:
        """Classes, channels and the side the model sees (dataset.resize if set)."""
        return {"num_classes": outputs, "in_chans": self.in_chans, "image_size": self.input_size}

    def _validate_kind(self, task: str) -> None:
        if self.resident_mode not in RESIDENT_CHOICES:
            raise ConfigError(
                f"dataset.resident={self.resident!r} is not supported; choose one of {', '.join(RESIDENT_CHOICES)}"
            )
        if self.num_classes < 2:
            raise ConfigError(f"dataset.num_classes={self.num_classes} must be at least 2")
        if self.noise < 0 or self.clutter < 0:
            raise ConfigError(f"dataset.noise={self.noise} and dataset.clutter={self.clutter} must be 0 or more")
        self._check_resize(task)
        self._check_per_image_augment(task)
        self._check_repeated_aug(task)

    def _check_repeated_aug(self, task: str) -> None:
        if self.repeated_aug < 1:
            raise ConfigError(f"dataset.repeated_aug={self.repeated_aug} must be an integer >= 1 (1 = off; DeiT: 3)")
        if self.repeated_aug == 1:
            return
        self._image_batches_only("repeated_aug", task)
        if not self.augment:
            raise ConfigError(f"dataset.repeated_aug={self.repeated_aug} repeats samples to augment them apart: "
                              "it needs dataset.augment=true")

    def _check_per_image_augment(self, task: str) -> None:
        if self.randaugment is not None and not valid_randaugment(self.randaugment):
            raise ConfigError(f"dataset.randaugment={self.randaugment!r} is not a timm RandAugment config; "
                              "use e.g. rand-m9-mstd0.5-inc1 (DeiT), or null for none")
        if not 0 <= self.random_erasing <= 1:
            raise ConfigError(f"dataset.random_erasing={self.random_erasing} must be a probability in [0, 1]")
        if not self.per_image_augment:
            return
        key = "randaugment" if self.randaugment is not None else "random_erasing"
        self._image_batches_only(key, task)
        if not self.augment:
            raise ConfigError(f"dataset.{key}={getattr(self, key)} is a training augmentation: it needs dataset.augment=true")

    def _check_resize(self, task: str) -> None:
        """`resize`: null, or a side of at least MIN_RESIZE px (up- or downsampling), for image-batch tasks only."""
        if self.resize is None:
            return
        if self.resize < MIN_RESIZE:
            raise ConfigError(f"dataset.resize={self.resize} must be null or an image side of at least {MIN_RESIZE}")
        self._image_batches_only("resize", task)

    def _image_batches_only(self, key: str, task: str) -> None:
        """ConfigError if the set `dataset.<key>` is used with a task whose batches are not plain images."""
        if not task_spec(task).image_batches:
            tasks = "|".join(tasks_where(image_batches=True))
            raise ConfigError(f"dataset.{key}={getattr(self, key)} is for task={tasks} only; unset it for task={task}")


@dataclass
class TextDataConfig(DataConfig):
    """Token streams cut into windows; batch_size counts sequences of seq_len tokens."""

    seq_len: int = 128  # context length of training and evaluation sequences
    tokenizer: str = "word"  # word (the standard WikiText-2 vocabulary) | bpe (byte-level BPE trained on train) | hf
    vocab_size: int = 8192  # bpe (and hf's fallback): target vocabulary size; synthetic corpus: number of token types
    hf_tokenizer: Optional[str] = None  # tokenizer=hf: a cached Hugging Face tokenizer (hub id or local dir)

    kind_name = "text"

    def model_inputs(self, outputs: int) -> Dict[str, int]:
        """The vocabulary size and the sequence length."""
        return {"vocab_size": outputs, "seq_len": self.seq_len}

    def _validate_kind(self, task: str) -> None:
        if self.seq_len < 2:
            raise ConfigError(f"dataset.seq_len={self.seq_len} must be at least 2")
        if self.tokenizer not in TOKENIZERS:
            raise ConfigError(f"dataset.tokenizer={self.tokenizer!r} is not supported; choose one of {', '.join(TOKENIZERS)}")
        if self.vocab_size < 16:
            raise ConfigError(f"dataset.vocab_size={self.vocab_size} must be at least 16")


# The config of each kind of data a task may take (TaskSpec.data); the one place kinds meet config classes.
CONFIGS: Dict[DataKind, Type[DataConfig]] = {
    DataKind.IMAGE: ImageDataConfig,
    DataKind.DETECTION: ImageDataConfig,
    DataKind.SEGMENTATION: ImageDataConfig,
    DataKind.TEXT: TextDataConfig,
}
SCHEMAS: Dict[str, Type[DataConfig]] = {"image": ImageDataConfig, "text": TextDataConfig}  # SCHEMA_GROUP options


def config_class(task: str) -> Type[DataConfig]:
    """The data config class task `task` reads."""
    return CONFIGS[task_spec(task).data]


def kind_of_key(key: str) -> Optional[Tuple[str, Tuple[str, ...]]]:
    """(kind name, tasks taking it) of the data kind that declares `key` (a dataset key without prefix), else None."""
    for cls in SCHEMAS.values():
        if key in {f.name for f in fields(cls)} - {f.name for f in fields(DataConfig)}:
            tasks = tuple(name for name in tasks_where() if config_class(name) is cls)
            return cls.kind_name, tasks
    return None


def as_data_config(cfg: Union[DataConfig, DictConfig, dict], task: str = DEFAULT_TASK) -> DataConfig:
    """The data config of `task` from a data config, a Hydra DictConfig or a plain dict; a key of another kind is refused."""
    if isinstance(cfg, DataConfig):
        return cfg
    values: Any = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    cls = config_class(task)
    known = {f.name for f in fields(cls)}
    for key in values:
        if key in known:
            continue
        other = kind_of_key(key)
        if other is not None:
            raise ConfigError(f"dataset.{key} is a key of {other[0]} data (task={'|'.join(other[1])}); task={task} "
                              f"takes {cls.kind_name} data: unset it or choose a {other[0]} dataset and task")
        raise ConfigError(f"unknown dataset key dataset.{key}; {cls.kind_name} data takes {', '.join(sorted(known))}")
    return cls(**values)


def register_schemas() -> None:
    """Register each kind's schema in Hydra's ConfigStore, for the defaults list of configs/dataset/*.yaml."""
    from hydra.core.config_store import ConfigStore

    for name, cls in SCHEMAS.items():
        ConfigStore.instance().store(group=SCHEMA_GROUP, name=name, node=cls)


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
