"""`python train.py` in N processes with torchrun, from a test: one place for the launcher, its environment, and the
single retry of gloo's known flaky abort.

gloo on a loaded CPU sometimes aborts a rank with "terminate called without an active exception" (SIGABRT) in its
own threads, before training reaches anything of RepL's (seen once in CI, during the plain-backprop epoch of
test_schedules' DDP run; upstream: pytorch/pytorch#65231, the same abort in torch's own gloo tests). Such a run is
started once more from an empty run directory, so a retried run is a fresh run, never a resume; any other failure,
or the abort twice, fails the test.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
GLOO_ABORT = "terminate called without an active exception"


def env() -> Dict[str, str]:
    """One OpenMP thread per process (the ranks share the machine's cores), wandb offline, unbuffered output."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "WANDB_MODE": "offline"}


def launcher() -> list[str]:
    """torchrun beside this interpreter, else `python -m torch.distributed.run`."""
    torchrun = Path(sys.executable).with_name("torchrun")
    return [str(torchrun)] if torchrun.exists() else [sys.executable, "-m", "torch.distributed.run"]


def train(args: Sequence[str], run_dir: Path, nproc: Optional[int] = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """`train.py args hydra.run.dir=run_dir` in `nproc` torchrun processes (None: one plain process)."""
    command = [*launcher(), "--standalone", f"--nproc_per_node={nproc}"] if nproc else [sys.executable]

    def run() -> subprocess.CompletedProcess:
        return subprocess.run([*command, str(ROOT / "train.py"), *args, f"hydra.run.dir={run_dir}"], cwd=ROOT,
                              env=env(), capture_output=True, text=True, timeout=timeout, check=False)

    done = run()
    if done.returncode != 0 and nproc and GLOO_ABORT in done.stderr:
        shutil.rmtree(run_dir, ignore_errors=True)  # start the retry afresh, not as a resume of the aborted run
        done = run()
    return done
