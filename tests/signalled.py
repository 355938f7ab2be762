"""Signal a training process at a known step without racing it: the child pauses after logging that step's
training record (tests/pause_site/sitecustomize.py), so a tiny run, a few hundred milliseconds from its end,
cannot finish between the test seeing the step and its signal arriving; and it starts with the signals a test sends
unblocked and at their defaults, whatever mask or disposition the test process holds (a child inherits both through
fork and exec: a Ctrl-C left pending in a blocked mask ends the run "completed", exit status 0)."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

PAUSE_SITE = Path(__file__).with_name("pause_site")


def paused_env(step: int, seconds: float = 3.0, env: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """The environment of a child that pauses `seconds` after logging training step `step`."""
    base = dict(os.environ if env is None else env)
    path = os.pathsep.join(p for p in (str(PAUSE_SITE), base.get("PYTHONPATH", "")) if p)
    return {**base, "PYTHONPATH": path, "REPL_TEST_PAUSE_STEP": str(step), "REPL_TEST_PAUSE_S": str(seconds)}


SENT = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)  # what the tests send, or SLURM does


def _default_signals() -> None:
    """Popen's preexec_fn (in the child, before exec): the signals a test sends unblocked and at their defaults."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, SENT)
    for sig in SENT:
        signal.signal(sig, signal.SIG_DFL)


def start_paused(command: List[str], step: int, env: Optional[Dict[str, str]] = None, **popen: Any) -> subprocess.Popen:
    """Popen(command) as a child that pauses after training step `step` (paused_env) and can be signalled."""
    return subprocess.Popen(command, env=paused_env(step, env=env), preexec_fn=_default_signals, **popen)


def signal_state(pid: int) -> str:
    """The signal lines of /proc/<pid>/status (pending, blocked, ignored, caught), for a failing test's message."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError as err:
        return f"no /proc status for {pid}: {err}"
    return " ".join(line.replace("\t", "") for line in lines if line.startswith(("SigPnd", "ShdPnd", "SigBlk", "SigIgn", "SigCgt")))


def wait_for_step(proc: subprocess.Popen, find_metrics: Callable[[], Optional[Path]], step: int,
                  timeout: float = 240.0) -> Optional[Path]:
    """Poll until the metrics.jsonl that find_metrics() returns holds training step `step`; returns its path (None
    if the process ended or the time ran out first)."""
    deadline = time.monotonic() + timeout
    marker = f'"step": {step},'
    while time.monotonic() < deadline and proc.poll() is None:
        metrics = find_metrics()
        if metrics is not None and metrics.exists() and marker in metrics.read_text():
            return metrics
        time.sleep(0.05)
    return None
