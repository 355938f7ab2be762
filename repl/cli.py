"""`python train.py` / `repl-train`: the Hydra entry point.

A single run stops with one line (exit 2) on a user error, Hydra's own errors included (a wrong type,
an unknown option or key: repl/hydra_errors.py). A multirun's jobs are all validated before the first
starts (repl/sweep_check.py). Beyond that, in a multirun (`-m`, any launcher) a
job never raises: a failed job writes `"status": "failed"` into its summary.json and is listed in
the sweep's `failed_jobs.txt`, the other jobs go on, and the sweep ends with exit status 1 naming
the failed jobs (SweepReport). Under submitit (launcher=local|slurm) a job also joins its
processes into one torch.distributed run and checkpoints before a SLURM requeue. Ctrl-C is one line
saying how to resume (exit status 130).
"""
from __future__ import annotations

import json
import os
import signal
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from repl.config import check_overrides, config_dir
from repl.engine.checkpoint import atomic_write_json
from repl.engine.console import echo_error
from repl.engine.status import RunStatus
from repl.errors import ConfigError, ReplError
from repl.hydra_errors import command_line, one_line_errors
from repl.sweep_check import check_multirun
from repl.run import report_user_error, train_from_dictconfig

FAILED_LIST = "failed_jobs.txt"  # in the sweep dir: one "<run dir>\t<error>" line per failed job
# Ctrl-C (SIGINT) stops at once, without the checkpoint SIGTERM/SIGUSR1 make the trainer write first (repl/engine/trainer.py)
INTERRUPTED = ("interrupted: rerun the same command to resume from the run's last checkpoint (written at each epoch's "
               "end, every trainer.checkpoint_interval_s seconds and every trainer.checkpoint_every steps; the steps "
               "since are redone, and a run with none starts over); `kill -TERM` instead stops after a checkpoint")
INTERRUPTED_STATUS = 128 + signal.SIGINT  # 130, as a shell reports a process ended by Ctrl-C


@hydra.main(version_base=None, config_path=str(config_dir()), config_name="train")
def _main(cfg: DictConfig) -> float | None:
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    if hydra_cfg.mode == RunMode.MULTIRUN:
        return _sweep_job(cfg, run_dir, Path(hydra_cfg.sweep.dir))
    try:
        check_single_run(hydra_cfg)
        summary = train_from_dictconfig(cfg, run_dir)
    except ReplError as err:
        report_user_error(err)
        sys.exit(2)
    return summary["primary"]["value"]  # what Hydra sweepers optimise


def _sweep_job(cfg: DictConfig, run_dir: Path, sweep_dir: Path) -> float | None:
    """One job of a multirun: train, and on any error record the failure instead of raising."""
    submitit_env = _submitit_job_environment()
    if submitit_env is not None and submitit_env.num_tasks > 1:
        from submitit.helpers import TorchDistributedEnvironment

        TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    try:
        with RequeueOnSignal(submitit_env):
            return train_from_dictconfig(cfg, run_dir)["primary"]["value"]
    except ReplError as err:
        report_user_error(err)
        error = f"{type(err).__name__}: {err}"
    except Exception as err:  # noqa: BLE001 - a crash: traceback for the developer, summary for the tables
        traceback.print_exc()
        error = f"{type(err).__name__}: {err}"
    if int(os.environ.get("RANK", "0")) == 0:
        mark_failed(run_dir, error)
        with open(sweep_dir / FAILED_LIST, "a") as f:  # one short append per job: safe from parallel jobs
            f.write(f"{run_dir}\t{error.splitlines()[0] if error else ''}\n")
    return None


def mark_failed(run_dir: Path, error: str) -> None:
    """Set summary.json's status to failed, keeping whatever it already held; a completed run is left alone.

    A run that crashed in training already has a failed summary from repl.run (kept as written); a
    config error before training has none yet and gets a minimal one; a preempted run's "running"
    summary keeps its measurements with the new status.
    """
    path = run_dir / "summary.json"
    summary: dict = {}
    if path.exists():
        try:
            summary = json.loads(path.read_text())
        except (OSError, ValueError):
            summary = {}
        if summary.get("status") in (RunStatus.COMPLETED, RunStatus.FAILED):
            return
    atomic_write_json(path, {**summary, "status": RunStatus.FAILED.value, "error": error})


