"""One run built from a config: seeded model with its output size, the method applied, data, task, trainer.

`build_run` is the one place that assembles a run, used by `repl.run.train` (train.py), the studies
(benchmarks/studies/harness.py), benchmarks/trainer_overhead.py and the tests. The order is fixed
(docs/extending.md, "The builder"): seed, look for the data's files (check_present, reading none), build the model, note the blocks to checkpoint, apply the method (the plan is
validated before any data is read; under repl.start the Trainer applies it later), then data, task and the Trainer (which moves, compiles and wraps
the model). Callers may hand in their own method (`apply`), model, data or task.
"""
from __future__ import annotations

import random
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, List, Optional

import numpy as np
import torch
from torch import nn

from repl import apply_replacement
from repl.config import TrainConfig
from repl.data import build_data, model_inputs
from repl.data.build import check_present
from repl.engine import measure
from repl.engine.checkpoint import atomic_write_json, atomic_write_text
from repl.engine.distributed import DistInfo
from repl.engine.measure.env import git_patch
from repl.engine.rundir import ENV, PATCH
from repl.engine.scoring import check_scorable, scoring_inputs
from repl.engine.trainer import Trainer
from repl.errors import UnsupportedModelError
from repl.families import discover_blocks
from repl.method.apply import plan_replacement
from repl.method.plan import Plan
from repl.method.schedule import Phase, Schedule
from repl.models import build_model
from repl.tasks import build_task
from repl.tasks.registry import check_precision

Apply = Callable[[nn.Module, TrainConfig], Plan]  # puts a method on the model in place, returns its plan


@dataclass
class Run:
    """What a built run is made of; `trainer.fit()` trains it."""

    cfg: TrainConfig
    model: nn.Module
    plan: Plan
    data: Any  # a repl.data DataModule (or a stand-in with steps_per_epoch and train_batches/eval_batches)
    task: Any  # a repl.tasks task
    trainer: Trainer


def seed_everything(seed: int) -> None:
    """Seed every RNG training draws from (python, numpy, torch on all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def write_environment(run_dir: Path, device: torch.device) -> None:
    """env.json beside the results: what ran (versions, device, git state) so a run can be reproduced; with a dirty
    checkout also env.patch, what the commit lacks of the code that ran (`git apply` it from the repository's root
    on a checkout of git_sha); a stale env.patch is removed when the checkout is clean."""
    run_dir = Path(run_dir)
    packages = sorted(f"{d.metadata['Name']}=={d.version}" for d in metadata.distributions() if d.metadata["Name"])
    atomic_write_json(run_dir / ENV, {**measure.environment_info(device), "packages": packages, "argv": sys.argv})
    patch = git_patch()
    if patch:
        atomic_write_text(run_dir / PATCH, patch)
    else:
        (run_dir / PATCH).unlink(missing_ok=True)


def _block_paths(model: nn.Module, required: bool) -> list:
    """The block paths, read before the method replaces any (activation checkpointing and FSDP units follow them);
    none for a model without a known block sequence unless `required` (FSDP then shards it as one unit)."""
    try:
        return [b.path for b in discover_blocks(model)]
    except UnsupportedModelError:
        if required:
            raise
        return []


def configured_method(model: nn.Module, cfg: TrainConfig, inputs: Optional[Callable[[], List[Any]]] = None) -> Plan:
    """What a normal run does: the method of `repl.*` (`inputs`: the batches repl.similarity=cka scores on). With
    repl.start > 0 only its plan (validated as the surgery would be): the Trainer replaces the planned blocks at
    epoch repl.start (repl/method/schedule.py)."""
    if Schedule.of(cfg.repl, cfg.trainer.epochs).first is Phase.BACKPROP:
        return plan_replacement(model, cfg.repl, inputs=inputs)
    return apply_replacement(model, cfg.repl, inputs=inputs)


def build_run(cfg: TrainConfig, run_dir: Path, dist: DistInfo, *, apply: Optional[Apply] = None,
              model: Optional[nn.Module] = None, data: Any = None, task: Any = None) -> Run:
    """Build the run `cfg` describes in `run_dir` on `dist`'s device.

    apply: the method hook, `apply(model, cfg) -> Plan` (default: the configured `repl.*`); a study uses it
    to combine RepL with something repl.method does not offer. model / data / task: use these instead of
    building them from cfg (a benchmark replaying batches, a test's tiny network). Nothing is written into
    `run_dir` here: its owner (repl.run.train) records the config and the environment once the run is built.
    """
    check_precision(cfg.task.name, cfg.trainer.precision, dist.device.type)  # (repl.run.train checks it earlier too)
    if cfg.trainer.deterministic:
        torch.use_deterministic_algorithms(True)
    seed_everything(cfg.seed)
    data_cfg = cfg.dataset
    if data is None:  # the dataset's files are looked for (reading none) before the model is built: one line, not
        check_present(data_cfg, cfg.task.name)  # a failure after the model's (mm's: long) init; as a sweep checks
    if model is None:
        model = build_model(cfg.model, **model_inputs(data_cfg, cfg.task.name))
    block_paths = _block_paths(model, cfg.trainer.checkpointing) if cfg.trainer.checkpointing or cfg.trainer.sharded else None

    def make_data() -> Any:
        return build_data(data_cfg, seed=cfg.seed, device=dist.device, rank=dist.rank, world_size=dist.world_size,
                          task=cfg.task.name)

    def inputs() -> List[Any]:  # called by apply_replacement with repl.similarity=cka, once the plan's config is valid
        nonlocal data
        check_scorable(cfg.task.name)
        if data is None:
            data = make_data()
        model.to(dist.device)  # score where the run computes (the Trainer's own .to is then a no-op); the batches are there
        return scoring_inputs(data)

    plan = apply(model, cfg) if apply is not None else configured_method(model, cfg, inputs)
    if data is None:
        data = make_data()
    if task is None:
        task = build_task(cfg.task)
    trainer = Trainer(cfg, model, plan, data, task, dist, Path(run_dir), block_paths=block_paths)
    return Run(cfg=cfg, model=trainer.model, plan=plan, data=data, task=task, trainer=trainer)
