"""Atomic writes, resumable checkpoints and RNG state: nothing written is ever half a file."""
from __future__ import annotations

import json
import os
import random
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict

import numpy as np
import torch

from repl.errors import CheckpointError


def _atomic_write(path: Path, write: Callable[[Any], None], mode: str) -> None:
    """Write through a temporary file in the same directory, fsync, then rename over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600 files; results are meant to be shared
        with os.fdopen(fd, mode) as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (summary.json, run metadata)."""
    _atomic_write(Path(path), lambda h: h.write(json.dumps(data, indent=2, sort_keys=False) + "\n"), "w")


def atomic_write_text(path: Path, text: str) -> None:
    """Write a text file atomically (e.g. rewriting metrics.jsonl on resume)."""
    _atomic_write(Path(path), lambda h: h.write(text), "w")


def save_checkpoint(path: Path, state: Dict[str, Any]) -> None:
    """Save a training state atomically; a crash mid-save leaves the previous checkpoint intact."""
    _atomic_write(Path(path), lambda h: torch.save(state, h), "wb")


def load_checkpoint(path: Path) -> Dict[str, Any]:
    """Load a checkpoint on the CPU (tensors only, no pickled code); CheckpointError if unreadable."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is reported the same way
        raise CheckpointError(
            f"checkpoint {path} is unreadable ({type(err).__name__}); delete it or set trainer.resume=false"
        ) from None
    if not isinstance(state, dict) or "model" not in state or "progress" not in state:
        raise CheckpointError(f"checkpoint {path} is not a RepL training checkpoint; delete it or set trainer.resume=false")
    return state


def rng_state() -> Dict[str, Any]:
    """Every RNG stream training draws from, in a form torch.load(weights_only=True) accepts."""
    np_state = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    state: Dict[str, Any] = {
        "python": {"version": py_version, "internal": list(py_internal), "gauss": py_gauss},
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    """Restore what rng_state() captured."""
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss"]))
    np_s = state["numpy"]
    np.random.set_state(("MT19937", np_s["keys"].numpy().astype(np.uint32), np_s["pos"], np_s["has_gauss"], np_s["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
