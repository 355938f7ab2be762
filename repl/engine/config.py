"""Schemas of the Hydra groups the engine owns: trainer, optim, logger, task."""
from __future__ import annotations

import netrc
import os
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import List, Optional
from urllib.parse import urlparse

from repl.bounds import bounds, check_numbers
from repl.engine.loggers import BACKENDS, JSONL, WANDB
from repl.engine.optim import COSINE, OPTIMIZERS, SCHEDULES, SGD
from repl.engine.precision import PRECISIONS, Precision
from repl.errors import ConfigError
from repl.tasks.registry import DEFAULT_TASK, task_spec, tasks_where

WANDB_MODES = ("offline", "online", "disabled")


class Strategy(str, Enum):
    """trainer.strategy: how torchrun's processes share the model."""

    DDP = "ddp"  # each process holds the whole model; gradients are all-reduced
    FSDP = "fsdp"  # sharded over the processes (repl/engine/fsdp.py)


STRATEGIES = tuple(s.value for s in Strategy)  # ("ddp", "fsdp")


def _one_of(choices) -> str:
    """The choices as a message lists them: "a, b or c"."""
    *rest, last = choices
    return f"{', '.join(rest)} or {last}" if rest else last


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


@dataclass
class TrainerConfig:
    """How long and how to train: devices, precision, compile, checkpoints, logging cadence."""

    epochs: int = field(default=4, metadata=bounds(ge=1))
    max_steps: Optional[int] = field(default=None, metadata=bounds(ge=1))  # cap on optimizer steps over the whole run; null = none
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = Precision.FP32.value  # 32 | bf16 | 16 (mixed precision through autocast)
    compile: bool = False  # torch.compile the model after the method is applied
    channels_last: bool = False  # NHWC memory format for conv nets
    checkpointing: bool = False  # activation checkpointing of every block of the block sequence
    grad_clip: Optional[float] = field(default=None, metadata=bounds(gt=0))  # clip the global gradient norm to this value
    accumulate: int = field(default=1, metadata=bounds(ge=1))  # split each per-rank batch into this many micro-batches per optimizer step (same gradient)
    ema_decay: Optional[float] = field(default=None, metadata=bounds(gt=0, lt=1))  # keep an EMA of the weights and evaluate it; null = off
    bn_recalibrate: int = field(default=5, metadata=bounds(ge=0))  # before each evaluation, re-estimate BatchNorm running statistics over this many training batches (N forwards, no gradient; docs/method.md#batchnorm-statistics); 0 = off
    resume: bool = True  # continue from checkpoints/last.pt in the run dir when present
    overwrite: bool = False  # discard what the run dir holds (summary, metrics, checkpoints) and start over
    save_best: bool = False  # also keep checkpoints/best.pt: the state at the eval with the best primary metric
    eval_every: int = field(default=1, metadata=bounds(ge=1))  # evaluate every N epochs (and always after the last)
    log_every: int = field(default=50, metadata=bounds(ge=1))  # steps between metrics.jsonl records and progress-bar refreshes
    checkpoint_every: int = field(default=0, metadata=bounds(ge=0))  # also checkpoint every N steps inside an epoch; 0 = epoch ends only
    checkpoint_interval_s: float = field(default=600.0, metadata=bounds(gt=0))  # and whenever this many seconds passed since the last one
    timing_warmup: int = field(default=5, metadata=bounds(ge=0))  # steps excluded from step-time statistics
    progress: bool = True  # tqdm progress bar (rank 0)
    deterministic: bool = False  # torch.use_deterministic_algorithms (slower on GPU)
    strategy: str = Strategy.DDP.value  # ddp | fsdp: how torchrun's processes share the model (fsdp: sharded, repl/engine/fsdp.py)

    def validate(self) -> None:
        """ConfigError, naming the key and the choices, for a trainer.* value the run cannot use (alone; see
        validate_with for the keys that depend on other groups)."""
        check_numbers(self, "trainer.")
        _check(self.precision in PRECISIONS, f"trainer.precision={self.precision!r}: choose {_one_of(PRECISIONS)}")
        _check(self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda"),
               f"trainer.device={self.device!r}: choose auto, cpu, cuda or cuda:N")
        _check(self.strategy in STRATEGIES, f"trainer.strategy={self.strategy!r}: choose {_one_of(STRATEGIES)}")
        if self.sharded:
            self._check_fsdp()

    @property
    def sharded(self) -> bool:
        """trainer.strategy=fsdp: the model is sharded over the processes (repl/engine/fsdp.py), not replicated."""
        return self.strategy == Strategy.FSDP

    def _check_fsdp(self) -> None:
        """The trainer keys trainer.strategy=fsdp does not compose with, each refused in one line."""
        refused = [
            (self.compile, "trainer.compile=true", "not built for sharded surrogate units", "trainer.compile=false"),
            (self.checkpointing, "trainer.checkpointing=true", "not built for sharded surrogate units",
             "trainer.checkpointing=false"),
            (self.ema_decay is not None, f"trainer.ema_decay={self.ema_decay}", "the EMA would be a second, unsharded copy",
             "trainer.ema_decay=null"),
            (Precision(self.precision).needs_grad_scaler, "trainer.precision=16", "fp16 loss scaling would need a sharded inf check",
             "trainer.precision=bf16"),
        ]
        for bad, setting, why, instead in refused:
            _check(not bad, f"trainer.strategy=fsdp does not support {setting} ({why}); use {instead} or trainer.strategy=ddp")

    def validate_with(self, task: str, per_batch_skips: Optional[str], batch_size: Optional[int] = None) -> None:
        """Keys whose validity depends on other groups: channels-last lays out image batches; accumulation is exact
        for classification and lm losses, and not when blocks are skipped per forward (the draw would be per
        micro-batch, not per batch); it splits a batch into at most as many micro-batches as it has samples.
        `per_batch_skips` names the setting that skips blocks (e.g. "repl.method=layerdrop"), None if none does;
        `batch_size` is dataset.batch_size."""
        _check(not self.channels_last or task_spec(task).image_batches,
               f"trainer.channels_last=true lays out batches of images ({' and '.join(tasks_where(image_batches=True))}), "
               f"not task.name={task}'s; use trainer.channels_last=false")
        accumulating = tasks_where(accumulates=True)  # their batch loss splits exactly into micro-batches
        _check(self.accumulate == 1 or task_spec(task).accumulates,
               f"trainer.accumulate={self.accumulate} splits {' and '.join(accumulating)} batches only, "
               f"not task.name={task} (its loss is not a mean over samples); use trainer.accumulate=1")
        _check(batch_size is None or self.accumulate <= batch_size,
               f"trainer.accumulate={self.accumulate} would split each batch of dataset.batch_size={batch_size} into "
               f"{self.accumulate} micro-batches, some of them empty; use at most {batch_size}")
        _check(not self.sharded or not per_batch_skips,
               f"trainer.strategy=fsdp with {per_batch_skips}, which skips blocks per training batch, would leave ranks "
               "waiting on each other for a skipped block's weights; use trainer.strategy=ddp")
        _check(self.accumulate == 1 or not per_batch_skips,
               f"trainer.accumulate={self.accumulate} with {per_batch_skips}, which skips blocks per training batch, "
               "would draw the skipped blocks per micro-batch, not per batch; use trainer.accumulate=1")


