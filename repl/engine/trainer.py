"""The training loop: steps, evaluation, resumable checkpoints, measurement and the run summary.

Order inside a run never changes (repl/build.py): the model arrives with the method already
applied; here it goes to the device, is compiled, wrapped in DDP (or sharded in place, trainer.strategy=fsdp:
repl/engine/fsdp.py), gets an optimizer over its trainable parameters, and only then is a checkpoint loaded.
Under a schedule (repl.start / repl.restore: repl/method/schedule.py) the model arrives as built and changes
phase at epoch boundaries (`_enter_phase`): the model is changed in place, then compiled, wrapped and given an
optimizer again (state carried by parameter, repl/engine/phases.py); resume first brings it to the checkpoint's phase.

Public surface: `fit()`, `run_steps(n)`, `request_stop(signum)`; the loop reads top to bottom
(fit -> _loop -> _train_epoch) with its decisions as named methods (should_log, should_stop,
should_checkpoint, should_evaluate). docs/extending.md#building-a-run-studies-benchmarks-tests.
"""
from __future__ import annotations

import math
import signal
import sys
import time
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, Optional, Union

import torch
from torch import nn
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import apply_activation_checkpointing
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from repl.config import TrainConfig, as_dict
from repl.data.module import Batch
from repl.engine import measure, rundir
from repl.engine.checkpoint import EMA, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from repl.engine.distributed import DistInfo, all_reduce_sum, broadcast_buffers
from repl.engine.fsdp import ShardedModel, shard_model
from repl.engine.console import echo
from repl.engine.loggers import MetricsLog
from repl.engine.window import WindowStats
from repl.engine.optim import build_optimizer, build_schedule
from repl.engine.precision import Precision, autocast, grad_scaler
from repl.engine.phases import carry_state, continue_schedule
from repl.engine.recalibrate import batchnorm_modules, calibration_batches, recalibrate_batchnorm
from repl.engine.scoring import scoring_inputs
from repl.engine.resume_check import check_resume_config, check_resume_plan, differences
from repl.engine.status import RunStatus
from repl.engine.stop import StopRequest
from repl.engine.summary import RunSummary
from repl.errors import CheckpointError, ConfigError
from repl.families import get_module
from repl.method.plan import Plan
from repl.method.apply import plan_replacement
from repl.method.schedule import Phase, Schedule, check_schedule, plans_after_warmup, transition
from repl.method.surrogates import Surrogate

# What a step trains on: a DataModule's tuple of tensors, or the mm data path's dict (repl/integrations/mm_data.py).
StepBatch = Union[Batch, Dict[str, Any]]


def precision_warning(precision: str, device_type: str) -> Optional[str]:
    """A line to warn with when trainer.precision runs slowly on this device type, else None."""
    if precision == Precision.FP16 and device_type == "cpu":
        return ("trainer.precision=16 on a CPU: most CPUs have no float16 arithmetic and emulate it (the default "
                "config's 2-step run took 68 s against 11 s at 32 on a 2-core EPYC; a segmentation step did not finish in "
                "15 minutes); use trainer.precision=bf16 or 32")
    return None


