"""One training run from a composed config: the run directory's state, the run built (repl.build), trained,
a failure recorded."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

from omegaconf import DictConfig

from repl.build import build_run
from repl.config import TrainConfig, as_dict, to_config
from repl.engine import distributed, rundir
from repl.engine.console import echo_error
from repl.errors import ReplError
from repl.tasks.registry import check_precision


def train(cfg: TrainConfig, run_dir: Path) -> Dict[str, Any]:
    """Train as configured, writing metrics.jsonl, summary.json and checkpoints/ into run_dir."""
    run_dir = Path(run_dir)
    dist = distributed.setup(cfg.trainer.device)
    try:
        check_precision(cfg.task.name, cfg.trainer.precision, dist.device.type)  # needs the device; before the run dir
        state = rundir.prepare(run_dir, cfg.trainer, dist.is_main, as_dict(cfg))  # before anything is built or read
        if state.completed:
            if dist.is_main:
                print(state.done_line())
            return state.summary
        trainer = build_run(cfg, run_dir, dist, record_environment=True).trainer
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