@dataclass
class OptimConfig:
    """Optimizer and learning-rate schedule (stepped every optimizer step)."""

    name: str = SGD  # sgd | adamw (repl/engine/optim.py: OPTIMIZERS)
    lr: float = field(default=0.1, metadata=bounds(gt=0))
    weight_decay: float = field(default=5e-4, metadata=bounds(ge=0))
    momentum: float = field(default=0.9, metadata=bounds(ge=0, lt=1))  # sgd
    nesterov: bool = True  # sgd
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999], metadata=bounds(ge=0, lt=1))  # adamw
    eps: float = field(default=1e-8, metadata=bounds(gt=0))  # adamw
    decay_1d: bool = False  # apply weight decay to 1-d tensors (biases, norms) too; fusion parameters never
    fusion_lr_scale: float = field(default=1.0, metadata=bounds(gt=0))  # lr of the fusion parameters (RepL coefficients, learned gains) = lr * this; scheduled like every group
    schedule: str = COSINE  # cosine | step | poly | constant (repl/engine/optim.py: SCHEDULES)
    warmup_epochs: float = field(default=0.0, metadata=bounds(ge=0))  # linear warm-up from 0, in (fractional) epochs
    min_lr_ratio: float = field(default=0.0, metadata=bounds(ge=0, le=1))  # cosine/poly floor as a fraction of lr
    milestones: List[float] = field(default_factory=lambda: [0.5, 0.75], metadata=bounds(gt=0, lt=1))  # step: fractions of training
    gamma: float = field(default=0.1, metadata=bounds(gt=0))  # step: factor at each milestone
    power: float = field(default=0.9, metadata=bounds(gt=0))  # poly: (1 - progress) ** power, as mmsegmentation's PolyLR

    def validate(self) -> None:
        """ConfigError, naming the key and the choices, for an optim.* value no optimizer or schedule here takes."""
        check_numbers(self, "optim.")
        _check(self.name in OPTIMIZERS, f"optim.name={self.name!r}: choose {_one_of(OPTIMIZERS)}")
        _check(self.schedule in SCHEDULES, f"optim.schedule={self.schedule!r}: choose {_one_of(SCHEDULES)}")
        _check(len(self.betas) == 2, f"optim.betas={list(self.betas)} must be two numbers in [0, 1)")


