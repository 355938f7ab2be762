"""The RepL schedule: plain backprop, then the method, then the network restored (`repl.start`, `repl.restore`).

A run of E = trainer.epochs epochs goes through up to three phases, switching at epoch boundaries:

    epochs [0, start)              BACKPROP  the model as built, every block trained (none replaced yet)
    epochs [start, E - restore)    METHOD    the planned blocks replaced by surrogates (the method itself)
    epochs [E - restore, E)        RESTORED  every surrogate baked into an ordinary trainable block, all fine-tuned

The unit is whole epochs: an epoch's end always writes a checkpoint, so a transition never falls
inside a resumed epoch. The plan is made when the run is built (from the block sequence, as without
a schedule); the surgery happens at the transition, on the weights trained so far.

`Schedule` answers which phase an epoch is in; `transition` moves a live model one phase forward in
place (`replace`: the planned blocks become surrogates reading their neighbours' trained weights;
`restore`: `repl.method.bake.materialize` on every surrogate, which keeps the function exactly). What
the training loop rebuilds around the model (optimizer, LR schedule, EMA, wrappers) is the Trainer's.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, List, Tuple

from torch import nn

from repl.errors import ConfigError
from repl.families import set_module
from repl.method.apply import apply_plan, plan_replacement
from repl.method.bake import materialize
from repl.method.config import ReplConfig, Select
from repl.method.plan import Plan
from repl.method.surrogates import Surrogate

if TYPE_CHECKING:
    from repl.engine.config import TrainerConfig


class Phase(enum.Enum):
    """Where a run stands in its schedule; members are in the order a run passes through them."""

    BACKPROP = "backprop"  # before repl.start: plain backprop on the model as built
    METHOD = "method"  # the configured method applied (every run without a schedule is only this)
    RESTORED = "restored"  # the last repl.restore epochs: surrogates baked into trainable blocks

    @property
    def rank(self) -> int:
        """Position in the order of the run (BACKPROP 0, METHOD 1, RESTORED 2)."""
        return list(Phase).index(self)

    def next(self) -> "Phase":
        """The phase after this one (ValueError after RESTORED)."""
        return list(Phase)[self.rank + 1]


@dataclass(frozen=True)
class Schedule:
    """The phases of a run of `epochs` epochs under repl.start / repl.restore (validated by `check_schedule`)."""

    start: int
    restore: int
    epochs: int

    @classmethod
    def of(cls, repl: ReplConfig, epochs: int) -> "Schedule":
        """The schedule of a run's repl.* config and trainer.epochs."""
        return cls(start=int(repl.start), restore=int(repl.restore), epochs=int(epochs))

    @property
    def restore_at(self) -> int:
        """The first epoch of the RESTORED phase (= epochs when there is none)."""
        return self.epochs - self.restore

    @property
    def first(self) -> Phase:
        """The phase epoch 0 is in."""
        return self.phase_at(0)

    @property
    def active(self) -> bool:
        """Whether the run changes phase at all."""
        return bool(self.start or self.restore)

    def phase_at(self, epoch: int) -> Phase:
        """The phase of epoch `epoch` (0-based: the epoch about to be trained)."""
        if epoch < self.start:
            return Phase.BACKPROP
        if epoch >= self.restore_at:
            return Phase.RESTORED
        return Phase.METHOD

    def spans(self) -> List[Tuple[Phase, int, int]]:
        """(phase, first epoch, end epoch) of each phase the run has, in order (0-based, end excluded)."""
        bounds = [(Phase.BACKPROP, 0, self.start), (Phase.METHOD, self.start, self.restore_at),
                  (Phase.RESTORED, self.restore_at, self.epochs)]
        return [(phase, lo, hi) for phase, lo, hi in bounds if hi > lo]

    def describe(self) -> str:
        """One line for the start of a run: each phase with its epochs (1-based, as the progress bar counts)."""
        words = {Phase.BACKPROP: "plain backprop", Phase.METHOD: "blocks replaced",
                 Phase.RESTORED: "surrogates baked back, full network fine-tuned"}
        def epochs(lo: int, hi: int) -> str:
            return f"epoch {hi}" if hi == lo + 1 else f"epochs {lo + 1}-{hi}"
        return "schedule: " + ", then ".join(f"{words[phase]} for {epochs(lo, hi)}" for phase, lo, hi in self.spans())


