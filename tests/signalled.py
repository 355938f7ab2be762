"""Signal a training process at a known step without racing it: the child pauses after logging that step's
training record (tests/pause_site/sitecustomize.py), so a tiny run, a few hundred milliseconds from its end,
cannot finish between the test seeing the step and its signal arriving."""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Callable, Dict, Optional

PAUSE_SITE = Path(__file__).with_name("pause_site")


def paused_env(step: int, seconds: float = 3.0, env: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """The environment of a child that pauses `seconds` after logging training step `step`."""
    base = dict(os.environ if env is None else env)
    path = os.pathsep.join(p for p in (str(PAUSE_SITE), base.get("PYTHONPATH", "")) if p)
    return {**base, "PYTHONPATH": path, "REPL_TEST_PAUSE_STEP": str(step), "REPL_TEST_PAUSE_S": str(seconds)}


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
