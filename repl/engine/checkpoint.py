"""Atomic writes, resumable checkpoints and RNG state: nothing written is ever half a file."""
from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Optional, Tuple

import numpy as np
import torch

from repl.engine.measure.storage import distinct_storage_bytes
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
    """Load a training checkpoint on the CPU (tensors only, no pickled code); CheckpointError if it is unreadable
    or lacks, or mistypes, any key a resume reads (TRAINING_STATE), so that nothing is built on a broken one.

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
    problem = _structure_problem(state)
    if problem is not None:
        raise CheckpointError(f"checkpoint {path} {problem}; delete it or set trainer.overwrite=true")
    return state


EMA = "ema"  # the training state's key of the EMA's weights (trainer.ema_decay), which the run evaluates and exports
_NUMBER = (int, float)
_NONE = type(None)
# What Trainer.state_dict writes and Trainer.resume / set_rng_state read: (dotted key, accepted types, required).
# A parent comes before its children; the children of an absent optional key are not checked.
TRAINING_STATE: Tuple[Tuple[str, Tuple[type, ...], bool], ...] = (
    ("model", (dict,), True),
    ("optimizer", (dict,), True),
    ("schedule", (dict,), True),
    ("plan", (dict,), True),
    ("config", (dict,), False),  # older checkpoints have none (then the config is not compared)
    ("scaler", (dict,), False),
    (EMA, (dict,), False),
    ("progress", (dict,), True),
    ("progress.epoch", (int,), True),
    ("progress.step_in_epoch", (int,), True),
    ("progress.step", (int,), True),
    ("progress.train_s", _NUMBER, True),
    ("progress.best", _NUMBER + (_NONE,), True),
    ("progress.eval_metrics", (dict,), True),
    ("progress.eval_step", (int, _NONE), True),
    ("progress.phase", (str,), False),  # older checkpoints: the method's phase
    ("progress.phases_entered", (list,), False),
    ("rng", (dict,), True),
    ("rng.python", (dict,), True),
    ("rng.python.version", (int,), True),
    ("rng.python.internal", (list, tuple), True),
    ("rng.python.gauss", (float, _NONE), True),
    ("rng.numpy", (dict,), True),
    ("rng.numpy.keys", (torch.Tensor,), True),
    ("rng.numpy.pos", (int,), True),
    ("rng.numpy.has_gauss", (int,), True),
    ("rng.numpy.gauss", _NUMBER, True),
    ("rng.torch", (torch.Tensor,), True),
    ("rng.cuda", (list, tuple), False),
)


def _structure_problem(state: Dict[str, Any]) -> Optional[str]:
    """What is wrong with a loaded checkpoint's structure (TRAINING_STATE, then its phases), or None."""
    absent = set()
    for key, types, required in TRAINING_STATE:
        parent, _, leaf = key.rpartition(".")
        if parent in absent:
            absent.add(key)
            continue
        holder = _lookup(state, parent) if parent else state
        if leaf not in holder:
            if required:
                return f"lacks '{key}'"
            absent.add(key)
            continue
        value = holder[leaf]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            return f"has {key}={_short(value)} ({type(value).__name__}) where {_names(types)} is expected"
    return _phases_problem(state["progress"])


def _phases_problem(progress: Dict[str, Any]) -> Optional[str]:
    """progress.phase and each of progress.phases_entered: a phase the trainer knows, entered at an epoch and step."""
    from repl.method.schedule import Phase  # lazily: the method package is heavy for the scripts using this module

    known = [phase.value for phase in Phase]
    if progress.get("phase", Phase.METHOD.value) not in known:
        return f"has progress.phase={_short(progress['phase'])} where one of {', '.join(known)} is expected"
    for i, entry in enumerate(progress.get("phases_entered", [])):
        if not (isinstance(entry, dict) and entry.get("phase") in known and isinstance(entry.get("params"), dict)
                and all(isinstance(entry.get(k), int) and not isinstance(entry.get(k), bool) for k in ("epoch", "step"))):
            return (f"has progress.phases_entered[{i}]={_short(entry)} where a dict of phase (one of {', '.join(known)}), "
                    "epoch, step and params is expected")
    return None


def _lookup(state: Dict[str, Any], dotted: str) -> Dict[str, Any]:
    for part in dotted.split("."):
        state = state[part]
    return state


def _short(value: Any) -> str:
    text = repr(value) if not isinstance(value, torch.Tensor) else f"tensor{tuple(value.shape)}"
    return text if len(text) <= 40 else text[:37] + "..."


def _names(types: Tuple[type, ...]) -> str:
    names = {int: "an int", float: "a float", str: "a string", dict: "a dict", list: "a list", tuple: "a tuple",
             _NONE: "None", torch.Tensor: "a tensor"}
    return " or ".join(names.get(t, t.__name__) for t in types)


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
