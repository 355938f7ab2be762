"""Schemas of the Hydra groups the engine owns: trainer, optim, logger, task."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

from repl.errors import ConfigError


TASK_NAMES = ("classification", "detection", "segmentation", "lm")
ACCUMULATING_TASKS = ("classification", "lm")  # tasks whose batch loss splits exactly into micro-batches (micro_losses)
WANDB_MODES = ("offline", "online", "disabled")


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


@dataclass
class TrainerConfig:
    """How long and how to train: devices, precision, compile, checkpoints, logging cadence."""

    epochs: int = 4
    max_steps: Optional[int] = None  # cap on optimizer steps over the whole run; null = none
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "32"  # 32 | bf16 | 16 (mixed precision through autocast)
    compile: bool = False  # torch.compile the model after the method is applied
    channels_last: bool = False  # NHWC memory format for conv nets
    checkpointing: bool = False  # activation checkpointing of every block of the block sequence
    grad_clip: Optional[float] = None  # clip the global gradient norm to this value
    accumulate: int = 1  # split each per-rank batch into this many micro-batches per optimizer step (same gradient)
    ema_decay: Optional[float] = None  # keep an EMA of the weights and evaluate it; null = off
    resume: bool = True  # continue from checkpoints/last.pt in the run dir when present
    overwrite: bool = False  # discard what the run dir holds (summary, metrics, checkpoints) and start over
    save_best: bool = False  # also keep checkpoints/best.pt: the state at the eval with the best primary metric
    eval_every: int = 1  # evaluate every N epochs (and always after the last)
    log_every: int = 50  # steps between metrics.jsonl records and progress-bar refreshes
    checkpoint_every: int = 0  # also checkpoint every N steps inside an epoch; 0 = epoch ends only
    checkpoint_interval_s: float = 600.0  # and whenever this many seconds passed since the last one
    timing_warmup: int = 5  # steps excluded from step-time statistics
    progress: bool = True  # tqdm progress bar (rank 0)
    deterministic: bool = False  # torch.use_deterministic_algorithms (slower on GPU)

    def validate(self) -> None:
        _check(self.epochs >= 1, f"trainer.epochs={self.epochs} must be >= 1")
        _check(self.max_steps is None or self.max_steps >= 1, f"trainer.max_steps={self.max_steps} must be >= 1 or null")
        _check(self.precision in ("32", "bf16", "16"), f"trainer.precision={self.precision!r}: choose 32, bf16 or 16")
        _check(self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda"),
               f"trainer.device={self.device!r}: choose auto, cpu, cuda or cuda:N")
        _check(self.grad_clip is None or self.grad_clip > 0, f"trainer.grad_clip={self.grad_clip} must be > 0 or null")
        _check(self.ema_decay is None or 0 < self.ema_decay < 1, f"trainer.ema_decay={self.ema_decay} must be in (0, 1) or null")
        _check(self.eval_every >= 1, f"trainer.eval_every={self.eval_every} must be >= 1")
        _check(self.log_every >= 1, f"trainer.log_every={self.log_every} must be >= 1")
        _check(self.checkpoint_every >= 0, f"trainer.checkpoint_every={self.checkpoint_every} must be >= 0")
        _check(self.accumulate >= 1, f"trainer.accumulate={self.accumulate} must be an integer >= 1 (1 = no accumulation)")

    def validate_with(self, task: str, per_batch_skips: bool) -> None:
        """Keys whose validity depends on other groups: accumulation is exact for classification and lm losses,
        and not when blocks are skipped per forward (stochastic depth draws per micro-batch, not per batch)."""
        _check(self.accumulate == 1 or task in ACCUMULATING_TASKS,
               f"trainer.accumulate={self.accumulate} splits {' and '.join(ACCUMULATING_TASKS)} batches only, "
               f"not task.name={task} (its loss is not a mean over samples); use trainer.accumulate=1")
        _check(self.accumulate == 1 or not per_batch_skips,
               f"trainer.accumulate={self.accumulate} with stochastic depth (repl=stochastic_depth or "
               "repl.stochastic_depth=true) would draw the skipped blocks per micro-batch, not per batch; "
               "use trainer.accumulate=1")


@dataclass
class OptimConfig:
    """Optimizer and learning-rate schedule (stepped every optimizer step)."""

    name: str = "sgd"  # sgd | adamw
    lr: float = 0.1
    weight_decay: float = 5e-4
    momentum: float = 0.9  # sgd
    nesterov: bool = True  # sgd
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])  # adamw
    eps: float = 1e-8  # adamw
    decay_1d: bool = False  # apply weight decay to 1-d tensors (biases, norms) too; fusion parameters never
    schedule: str = "cosine"  # cosine | step | poly | constant
    warmup_epochs: float = 0.0  # linear warm-up from 0, in (fractional) epochs
    min_lr_ratio: float = 0.0  # cosine floor as a fraction of lr
    milestones: List[float] = field(default_factory=lambda: [0.5, 0.75])  # step: fractions of training
    gamma: float = 0.1  # step: factor at each milestone
    power: float = 0.9  # poly: (1 - progress) ** power, as mmsegmentation's PolyLR

    def validate(self) -> None:
        _check(self.name in ("sgd", "adamw"), f"optim.name={self.name!r}: choose sgd or adamw")
        _check(self.lr > 0, f"optim.lr={self.lr} must be > 0")
        _check(self.weight_decay >= 0, f"optim.weight_decay={self.weight_decay} must be >= 0")
        _check(0 <= self.momentum < 1, f"optim.momentum={self.momentum} must be in [0, 1)")
        _check(self.schedule in ("cosine", "step", "poly", "constant"),
               f"optim.schedule={self.schedule!r}: choose cosine, step, poly or constant")
        _check(self.power > 0, f"optim.power={self.power} must be > 0")
        _check(self.warmup_epochs >= 0, f"optim.warmup_epochs={self.warmup_epochs} must be >= 0")
        _check(all(0 < m < 1 for m in self.milestones), f"optim.milestones={list(self.milestones)} must be fractions in (0, 1)")
        _check(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), f"optim.betas={list(self.betas)} must be two numbers in [0, 1)")


@dataclass
class LoggerConfig:
    """Where metrics go besides metrics.jsonl, which is always written.

    wandb settings left null come from WANDB_MODE / WANDB_PROJECT / WANDB_ENTITY, else the defaults
    (offline, project "repl"); a value given here wins over the environment.
    """

    backend: str = "jsonl"  # jsonl | wandb
    project: Optional[str] = None  # wandb project; null: $WANDB_PROJECT, else "repl"
    entity: Optional[str] = None  # wandb entity; null: $WANDB_ENTITY, else the account's default
    mode: Optional[str] = None  # wandb: offline | online | disabled; null: $WANDB_MODE, else offline
    group: Optional[str] = None  # wandb group; null: experiment_name (a sweep's runs share it)
    name: Optional[str] = None  # wandb run name; null: the run directory's last two parts (<overrides>/seed<N>)
    job_type: str = "train"  # wandb job type
    tags: List[str] = field(default_factory=list)

    def validate(self) -> None:
        _check(self.backend in ("jsonl", "wandb"), f"logger.backend={self.backend!r}: choose jsonl or wandb")
        _check(self.mode is None or self.mode in WANDB_MODES,
               f"logger.mode={self.mode!r}: choose {', '.join(WANDB_MODES)} or null ($WANDB_MODE, else offline)")


@dataclass
class TaskConfig:
    """What is learned and measured; usually implied by the dataset."""

    name: str = "classification"  # classification | detection | segmentation | lm
    label_smoothing: float = 0.0
    mixup: float = 0.0  # classification: Beta(alpha, alpha) mixup of training images (DeiT: 0.8); 0 = off
    cutmix: float = 0.0  # classification: Beta(alpha, alpha) CutMix (DeiT: 1.0); 0 = off
    mix_switch: float = 0.5  # with both on: probability that a batch uses CutMix

    def validate(self) -> None:
        _check(self.name in TASK_NAMES, f"task.name={self.name!r}: choose one of {', '.join(TASK_NAMES)}")
        _check(0 <= self.label_smoothing < 1, f"task.label_smoothing={self.label_smoothing} must be in [0, 1)")
        for key in ("mixup", "cutmix"):
            value = getattr(self, key)
            _check(value >= 0, f"task.{key}={value} must be >= 0 (a Beta alpha; 0 = off)")
            _check(value == 0 or self.name == "classification",
                   f"task.{key}={value} mixes images for classification only, not task.name={self.name}; set it to 0")
        _check(0 <= self.mix_switch <= 1, f"task.mix_switch={self.mix_switch} must be in [0, 1]")
