"""One training run from a composed config: build, apply the method, train, summarise."""
from __future__ import annotations

import random
import sys
from importlib import metadata
from pathlib import Path
from typing import Any, Dict

import numpy as np
import torch
from omegaconf import DictConfig

from repl import apply_replacement
from repl.config import TrainConfig, as_dict, to_config
from repl.data import build_data, num_outputs
from repl.engine import distributed, measure, rundir
from repl.engine.checkpoint import atomic_write_json
from repl.engine.console import echo_error
from repl.engine.trainer import Trainer
from repl.errors import ReplError
from repl.families import discover_blocks
from repl.models import build_model
from repl.tasks import build_task


def seed_everything(seed: int) -> None:
    """Seed every RNG training draws from (python, numpy, torch on all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def write_environment(run_dir: Path, device: torch.device) -> None:
    """env.json beside the results: what ran (versions, device, git state) so a run can be reproduced."""
    packages = sorted(f"{d.metadata['Name']}=={d.version}" for d in metadata.distributions() if d.metadata["Name"])
    atomic_write_json(run_dir / "env.json", {**measure.environment_info(device), "packages": packages,
                                              "argv": sys.argv})


def train(cfg: TrainConfig, run_dir: Path) -> Dict[str, Any]:
    """Train as configured, writing metrics.jsonl, summary.json and checkpoints/ into run_dir."""
    run_dir = Path(run_dir)
    dist = distributed.setup(cfg.trainer.device)
    try:
        state = rundir.prepare(run_dir, cfg.trainer, dist.is_main, as_dict(cfg))  # before anything is built or read
        if state.completed:
            if dist.is_main:
                print(state.done_line())
            return state.summary
        if cfg.trainer.deterministic:
            torch.use_deterministic_algorithms(True)
        seed_everything(cfg.seed)
        data_cfg = cfg.dataset
        model = build_model(cfg.model, num_classes=num_outputs(data_cfg, cfg.task.name), in_chans=data_cfg.in_chans,
                            image_size=data_cfg.input_size)
        block_paths = [b.path for b in discover_blocks(model)] if cfg.trainer.checkpointing else None
        plan = apply_replacement(model, cfg.repl)  # validates the plan before any data is read
        if dist.is_main:
            write_environment(run_dir, dist.device)
        data = build_data(data_cfg, seed=cfg.seed, device=dist.device, rank=dist.rank, world_size=dist.world_size,
                          task=cfg.task.name)
        task = build_task(cfg.task)
        trainer = Trainer(cfg, model, plan, data, task, dist, run_dir, block_paths=block_paths)
        try:
            return trainer.fit()
        except Exception as err:  # a crash or a full disk mid-run: leave a summary that says so, then re-raise
            trainer.close_log(exit_code=1)  # wandb marks the run failed
            if dist.is_main and (trainer.step > 0 or not isinstance(err, ReplError)):
                rundir.record_failure(run_dir, err, trainer.step, trainer.epoch)
            raise
    finally:
        distributed.cleanup()


def train_from_dictconfig(cfg: DictConfig, run_dir: Path) -> Dict[str, Any]:
    """Validate a composed Hydra config and train; ConfigError before anything is built."""
    return train(to_config(cfg), run_dir)


def report_user_error(err: ReplError) -> None:
    """One line, no traceback: the user can fix it from the message alone."""
    echo_error(f"error: {err}")  # on stderr, and in the run's train.log


