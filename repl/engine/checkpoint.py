"""Atomic writes, resumable checkpoints and RNG state: nothing written is ever half a file."""
from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, Iterator

import numpy as np
import torch

from repl.engine.measure._tensors import distinct_storage_bytes
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


def writable_dir(path: Path) -> Path:
    """`path` as a directory this process can write in: made if missing, then proven by making (and removing) a
    file there; OSError otherwise. For the checks that must run before any compute, so that nothing is measured
    or trained only to be lost for want of a place to save it."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path, prefix=".write-check-"):
        pass
    return path


def atomic_write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (summary.json, run metadata)."""
    _atomic_write(Path(path), lambda h: h.write(json.dumps(data, indent=2, sort_keys=False) + "\n"), "w")


def atomic_write_text(path: Path, text: str) -> None:
    """Write a text file atomically (e.g. rewriting metrics.jsonl on resume)."""
    _atomic_write(Path(path), lambda h: h.write(text), "w")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a binary file atomically (e.g. an exported model)."""
    _atomic_write(Path(path), lambda h: h.write(data), "wb")


def save_checkpoint(path: Path, state: Dict[str, Any]) -> None:
    """Save a training state atomically; a crash mid-save leaves the previous checkpoint intact.

    A filesystem without room for it is refused before anything is written, and a write that fails
    anyway (another process filled the disk) is one CheckpointError line, not a serializer traceback.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    need, free = distinct_storage_bytes(_tensors(state)), shutil.disk_usage(path.parent).free
    if need > free:
        raise CheckpointError(f"no room for checkpoint {path}: it needs {_gib(need)} and {_gib(free)} is free there; "
                              "free disk space or move the run directory (the previous checkpoint is intact)")
    try:
        _atomic_write(path, lambda h: torch.save(state, h), "wb")
    except (OSError, RuntimeError) as err:  # torch's zip writer reports a short write as RuntimeError
        raise CheckpointError(f"could not write checkpoint {path} ({str(err).splitlines()[0] or type(err).__name__}; "
                              f"{_gib(shutil.disk_usage(path.parent).free)} free there); the previous checkpoint is intact") from None


def _tensors(obj: Any) -> Iterator[torch.Tensor]:
    """Every tensor in a nested dict/list/tuple state."""
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from _tensors(value)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            yield from _tensors(value)


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


def load_checkpoint(path: Path, mmap: bool = False) -> Dict[str, Any]:
    """Load a checkpoint on the CPU (tensors only, no pickled code); CheckpointError if unreadable.

    `mmap=True` maps the tensors instead of reading them: cheap when only the config or progress is needed.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as err:  # noqa: BLE001 - any unreadable file is reported the same way
        raise CheckpointError(
            f"checkpoint {path} is unreadable ({type(err).__name__}); delete it or set trainer.overwrite=true"
        ) from None
    if not isinstance(state, dict) or "model" not in state or "progress" not in state:
        raise CheckpointError(f"checkpoint {path} is not a RepL training checkpoint; delete it or set trainer.overwrite=true")
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