def _submitit_job_environment() -> Any:
    """submitit's JobEnvironment when this process is a submitit job, else None."""
    if "SUBMITIT_EXECUTOR" not in os.environ:
        return None
    import submitit

    return submitit.JobEnvironment()


class RequeueOnSignal:
    """Under submitit: its SIGUSR2 (time limit near, or preemption) first lets the trainer checkpoint.

    submitit's own handler requeues the job at once, which would lose the work since the last
    checkpoint. Here SIGUSR2 is turned into SIGUSR1, on which the trainer finishes its step, writes
    checkpoints/last.pt and exits 128+SIGUSR1; only then is submitit's handler run, which requeues
    the job. The requeued job finds the checkpoint in its (deterministic) run directory and resumes.
    Outside training (building, loading data) submitit's handler runs at once. No-op without submitit.
    """

    def __init__(self, submitit_env: Any) -> None:
        self.active = submitit_env is not None
        self.requeue: Callable | None = None  # submitit's handler, taken over on entry
        self.signalled = False
        self._idle_handler = self._idle  # one bound method, so that getsignal() can be compared to it

    def _idle(self, _signum: int, _frame: Any) -> None:
        """SIGUSR1 while the trainer is not running: nothing to stop."""

    def _on_usr2(self, signum: int, frame: Any) -> None:
        self.signalled = True
        if signal.getsignal(signal.SIGUSR1) is self._idle_handler:  # the trainer is not in its loop
            self.requeue(signum, frame)
        else:
            signal.raise_signal(signal.SIGUSR1)

    def __enter__(self) -> None:
        if self.active:
            self.requeue = signal.getsignal(signal.SIGUSR2)
            signal.signal(signal.SIGUSR1, self._idle_handler)
            signal.signal(signal.SIGUSR2, self._on_usr2)

    def __exit__(self, exc_type, exc, tb) -> bool:
        if self.active and self.signalled and exc_type is SystemExit:
            self.requeue(signal.SIGUSR2, None)  # requeues and exits (rank 0); other ranks just end
        return False


class SweepReport(Callback):
    """Hydra callback: a multirun with failed jobs ends with their list and exit status 1."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        (Path(config.hydra.sweep.dir) / FAILED_LIST).unlink(missing_ok=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        failed_list = Path(config.hydra.sweep.dir) / FAILED_LIST
        if not failed_list.exists():
            return
        lines = failed_list.read_text().splitlines()
        print(f"{len(lines)} job(s) failed (the others completed); see {failed_list}:", file=sys.stderr)
        for line in lines:
            print(f"  {line}", file=sys.stderr)
        sys.exit(1)


def check_single_run(hydra_cfg: Any) -> None:
    """A single run refuses a launcher: only a multirun (-m) is launched by one; it would train here instead."""
    launcher = hydra_cfg.runtime.choices.get("launcher")
    if launcher:
        raise ConfigError(f"launcher={launcher} launches the jobs of a multirun; add -m "
                          f"(python train.py -m launcher={launcher} ...), or drop launcher= to train here")


def main() -> None:
    """Console-script entry: Hydra's own errors are one `error: ...` line with exit status 2 too; Ctrl-C is one line
    saying how to resume, with exit status 130."""
    try:
        with one_line_errors(_main.__wrapped__.__code__):
            args = command_line(sys.argv[1:])
            if not args.multirun:  # (a multirun's jobs are checked one by one, check_multirun)
                check_overrides(args.overrides)
            check_multirun(args)
            _main()
    except ReplError as err:
        report_user_error(err)
        sys.exit(2)
    except KeyboardInterrupt:
        echo_error(INTERRUPTED)
        sys.exit(INTERRUPTED_STATUS)
