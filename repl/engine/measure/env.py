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


def _git(*args: str, ok: tuple = (0,)) -> str:
    """Output of a git command run in the package's directory (raises if it fails: an exit status not in `ok`)."""
    done = subprocess.run(["git", "-C", str(_PACKAGE_DIR), *args], capture_output=True, text=True, timeout=10)
    if done.returncode not in ok:
        raise subprocess.CalledProcessError(done.returncode, done.args, done.stdout, done.stderr)
    return done.stdout.strip() if ok == (0,) else done.stdout


def git_revision() -> tuple[str, bool]:
    """(commit sha, checkout differs from it) of the checkout holding this package, or ("unknown", False) when
    the package is not tracked by git (e.g. installed into site-packages). Dirty: a tracked file modified, or an
    untracked file that .gitignore does not ignore (a new module the run imports is part of what ran)."""
    try:
        _git("ls-files", "--error-unmatch", "__init__.py")  # our checkout, not an enclosing repo
        sha = _git("rev-parse", "HEAD")
        return sha, bool(_git("status", "--porcelain"))
    except (OSError, subprocess.SubprocessError):
        return "unknown", False


UNTRACKED_MAX_BYTES = 1 << 20  # an untracked file larger than this is listed in the patch, not included


def git_patch() -> str:
    """What a dirty checkout adds to its commit, as text `git apply` takes (from the repository's root):
    `git diff HEAD` and each untracked, not ignored file as a new file (larger ones only named, in a comment
    line at the top). "" when clean or outside a git checkout."""
    try:
        _git("ls-files", "--error-unmatch", "__init__.py")
        root = _git("rev-parse", "--show-toplevel")
        tracked = _git("-C", root, "diff", "--binary", "HEAD", ok=(0,))
        untracked = [p for p in _git("-C", root, "ls-files", "-z", "--others", "--exclude-standard", ok=(0,)).split("\0") if p]
        header, parts = [], [tracked + "\n" if tracked and not tracked.endswith("\n") else tracked]
        for path in untracked:
            try:
                size = (Path(root) / path).stat().st_size
            except OSError:
                continue
            header.append(f"# untracked: {path}" + ("" if size <= UNTRACKED_MAX_BYTES else f" ({size} bytes, not included)"))
            if size <= UNTRACKED_MAX_BYTES:
                parts.append(_git("-C", root, "diff", "--binary", "--no-index", "--", "/dev/null", path, ok=(0, 1)))
    except (OSError, subprocess.SubprocessError, ValueError):
        return ""
    body = "".join(parts)
    return ("\n".join(header) + "\n" if header else "") + body if body or header else ""


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