class Trainer:
    """Trains one model on one task; rank 0 writes the run directory."""

    def __init__(self, cfg: TrainConfig, model: nn.Module, plan: Plan, data, task, dist: DistInfo,
                 run_dir: Path, block_paths: Optional[list] = None) -> None:
        self.cfg, self.plan, self.data, self.task, self.dist = cfg, plan, data, task, dist
        self.tcfg = cfg.trainer
        self.run_dir = Path(run_dir)
        self.device = dist.device
        check_schedule(cfg.repl, self.tcfg)  # also for a config built without repl.config.to_config
        self.phases = Schedule.of(cfg.repl, self.tcfg.epochs)  # repl.start / repl.restore: the model's phase per epoch
        self.phase = self.phases.first
        self.phases_entered: list = []  # [{"phase", "epoch", "step", "params", "probe"}]: each phase begun, where, its counts
        if self.phases.first is Phase.BACKPROP and any(isinstance(m, Surrogate) for m in model.modules()):
            raise ConfigError(f"repl.start={self.phases.start} replaces the planned blocks after plain backprop, and the "
                              "model arrived with them replaced already (a custom apply hook); build it unreplaced")
        self.memory_format = torch.channels_last if self.tcfg.channels_last else torch.preserve_format
        self.model = model.to(self.device, memory_format=self.memory_format)
        if self.tcfg.checkpointing:
            enable_activation_checkpointing(self.model, block_paths or [])
        self.sharded: Optional[ShardedModel] = None  # trainer.strategy=fsdp: the model, sharded in place
        if self.tcfg.sharded and dist.world_size < 2:
            raise ConfigError("trainer.strategy=fsdp shards the model over the processes torchrun starts, and this run "
                              "has one: launch it with torchrun --nproc_per_node=N (N >= 2), or use trainer.strategy=ddp")
        self._wrap_model(block_paths or [])
        steps_per_epoch = data.steps_per_epoch
        self.horizon = self.tcfg.epochs * steps_per_epoch  # the schedule's length: max_steps only stops early
        self.total_steps = self.horizon if self.tcfg.max_steps is None else min(self.horizon, self.tcfg.max_steps)
        self._build_optimizer()
        self.scaler = grad_scaler(self.tcfg.precision, self.device.type)
        self.ema = None
        if self.tcfg.ema_decay is not None:
            self.ema = AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(self.tcfg.ema_decay), use_buffers=True)
        # progress
        self.epoch = 0  # completed epochs
        self.step_in_epoch = 0
        self.step = 0  # optimizer steps over the whole run
        self.train_s = 0.0
        self.eval_metrics: Dict[str, float] = {}
        self.eval_step: Optional[int] = None  # the step the metrics were measured at
        self.best: Optional[float] = None
        self.summary = RunSummary(cfg, plan, task, dist)
        self.config_dict = as_dict(cfg)  # stored in every checkpoint
        self.log = MetricsLog(self.run_dir / rundir.METRICS, cfg.logger, self.config_dict) if dist.is_main else None
        self.stop = StopRequest()
        self._last_ckpt_time = time.monotonic()
        self.resumed_config: Optional[Dict[str, Any]] = None  # the config the resumed checkpoint was trained with
        self._checkpoint_due, self._agreed_at = False, -1  # the interval check all ranks agreed on, and its step
        self.timer = measure.StepTimer(self.device, warmup_steps=self.tcfg.timing_warmup, unit=task.unit)
        self._note_phase()

    # ------------------------------------------------------------------ what each phase of the model gets
    def _wrap_model(self, block_paths: list) -> None:
        """The compiled and the DDP-wrapped (or FSDP-sharded) views of `self.model` that steps run through."""
        self.forward_model = torch.compile(self.model) if self.tcfg.compile else self.model
        self.train_model = self.forward_model
        if self.tcfg.sharded:
            self.sharded = shard_model(self.model, self.plan, block_paths, self.device)
        elif self.dist.world_size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            # A method that skips blocks per batch leaves their parameters without gradient on that step.
            unused = self.plan.skips_blocks
            self.train_model = nn.parallel.DistributedDataParallel(self.forward_model, device_ids=ids,
                                                                   find_unused_parameters=unused)

    def _build_optimizer(self, previous: Optional[torch.optim.Optimizer] = None, step: int = 0) -> None:
        """Optimizer and LR schedule over the model's trainable parameters, and what watches them. After a phase
        change: the state `previous` kept for each surviving parameter carries over and the lr continues at `step`."""
        self.optimizer = build_optimizer(self.cfg.optim, self.model, self.device)
        if previous is not None:
            carry_state(previous, self.optimizer)
        fresh = build_schedule(self.cfg.optim, self.optimizer, self.horizon, self.data.steps_per_epoch)
        self.schedule = continue_schedule(fresh, step)
        self.clip_params = [p for p in self.model.parameters() if p.requires_grad]
        self.window = WindowStats(self.optimizer, self.device, wanted=self._logs_this_step)  # grad norm, memory

    def _enter_phase(self, target: Phase, noted: bool = True) -> None:
        """Move the model forward through the schedule's phases to `target` (nothing if it is there): each transition
        changes the live model (and the EMA's copy) in place, then compiles, wraps and builds the optimizer again.
        `noted`: record where each phase began (a resume replays transitions the checkpoint has recorded)."""
        if target.rank < self.phase.rank:
            raise CheckpointError(f"checkpoint {self.ckpt_path} is in phase {self.phase.value}, and under trainer.epochs="
                                  f"{self.tcfg.epochs} epoch {self.epoch + 1} is in phase {target.value} (a run never goes "
                                  "back a phase); resume with the trainer.epochs it was trained with")
        while self.phase is not target:
            self.phase = self.phase.next()
            if noted and self.phase is Phase.METHOD and plans_after_warmup(self.cfg.repl):
                self._plan_after_warmup()
            transition(self.model, self.phase, self.plan, self.cfg.repl)
            self.model.to(self.device, memory_format=self.memory_format)  # new tensors follow the run's layout
            if self.ema is not None:  # the averaged copy changes the same way, so it keeps averaging the same tensors
                transition(self.ema.module, self.phase, self.plan, self.cfg.repl)
            self._wrap_model([])
            self._build_optimizer(previous=self.optimizer, step=self.step)
            self.summary.probe = None  # FLOPs and memory of the new phase are measured on its first batch
            if noted:
                self._note_phase()

    def _plan_after_warmup(self) -> None:
        """repl.select=similarity after repl.start epochs of backprop: score the blocks on the weights trained so far
        (repl.similarity=cka: on the first training batches of the coming epoch) and plan by those scores."""
        self.plan = plan_replacement(self.model, self.cfg.repl,
                                     inputs=lambda: scoring_inputs(self.data, epoch=self.epoch))
        self.summary.plan = self.plan
        if self.dist.is_main:
            echo(f"after {self.epoch} epochs of backprop: {self.plan.describe()}")

    def _note_phase(self) -> None:
        """Record that the current phase began at this epoch and step, with its parameter counts."""
        if self.phases.active:
            self.phases_entered.append({"phase": self.phase.value, "epoch": self.epoch, "step": self.step,
                                     "params": measure.count_parameters(self.model)})

    # ------------------------------------------------------------------ steps
    def autocast(self) -> AbstractContextManager[Any]:
        """Mixed-precision context for trainer.precision (a no-op at 32)."""
        return autocast(self.tcfg.precision, self.device.type)

    def forward_loss(self, model: nn.Module, batch: StepBatch) -> torch.Tensor:
        """The task's loss under the run's precision: what every step (and the measurement probe) computes."""
        with self.autocast():
            return self.task.loss(model, batch)

    def train_step(self, batch: StepBatch) -> torch.Tensor:
        """One optimizer step on one batch (in trainer.accumulate micro-batches); returns the detached loss (no host sync)."""
        if self.tcfg.accumulate == 1:
            loss = self.forward_loss(self.train_model, batch)
            self.backward(loss)
        else:
            loss = self.accumulate_gradients(batch)
        if self.scaler is None:
            if self.tcfg.grad_clip is not None:
                nn.utils.clip_grad_norm_(self.clip_params, self.tcfg.grad_clip)
            self.optimizer.step()
        else:
            if self.tcfg.grad_clip is not None:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.clip_params, self.tcfg.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.schedule.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        return loss.detach()

    def probe(self, batch: StepBatch) -> Dict[str, Any]:
        """FLOPs of one optimizer step on `batch` and the memory of its forward+backward.

        Under trainer.accumulate the step runs one micro-batch at a time, so the activations measured are
        the first micro-batch's, and the FLOPs are scaled to the whole batch (they are linear in its rows).
        """
        if self.tcfg.accumulate == 1:
            return measure.probe_step(self.model, self.forward_loss, batch, self.optimizer)
        micro = tuple(t.tensor_split(self.tcfg.accumulate)[0] for t in batch)
        probe = measure.probe_step(self.model, self.forward_loss, micro, self.optimizer)
        probe["flops"] = round(probe["flops"] * self.task.batch_size(batch) / self.task.batch_size(micro))
        return probe

    def backward(self, loss: torch.Tensor) -> None:
        """Gradients of `loss`, added to those already accumulated (scaled under fp16)."""
        (loss if self.scaler is None else self.scaler.scale(loss)).backward()

    def accumulate_gradients(self, batch: Batch) -> torch.Tensor:
        """Backward over the task's micro-batches of `batch`; returns the batch's loss.

        Each micro loss is weighted by its share of what the batch loss averages over (samples, scored
        tokens), so losses and gradients sum to the whole batch's, up to float summation order. Under DDP
        gradients are all-reduced once, with the last micro-batch's backward.
        """
        parts = self.task.micro_losses(batch, self.tcfg.accumulate)
        ddp = isinstance(self.train_model, nn.parallel.DistributedDataParallel)
        total = torch.zeros((), device=self.device)
        for i, part in enumerate(parts):
            with self.train_model.no_sync() if ddp and i < len(parts) - 1 else nullcontext():
                with self.autocast():
                    loss = part(self.train_model)
                self.backward(loss)
            total += loss.detach().float()
        return total

    def evaluate(self) -> Dict[str, float]:
        """Task metrics on the eval split (the EMA weights when EMA is on), BatchNorm statistics recalibrated first
        under trainer.bn_recalibrate."""
        model = self.ema.module if self.ema is not None else self.forward_model
        self.recalibrate()
        broadcast_buffers(model)  # the statistics the checkpoint keeps (rank 0's) are the ones evaluated
        model.eval()
        try:
            return self.task.evaluate(model, self.data.eval_batches(), self.autocast())
        finally:
            model.train()

    def recalibrate(self) -> int:
        """trainer.bn_recalibrate: re-estimate the BatchNorm running statistics of the evaluated weights (the EMA's
        when on) over that many training batches from the current epoch's start, read by an iterator of their own;
        training's parameters, data order and RNG streams are untouched (repl/engine/recalibrate.py). Returns the
        batches used (0 when off or the model has no BatchNorm)."""
        model = self.ema.module if self.ema is not None else self.model  # eager: the compiled one shares its buffers
        return recalibrate_batchnorm(model, calibration_batches(self.data, self.epoch), self.forward_loss,
                                     self.tcfg.bn_recalibrate)

    # ------------------------------------------------------------------ checkpoints
    @property
    def ckpt_path(self) -> Path:
        """checkpoints/last.pt in the run directory: what save() writes and resume() reads."""
        return self.run_dir / rundir.CHECKPOINTS / rundir.LAST

    def state_dict(self) -> Dict[str, Any]:
        """The training state a checkpoint holds. Under FSDP a collective (every rank calls it) that gathers the
        whole model and optimizer state on rank 0, in the unsharded layout; the other ranks get empty dicts."""
        if self.sharded is not None:
            model_state, optimizer_state = self.sharded.full_state(self.optimizer)
        else:
            model_state, optimizer_state = self.model.state_dict(), self.optimizer.state_dict()
        state = {
            "model": model_state,
            "optimizer": optimizer_state,
            "schedule": self.schedule.state_dict(),
            "progress": {"epoch": self.epoch, "step_in_epoch": self.step_in_epoch, "step": self.step,
                         "train_s": self.train_s + self.timer.epoch_elapsed(), "best": self.best, "eval_metrics": dict(self.eval_metrics),
                         "eval_step": self.eval_step, "phase": self.phase.value,
                         "phases_entered": [dict(t) for t in self.phases_entered]},
            "plan": self.plan.to_dict(),
            "rng": rng_state(),
            "config": self.config_dict,
        }
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        if self.ema is not None:
            state[EMA] = self.ema.state_dict()
        return state

    def save(self) -> None:
        """Checkpoint atomically (rank 0); every rank keeps its place."""
        state = self.state_dict() if self.dist.is_main or self.sharded is not None else None  # FSDP: every rank gathers
        if self.dist.is_main:
            save_checkpoint(self.ckpt_path, state)
        self._last_ckpt_time = time.monotonic()

    def save_best(self) -> None:
        """checkpoints/best.pt (rank 0): the training state at the eval with the best primary metric so far."""
        state = self.state_dict() if self.dist.is_main or self.sharded is not None else None  # FSDP: every rank gathers
        if self.dist.is_main:
            save_checkpoint(self.run_dir / rundir.CHECKPOINTS / rundir.BEST, state)

    def resume(self) -> bool:
        """Load checkpoints/last.pt if resuming is on and it exists; refuse one made with another plan."""
        if not (self.tcfg.resume and self.ckpt_path.exists()):
            return False
        state = load_checkpoint(self.ckpt_path)
        progress = state["progress"]
        saved_plan = Plan.from_dict(state["plan"])
        chosen_after_warmup = (plans_after_warmup(self.cfg.repl)
                               and progress.get("phase", Phase.METHOD.value) != Phase.BACKPROP.value)
        if not chosen_after_warmup:
            check_resume_plan(saved_plan, self.plan, self.ckpt_path)
        check_resume_config(state.get("config"), self.config_dict, self.ckpt_path)
        if chosen_after_warmup:
            self.plan = self.summary.plan = saved_plan  # chosen by this same config (checked above) on trained weights
        self.epoch = progress["epoch"]  # named in a refusal to go back a phase
        # The model takes the checkpoint's phase before its weights load (a checkpoint older than schedules: the method's).
        self._enter_phase(Phase(progress.get("phase", Phase.METHOD.value)), noted=False)
        self.phases_entered = [dict(t) for t in progress.get("phases_entered", self.phases_entered)]
        try:
            if self.sharded is not None:
                self.sharded.load_full_state(self.optimizer, state["model"], state["optimizer"])
            else:
                self.model.load_state_dict(state["model"])
                self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as err:
            raise CheckpointError(f"checkpoint {self.ckpt_path} does not match this model: {str(err).splitlines()[0]}") from None
        self.schedule.load_state_dict(state["schedule"])
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None and EMA in state:
            self.ema.load_state_dict(state[EMA])
        self.epoch, self.step_in_epoch, self.step = progress["epoch"], progress["step_in_epoch"], progress["step"]
        self.train_s, self.best = progress["train_s"], progress["best"]
        self.eval_metrics, self.eval_step = dict(progress["eval_metrics"]), progress["eval_step"]
        set_rng_state(state["rng"])
        if self.log is not None:
            self.log.truncate_after(self.step)
        self.resumed_config = state.get("config")
        old_epochs = ((self.resumed_config or {}).get("trainer") or {}).get("epochs")
        if self.dist.is_main and old_epochs is not None and old_epochs != self.tcfg.epochs:
            echo(f"trainer.epochs {old_epochs} -> {self.tcfg.epochs}: the LR schedule restarts from the new horizon "
                 f"({self.horizon} steps) at step {self.step}, so its lr from here differs from the checkpoint's run "
                 "and from a run started with this length", warning=True)
        return True

    # ------------------------------------------------------------------ the public surface
    def fit(self) -> Dict[str, Any]:
        """Train to the configured length (resuming if possible) and return the final summary."""
        resumed = self.resume()
        self._print_start(resumed)
        if self.dist.is_main:
            rundir.append_history(self.run_dir, self.segment_record(resumed))
        handlers = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGUSR1)}
        measure.reset_peak_memory(self.device)
        try:
            self._loop()
        finally:
            for s, h in handlers.items():
                signal.signal(s, h)
        if self.stop.requested:
            self._exit_stopped()
        if self.eval_step != self.step:  # a trainer.max_steps stop: measured, but no epoch's eval (never the best)
            self._record_eval(scheduled=self.step_in_epoch == 0 and self.should_evaluate())
        self._write_summary(RunStatus.RUNNING)  # a death after the save below leaves these measurements to a rerun
        self.save()
        summary = self._write_summary(RunStatus.COMPLETED)
        if self.log is not None:
            self.log.close(summary)
        if self.dist.is_main:
            echo(self.summary.table(summary))
            echo(f"  results in {self.run_dir}/summary.json")
        return summary

    def segment_record(self, resumed: bool) -> Dict[str, Any]:
        """This process's line of history.jsonl: when, from where (a fresh start, or the checkpoint's step and
        epoch), what changed from the config the checkpoint was trained with, and where it ran."""
        env = measure.environment_info(self.device)
        changed = differences(self.resumed_config, self.config_dict) if resumed and self.resumed_config else None
        return {"time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "start": rundir.RESUME if resumed else rundir.FRESH, "step": self.step,
                "epoch": self.epoch + self.step_in_epoch / self.data.steps_per_epoch,
                "changed": changed, "epochs": self.tcfg.epochs, "max_steps": self.tcfg.max_steps,
                "world_size": self.dist.world_size, "strategy": self.tcfg.strategy, "argv": sys.argv[1:],
                **{k: env[k] for k in ("hostname", "device", "torch", "cuda", "python", "git_sha", "git_dirty")}}

    def run_steps(self, steps: int) -> None:
        """Train `steps` more optimizer steps through the normal loop (logging, checkpoint checks, timer),
        continuing where the last call stopped; the checkpoint interval counts from this call.
        No resume and no final evaluation or summary (an epoch completed inside ends as in fit): for measuring
        the loop itself (benchmarks/trainer_overhead.py)."""
        self.total_steps = self.step + steps
        self._last_ckpt_time = time.monotonic()  # a time-triggered checkpoint is a one-off cost, not a step's
        self._loop()

    def request_stop(self, signum: int) -> None:
        """Stop after the current step, save a checkpoint and exit with 128 + signum (what SIGTERM/SIGUSR1 do)."""
        self.stop.request(signum)

    # ------------------------------------------------------------------ decisions
    def should_log(self) -> bool:
        """Whether the step just taken ends a logging window: every trainer.log_every steps and at epoch end."""
        return self.step_in_epoch % self.tcfg.log_every == 0 or self.step_in_epoch == self.data.steps_per_epoch

    def should_stop(self) -> bool:
        """Whether training ends after the step just taken: the last step, or a stop request (agreed by all ranks).
        The same all-reduce agrees on whether checkpoint_interval_s has passed (see should_checkpoint)."""
        if self.step >= self.total_steps:
            return True
        return self._agree()

    def _agree(self) -> bool:
        """Once per step, every rank: one tiny all-reduce makes the stop request and the time-based checkpoint
        common to all ranks (each rank's clock and last save differ; under FSDP a save is a collective, so ranks
        that disagreed would run mismatched collectives). Returns whether to stop."""
        elapsed = time.monotonic() - self._last_ckpt_time >= self.tcfg.checkpoint_interval_s
        stop, self._checkpoint_due = self.stop.agreed_with(self.dist.world_size, self.device, elapsed)
        self._agreed_at = self.step
        return stop

    def should_checkpoint(self) -> bool:
        """A mid-epoch checkpoint after this step: every trainer.checkpoint_every steps or checkpoint_interval_s
        seconds (an epoch's end always checkpoints). The interval is agreed by all ranks: it has passed when it
        has at any rank (decided with the stop request in should_stop, or here if that was not asked this step)."""
        if self.step_in_epoch >= self.data.steps_per_epoch:
            return False
        every = self.tcfg.checkpoint_every
        if every and self.step % every == 0:
            return True
        if self._agreed_at != self.step:
            self._agree()
        return self._checkpoint_due

    def should_evaluate(self) -> bool:
        """Evaluate at the end of the epoch just completed: every trainer.eval_every epochs and after the last."""
        return self.epoch % self.tcfg.eval_every == 0 or self.epoch == self.tcfg.epochs

    # ------------------------------------------------------------------ loop
    def _on_signal(self, signum, _frame) -> None:
        self.request_stop(signum)

    def _exit_stopped(self) -> None:
        """After a stop request: measurements, checkpoint, then exit 128 + signum (the rerun resumes)."""
        signum = self.stop.signum
        self._write_summary(RunStatus.RUNNING)  # before its checkpoint: a death between leaves the measurements
        self.save()
        if self.dist.is_main:  # every rank writes into the one train.log
            echo(f"stopped by signal {signum}; checkpoint saved, rerun the same command to resume", warning=True)
        self.close_log(128 + signum)
        sys.exit(128 + signum)

    def _loop(self) -> None:
        """Whole epochs until the last step or a stop; each completed epoch is evaluated (as due), summarised
        and checkpointed."""
        while self.epoch < self.tcfg.epochs and self.step < self.total_steps and not self.stop.requested:
            self._enter_phase(self.phases.phase_at(self.epoch))  # at an epoch boundary, after its checkpoint
            if not self._train_epoch():
                return  # stopped early: max_steps or a signal
            self.epoch += 1
            self.step_in_epoch = 0
            if self.should_evaluate():
                self._record_eval()
            self._write_summary(RunStatus.RUNNING)
            self.save()

    def _train_epoch(self) -> bool:
        """Steps of the current epoch from where it stands; True when the epoch was completed."""
        per_epoch = self.data.steps_per_epoch
        timer = self.timer
        start = self.step_in_epoch
        bar = tqdm(total=min(per_epoch, self.total_steps - self.step + start), initial=start,
                   desc=f"epoch {self.epoch + 1}/{self.tcfg.epochs}", disable=not (self.dist.is_main and self.tcfg.progress),
                   dynamic_ncols=True, leave=False, mininterval=0.5 if sys.stderr.isatty() else 30)
        loss_sum = torch.zeros((), device=self.device)
        logged_at = start
        timer.start_epoch()
        window_start = time.perf_counter()
        for batch in self.data.train_batches(self.epoch, start_step=start):
            if self.tcfg.channels_last:
                batch = (batch[0].contiguous(memory_format=torch.channels_last), *batch[1:])
            if self.summary.probe is None:  # once per process and phase, on its first batch; disturbs nothing
                with timer.paused():
                    self.summary.probe = self.probe(batch)
                if self.phases_entered:  # the phase's own FLOPs and memory, kept for the summary after it ends
                    self.phases_entered[-1].setdefault("probe", self.summary.probe)
            loss_sum += self.train_step(batch)
            self.step += 1
            self.step_in_epoch += 1
            timer.step(self.task.batch_size(batch) * self.dist.world_size)
            if self.should_log():
                loss = self._window_loss(loss_sum, self.step_in_epoch - logged_at)  # syncs: the window's time is real
                loss_sum.zero_()
                now = time.perf_counter()
                rate = (self.step_in_epoch - logged_at) * self.task.batch_size(batch) * self.dist.world_size / (now - window_start)
                self._log_step(loss, rate, bar, self.step_in_epoch - logged_at)
                logged_at, window_start = self.step_in_epoch, now
            if self.should_stop():
                break
            if self.should_checkpoint():
                with timer.paused():
                    self.save()
                window_start = time.perf_counter()
        bar.close()
        self.train_s += timer.end_epoch()
        if self.step_in_epoch < per_epoch:
            if self.step_in_epoch > logged_at:
                self._log_step(self._window_loss(loss_sum, self.step_in_epoch - logged_at), None, None, 0)
            return False
        return True

    # ------------------------------------------------------------------ records
    def _logs_this_step(self) -> bool:
        """Whether the optimizer step being taken ends a logged window (called before step counters advance)."""
        step_in_epoch = self.step_in_epoch + 1
        return (step_in_epoch % self.tcfg.log_every == 0 or step_in_epoch == self.data.steps_per_epoch
                or self.step + 1 >= self.total_steps)

    def _window_loss(self, loss_sum: torch.Tensor, steps: int) -> float:
        """Mean training loss of the global batches of a logging window (every rank calls this at the same step)."""
        return (all_reduce_sum(loss_sum) / (steps * self.dist.world_size)).item()  # loss_sum is reset after

    def _log_step(self, loss: float, rate: Optional[float], bar, advanced: int) -> None:
        if not math.isfinite(loss):
            raise FloatingPointError(f"training loss is {loss} at step {self.step}; lower optim.lr or set trainer.grad_clip")
        lr = self.optimizer.param_groups[0]["lr"]
        if bar is not None:
            bar.update(advanced)
            bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.3g}", **{f"{self.task.unit}/s": f"{rate:.0f}"})
        if self.log is not None:
            record = {"step": self.step, "epoch": self.epoch + self.step_in_epoch / self.data.steps_per_epoch,
                      "train/loss": loss, "train/lr": lr}
            if rate is not None:
                record[f"train/throughput({self.task.unit}/s)"] = rate
            self.log.log({**record, **self.window.record()})

    def close_log(self, exit_code: int) -> None:
        """Finish the metric sinks of a run that did not complete (wandb marks it failed or stopped)."""
        if self.log is None:
            return
        try:
            self.log.close(exit_code=exit_code)
        except Exception as err:  # noqa: BLE001 - never hide the error that ended the run
            echo(f"could not finish the metric log: {type(err).__name__}: {err}", warning=True)

    def _record_eval(self, scheduled: bool = True) -> None:
        """Evaluate and log. `scheduled`: an epoch's eval, which counts toward the best (`<primary>_best`, best.pt);
        the eval after a trainer.max_steps stop mid-epoch does not (an uninterrupted run never makes it, so a run
        extended from there reports the same best), and is logged at its fractional epoch."""
        metrics = self.evaluate()
        value = metrics[self.task.primary]
        better = scheduled and (self.best is None or (value > self.best if self.task.higher_is_better else value < self.best))
        if better:
            self.best = value
        self.eval_metrics, self.eval_step = metrics, self.step
        if better and self.tcfg.save_best:
            self.save_best()
        epoch = self.epoch + self.step_in_epoch / self.data.steps_per_epoch if self.step_in_epoch else self.epoch
        if self.log is not None:
            self.log.log({"step": self.step, "epoch": epoch, **{f"eval/{k}": v for k, v in metrics.items()}})
        if self.dist.is_main and self.tcfg.progress:
            text = " ".join(f"{k}={v:.4g}" for k, v in metrics.items())
            echo(f"epoch {epoch:.4g}: {text}")

    def _write_summary(self, status: RunStatus) -> Dict[str, Any]:
        metrics = dict(self.eval_metrics)
        if self.best is not None:
            metrics[f"{self.task.primary}_best"] = self.best
        summary = self.summary.build(status=status, model=self.model, metrics=metrics, timer=self.timer,
                                     train_s=self.train_s, epochs_done=self.epoch, steps_done=self.step,
                                     phase=self.phase, phases_entered=self.phases_entered)
        if self.dist.is_main:
            summary = rundir.write_summary(self.run_dir, summary)  # keeps stored measurements this process lacks
        return summary

    def _print_start(self, resumed: bool) -> None:
        if not self.dist.is_main:
            return
        where = f"resumed at epoch {self.epoch}, step {self.step}" if resumed else "from scratch"
        echo(f"run dir: {self.run_dir}  ({where})")
        echo(self.plan.describe())
        if self.phases.active:
            echo(self.phases.describe() + (f" (now: {self.phase.value})" if resumed else ""))
        echo(f"training {self.total_steps} steps ({self.data.steps_per_epoch}/epoch) on {self.device}, "
              f"precision {self.tcfg.precision}{', compiled' if self.tcfg.compile else ''}, world size {self.dist.world_size}"
             f"{f', FSDP with the blocks in {len(self.sharded.units)} units' if self.sharded is not None else ''}")
        slow = precision_warning(self.tcfg.precision, self.device.type)
        if slow:
            echo(slow, warning=True)
        if self.tcfg.bn_recalibrate and batchnorm_modules(self.model):  # a ViT, GPT, ... has none to recalibrate
            echo(f"BatchNorm statistics recalibrated over {self.tcfg.bn_recalibrate} training batches before each evaluation")


def enable_activation_checkpointing(model: nn.Module, block_paths: list) -> None:
    """Recompute every block's activations in backward instead of storing them (state_dict keys unchanged)."""
    targets = {id(get_module(model, path)) for path in block_paths}
    apply_activation_checkpointing(model, check_fn=lambda module: id(module) in targets)
