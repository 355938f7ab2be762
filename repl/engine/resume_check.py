"""Resume only what was asked: a checkpoint's config against this run's, for the keys that cannot change.

A resumed run continues the checkpoint's optimizer state, schedule and weights, so a changed
optimizer, lr, method, model, task, seed or data would silently not take effect, while the run
dir's .hydra/config.yaml records it. Such a change is refused in one line naming each key with its
old and new value. Keys that only say how long to train, where the data is read from or what is
logged may change (e.g. trainer.epochs to extend a run).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

from repl.config import FREE_DICTS
from repl.errors import CheckpointError
from repl.method.plan import RESUME_KEYS, Plan

FIXED_ON_RESUME = ("seed", "model", "repl", "task", "optim", "dataset", "trainer.precision", "trainer.grad_clip",
                   "trainer.ema_decay", "trainer.accumulate")  # what is trained, and how: key or group prefixes
# Same data, or the same gradients computed another way (repl.recompute is bitwise-identical, tested).
FREE_ON_RESUME = ("dataset.root", "dataset.download", "dataset.num_workers", "dataset.eval_batch_size", "repl.recompute")


def check_resume_config(saved: Optional[Dict[str, Any]], current: Dict[str, Any], checkpoint: Path) -> None:
    """CheckpointError naming every fixed key whose value differs between the checkpoint's config and this run's.

    A key missing from either side (a checkpoint older than the key) is not compared.
    """
    if saved is None:
        return
    changed = changed_keys(saved, current)
    if changed:
        what = ", ".join(f"{key} {old!r} -> {new!r}" for key, old, new in changed)
        raise CheckpointError(f"checkpoint {checkpoint} was trained with other settings ({what}); these cannot change on "
                              "resume: rerun with the checkpoint's values, use another run directory, or trainer.overwrite=true to start over")


def check_resume_plan(saved: Plan, current: Plan, checkpoint: Path) -> None:
    """CheckpointError naming what differs between the checkpoint's plan and this run's (blocks, method, settings)."""
    if saved.same_as(current):
        return
    changed = differences({k: getattr(saved, k) for k in RESUME_KEYS}, {k: getattr(current, k) for k in RESUME_KEYS})
    what = ", ".join(f"{key} {old!r} -> {new!r}" for key, (old, new) in changed.items())
    raise CheckpointError(f"checkpoint {checkpoint} was trained with another plan ({what}); "
                          "use another run directory or trainer.overwrite=true to start over")


def changed_keys(saved: Dict[str, Any], current: Dict[str, Any]) -> List[Tuple[str, Any, Any]]:
    """(key, saved value, current value) for each fixed key set in both configs with different values."""
    old, new = dict(_flatten(saved)), dict(_flatten(current))
    return [(key, old[key], new[key]) for key in sorted(old.keys() & new.keys())
            if _fixed(key) and old[key] != new[key]]


def differences(saved: Dict[str, Any], current: Dict[str, Any]) -> Dict[str, List[Any]]:
    """{dotted key: [saved value, current value]} for every key whose value differs (absent on a side: None)."""
    old, new = dict(_flatten(saved)), dict(_flatten(current))
    return {key: [old.get(key), new.get(key)] for key in sorted(old.keys() | new.keys()) if old.get(key) != new.get(key)}


def _fixed(key: str) -> bool:
    def under(prefixes: Tuple[str, ...]) -> bool:
        return any(key == p or key.startswith(f"{p}.") for p in prefixes)
    return under(FIXED_ON_RESUME) and not under(FREE_ON_RESUME)


def _flatten(config: Dict[str, Any], prefix: str = "") -> Iterator[Tuple[str, Any]]:
    """Dotted keys and leaf values of a nested config; lists and free dicts (model.kwargs) are values."""
    for key, value in config.items():
        if isinstance(value, dict) and f"{prefix}{key}" not in FREE_DICTS:
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value
