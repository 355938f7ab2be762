"""One training run from a composed config: the run directory's state, the run built (repl.build), trained,
a failure recorded. The directory is changed only once the run is built: every check first (repl.engine.rundir)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from repl.build import build_run, write_environment
from repl.config import TrainConfig, as_dict, to_config
from repl.engine import distributed, rundir
from repl.engine.console import echo_error
from repl.errors import ReplError
from repl.tasks.registry import check_precision


def train(cfg: TrainConfig, run_dir: Path, record: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    """Train as configured, writing metrics.jsonl, summary.json and checkpoints/ into run_dir.

    record: {file name: text} written into run_dir/.hydra/ once the run is built (hydra_record); a refused
    run or a rerun of a completed one leaves the stored record as it is."""
    run_dir = Path(run_dir)
    dist = distributed.setup(cfg.trainer.device)
    try:
        check_precision(cfg.task.name, cfg.trainer.precision, dist.device.type)  # needs the device; before the run dir
        state = rundir.inspect(run_dir, cfg.trainer, as_dict(cfg))  # before anything is built or read
        if state.completed:
            if dist.is_main:
                print(state.done_line())
            return state.summary
        rundir.check_writable(run_dir)
        trainer = build_run(cfg, run_dir, dist).trainer  # model, plan, data: every check that needs them
        if dist.is_main:
            rundir.begin(state, record)
            write_environment(run_dir, dist.device)
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
    return train(to_config(cfg), run_dir, record=hydra_record(cfg))


def hydra_record(cfg: DictConfig) -> Dict[str, str]:
    """The files Hydra would write into <run dir>/.hydra/ (config.yaml, hydra.yaml, overrides.yaml), as text; {}
    outside a Hydra job. configs/train.yaml turns Hydra's own writing off (hydra.output_subdir: null): Hydra writes
    them before the task runs, so a refused rerun would replace a finished run's record with the refused config."""
    if not HydraConfig.initialized():
        return {}
    hydra_cfg = HydraConfig.get()
    return {"config.yaml": OmegaConf.to_yaml(cfg), "hydra.yaml": OmegaConf.to_yaml({"hydra": hydra_cfg}),
            "overrides.yaml": OmegaConf.to_yaml(hydra_cfg.overrides.task)}


def report_user_error(err: ReplError) -> None:
    """One line, no traceback: the user can fix it from the message alone."""
    echo_error(f"error: {err}")  # on stderr, and in the run's train.log


