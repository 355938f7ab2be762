"""Where and with what a run was made: versions, device, code revision, host."""
from __future__ import annotations

import platform
import socket
import subprocess
from pathlib import Path
from typing import Any

import torch

from repl.engine.measure.device import DeviceLike, device_name

_PACKAGE_DIR = Path(__file__).resolve().parents[2]  # .../repl


def _git(*args: str) -> str:
    """Output of a git command run in the package's directory (raises if it fails)."""
    done = subprocess.run(
        ["git", "-C", str(_PACKAGE_DIR), *args],
        capture_output=True, text=True, timeout=10, check=True,
    )
    return done.stdout.strip()


def git_revision() -> tuple[str, bool]:
    """(commit sha, tracked files modified) of the checkout holding this package, or ("unknown",
    False) when the package is not tracked by git (e.g. installed into site-packages)."""
    try:
        _git("ls-files", "--error-unmatch", "__init__.py")  # our checkout, not an enclosing repo
        sha = _git("rev-parse", "HEAD")
        return sha, bool(_git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return "unknown", False


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (platform.processor() where there is none); "unknown" if neither."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment_info(device: DeviceLike = None) -> dict[str, Any]:
    """Versions, device name, CPU model, git revision, host and thread count for a run's summary."""
    sha, dirty = git_revision()
    return {
        "torch": torch.__version__,
        "device": device_name(device),
        "cpu": cpu_model(),  # on a CPU run the device is just "cpu": this says which
        "git_sha": sha,
        "git_dirty": dirty,
        "hostname": socket.gethostname(),
        "python": platform.python_version(),
        "cuda": torch.version.cuda,
        "num_threads": torch.get_num_threads(),
    }