@dataclass
class LoggerConfig:
    """Where metrics go besides metrics.jsonl, which is always written.

    wandb settings left null come from WANDB_MODE / WANDB_PROJECT / WANDB_ENTITY, else the defaults
    (offline, project "repl"); a value given here wins over the environment.
    """

    backend: str = JSONL  # jsonl | wandb (repl/engine/loggers.py: BACKENDS)
    project: Optional[str] = None  # wandb project; null: $WANDB_PROJECT, else "repl"
    entity: Optional[str] = None  # wandb entity; null: $WANDB_ENTITY, else the account's default
    mode: Optional[str] = None  # wandb: offline | online | disabled; null: $WANDB_MODE, else offline
    group: Optional[str] = None  # wandb group; null: experiment_name (a sweep's runs share it)
    name: Optional[str] = None  # wandb run name; null: the run directory's last two parts (<overrides>/seed<N>)
    job_type: str = "train"  # wandb job type
    tags: List[str] = field(default_factory=list)

    def validate(self) -> None:
        """ConfigError for an unknown logger.backend or wandb mode, and for logger.mode=online without a W&B API key."""
        _check(self.backend in BACKENDS, f"logger.backend={self.backend!r}: choose {_one_of(BACKENDS)}")
        _check(self.mode is None or self.mode in WANDB_MODES,
               f"logger.mode={self.mode!r}: choose {', '.join(WANDB_MODES)} or null ($WANDB_MODE, else offline)")
        if self.backend == WANDB:
            mode = self.wandb_mode()
            _check(mode in WANDB_MODES, f"WANDB_MODE={mode!r} (logger.mode is null): choose {', '.join(WANDB_MODES)}")
            _check(mode != "online" or wandb_key_configured(),
                   "logger.mode=online needs a W&B API key: set WANDB_API_KEY or run `wandb login`, or use logger.mode=offline")

    def wandb_mode(self) -> str:
        """The mode wandb runs in: logger.mode, else $WANDB_MODE, else offline."""
        return self.mode or os.environ.get("WANDB_MODE") or "offline"


def wandb_key_configured() -> bool:
    """True if wandb can log in without asking: WANDB_API_KEY, or a netrc entry for its host (what `wandb login` writes)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    path = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return netrc.netrc(path).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


@dataclass
class TaskConfig:
    """What is learned and measured; usually implied by the dataset."""

    name: str = DEFAULT_TASK  # classification | detection | segmentation | lm (repl/tasks/registry.py)
    label_smoothing: float = field(default=0.0, metadata=bounds(ge=0, lt=1))
    mixup: float = field(default=0.0, metadata=bounds(ge=0))  # classification: Beta(alpha, alpha) mixup (DeiT: 0.8); 0 = off
    cutmix: float = field(default=0.0, metadata=bounds(ge=0))  # classification: Beta(alpha, alpha) CutMix (DeiT: 1.0); 0 = off
    mix_switch: float = field(default=0.5, metadata=bounds(ge=0, le=1))  # with both on: probability that a batch uses CutMix

    def validate(self) -> None:
        """ConfigError for an unregistered task.name, a number out of bounds, or mixing (mixup, cutmix) asked of a
        task whose batches are not images."""
        check_numbers(self, "task.")
        spec = task_spec(self.name)  # ConfigError naming the choices if task.name is not registered
        image_tasks = " and ".join(tasks_where(image_batches=True))
        for key in ("mixup", "cutmix"):
            value = getattr(self, key)
            _check(value == 0 or spec.image_batches,
                   f"task.{key}={value} mixes images for {image_tasks} only, not task.name={self.name}; set it to 0")