def plans_after_warmup(repl: ReplConfig) -> bool:
    """Whether the plan is made at the start of the method phase rather than when the run is built: repl.select=
    similarity with repl.start > 0 scores the blocks on the weights the warm-up trained (the plan made at build
    time only validates the config, and a checkpoint past the warm-up carries the plan that was chosen)."""
    return repl.select == Select.SIMILARITY and int(repl.start) > 0


def check_schedule(repl: ReplConfig, trainer: "TrainerConfig") -> None:
    """ConfigError, naming the keys, for a repl.start / repl.restore the run cannot follow (before any compute).

    repl.* alone is checked by ReplConfig.validate (RepL only, ratio > 0); here: the phases fit in trainer.epochs
    with at least one epoch of the method, and the trainer features that cannot follow the model's surgery mid-run.
    """
    schedule = Schedule.of(repl, trainer.epochs)
    if not schedule.active:
        return
    if schedule.start + schedule.restore >= schedule.epochs:
        raise ConfigError(f"repl.start={schedule.start} + repl.restore={schedule.restore} must be less than "
                          f"trainer.epochs={schedule.epochs} (at least one epoch with the blocks replaced)")
    keys = " and ".join(f"repl.{k}={getattr(schedule, k)}" for k in ("start", "restore") if getattr(schedule, k))
    if trainer.sharded:
        raise ConfigError(f"{keys} changes the model's parameters mid-run, which trainer.strategy=fsdp cannot re-shard; "
                          "use trainer.strategy=ddp")
    if trainer.checkpointing:
        raise ConfigError(f"{keys} swaps blocks mid-run, which trainer.checkpointing=true has wrapped; "
                          "use trainer.checkpointing=false")


def transition(model: nn.Module, to: Phase, plan: Plan, cfg: ReplConfig) -> None:
    """Move `model` in place from the phase before `to` into `to`: replace the planned blocks (METHOD) or bake every
    surrogate back into a trainable block (RESTORED). The plan's replaced/fusion counts are set by the replacement."""
    if to is Phase.METHOD:
        replace_planned(model, plan, cfg)
    elif to is Phase.RESTORED:
        restore_surrogates(model)
    else:
        raise ValueError(f"no transition into {to.value}: it is where a run starts")


def replace_planned(model: nn.Module, plan: Plan, cfg: ReplConfig) -> None:
    """The planned blocks of the live `model` become surrogates synthesized from their neighbours' current weights."""
    if any(isinstance(m, Surrogate) for m in model.modules()):
        raise ValueError("the model already holds surrogates: it is past the plain-backprop phase")
    apply_plan(model, plan, cfg)


def restore_surrogates(model: nn.Module) -> int:
    """Bake every surrogate of `model` in place into its body with its current synthesized weights as new trainable
    parameters (same eval-mode function, exactly); returns how many there were. The body's own tensors (a
    projection shortcut, norms it keeps) and BatchNorm statistics are the same objects as before."""
    surrogates = [(path, m) for path, m in model.named_modules() if isinstance(m, Surrogate)]
    for path, surrogate in surrogates:
        set_module(model, path, materialize(surrogate))
    return len(surrogates)


def model_in_phase(model: nn.Module, cfg: ReplConfig, phase: Phase) -> Plan:
    """Plan the method on `model` as built and bring it to `phase` in place without data: the module tree a
    checkpoint written in that phase loads into (export, evaluation). Returns the plan."""
    plan = plan_replacement(model, cfg)
    for step in list(Phase)[1:phase.rank + 1]:
        transition(model, step, plan, cfg)
    return plan
