"""A run directory's state, decided once before anything is built: completed, resumable or fresh.

Results are never lost or falsified: a completed run is left byte for byte as it is, a partial one
resumes from checkpoints/last.pt, and only leftovers of an attempt that can no longer be resumed
(its metrics.jsonl and summary.json without a checkpoint, half-written temporary files) are removed
before a fresh start. Nothing is removed or rewritten until the run is built (`begin`): a run refused
by any check (a missing dataset, a ratio too large, trainer.overwrite=true with a typo) leaves the
directory as it found it, its `.hydra/` record of the config included. Summaries written later keep
the stored measurements where the new process measured nothing (a resume with no step left runs
neither the probe nor the timer; what nobody measured is null).
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional

from repl.engine.checkpoint import atomic_write_json, atomic_write_text, load_checkpoint
from repl.engine.config import TrainerConfig
from repl.engine.resume_check import check_resume_config
from repl.engine.status import RunStatus
from repl.errors import CheckpointError, ConfigError

SUMMARY = "summary.json"
METRICS = "metrics.jsonl"
ENV = "env.json"
PATCH = "env.patch"  # with a dirty checkout: `git diff HEAD` and the untracked files (repl/engine/measure/env.py)
HISTORY = "history.jsonl"  # one line per process that trained in the directory (append_history)
RECORD = ".hydra"  # the composed config, Hydra's config and the overrides, as Hydra names them (begin)
CHECKPOINTS = "checkpoints"
LAST = "last.pt"
BEST = "best.pt"
# Files the run writes atomically, through ".<name>.<random>.tmp" beside them (checkpoint._atomic_write).
ATOMIC = {".": (SUMMARY, METRICS, ENV, PATCH), CHECKPOINTS: (LAST, BEST)}
# (section, field) of summary.json that one process measures; 0 means this process measured nothing.
MEASURED = (("flops", "train_step", ()), ("memory", "estimate_bytes", ("estimate_breakdown",)),
            ("memory", "peak_bytes", ("peak_source",)), ("time", "step_s", ()), ("time", "epoch_s", ()),
            ("throughput", "train_per_s", ()))

COMPLETED, RESUME, FRESH = "completed", "resume", "fresh"  # RunDirState.state (summary.json's status: RunStatus)


@dataclass(frozen=True)
class RunDirState:
    """What a run directory holds at start, and what this run does with it."""

    path: Path
    state: str  # completed | resume | fresh
    summary: Optional[Dict[str, Any]]  # the stored summary.json when it is a JSON object

    @property
    def completed(self) -> bool:
        """The directory holds a run completed to this config's length: nothing to train (done_line says so)."""
        return self.state == COMPLETED

    def done_line(self) -> str:
        """The one line a rerun of a completed run prints."""
        primary = self.summary["primary"]  # a completed state's summary has one (inspect)
        return f"run already completed: {self.path} ({primary.get('name')}={primary.get('value')}); nothing to do"


def read_summary(run_dir: Path) -> Optional[Dict[str, Any]]:
    """summary.json as a dict; None when absent, unreadable or not a JSON object."""
    try:
        summary = json.loads((Path(run_dir) / SUMMARY).read_text())
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) else None


def has_results(run_dir: Path) -> bool:
    """Does the directory hold anything a run wrote (a summary, metrics or a checkpoint)?"""
    run_dir = Path(run_dir)
    return any(p.exists() for p in (run_dir / SUMMARY, run_dir / METRICS, run_dir / CHECKPOINTS / LAST))


def reached(summary: Dict[str, Any], tcfg: TrainerConfig) -> bool:
    """Did the stored run train as long as `tcfg` asks (its epochs, or its max_steps)?

    Exact without knowing the steps per epoch: the loop stops at min(epochs * per_epoch, max_steps).
    """
    epochs, steps = summary.get("epochs_done"), summary.get("steps_done")
    if not (isinstance(epochs, int) and isinstance(steps, int)):
        return False
    return epochs >= tcfg.epochs or (tcfg.max_steps is not None and steps >= tcfg.max_steps)


def inspect(run_dir: Path, tcfg: TrainerConfig, config: Optional[Dict[str, Any]] = None) -> RunDirState:
    """Decide what this run does with `run_dir`; refuses (one line) what would lose a result.

    `config` (the run's whole config as a dict): a completed run counts as this run only if its
    checkpoint was trained with the same fixed keys (resume_check); otherwise it is refused, not returned.
    """
    run_dir = Path(run_dir)
    summary = read_summary(run_dir)
    checkpoint = (run_dir / CHECKPOINTS / LAST).exists()
    if tcfg.overwrite or not has_results(run_dir):
        return RunDirState(run_dir, FRESH, summary)
    if not tcfg.resume:
        raise ConfigError(f"trainer.resume=false but {run_dir} already holds a run; rerun without it to resume, "
                          "add trainer.overwrite=true to discard that run and start over, or use another run directory")
    completed = summary is not None and summary.get("status") == RunStatus.COMPLETED and isinstance(summary.get("primary"), dict)
    if completed and reached(summary, tcfg):
        if checkpoint and config is not None:
            last = run_dir / CHECKPOINTS / LAST
            check_resume_config(load_checkpoint(last, mmap=True).get("config"), config, last)
        return RunDirState(run_dir, COMPLETED, summary)
    if checkpoint:
        if config is not None:  # a resume with changed settings is refused here, before the directory is touched
            last = run_dir / CHECKPOINTS / LAST
            check_resume_config(load_checkpoint(last, mmap=True).get("config"), config, last)
        return RunDirState(run_dir, RESUME, summary)
    if completed:
        raise CheckpointError(f"{run_dir} holds a completed run of {summary.get('steps_done')} steps but no "
                              f"{CHECKPOINTS}/{LAST} to continue it to this config's length; use another run "
                              "directory or trainer.overwrite=true")
    return RunDirState(run_dir, FRESH, summary)


def check_writable(run_dir: Path) -> None:
    """ConfigError, before anything is built, when the run directory or its checkpoints/ cannot be written."""
    for folder in (Path(run_dir), Path(run_dir) / CHECKPOINTS):
        if not folder.is_dir():
            continue  # made by the run inside a folder checked here
        try:
            fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-check.", suffix=".tmp")
        except OSError as err:
            raise ConfigError(f"cannot write the run directory {folder}: {err.strerror or err}; make it writable or "
                              "choose another with hydra.run.dir=DIR (hydra.sweep.dir=DIR with -m)") from None
        os.close(fd)
        os.unlink(probe)


def begin(state: RunDirState, record: Optional[Dict[str, str]] = None) -> None:
    """Rank 0, once the run is built and every check passed: clear what a resume or a fresh start must not find,
    and write `record` ({file name: text}: the config as composed for this run) into .hydra/."""
    remove_stale_tmp(state.path)
    if state.state == FRESH:
        for path in (SUMMARY, METRICS, HISTORY, Path(CHECKPOINTS) / LAST, Path(CHECKPOINTS) / BEST):
            (state.path / path).unlink(missing_ok=True)
    for name, text in (record or {}).items():
        atomic_write_text(state.path / RECORD / name, text)


def append_history(run_dir: Path, record: Dict[str, Any]) -> None:
    """Append one JSON line to history.jsonl (never rewritten): one write of the whole line, then fsync. A line a
    kill cut short is left as it is and the next record starts on a line of its own; readers skip what is not JSON."""
    path = Path(run_dir) / HISTORY
    line = json.dumps(record) + "\n"
    with path.open("a+b") as handle:
        handle.seek(0, os.SEEK_END)
        if handle.tell():
            handle.seek(-1, os.SEEK_END)
            if handle.read(1) != b"\n":
                line = "\n" + line
        handle.write(line.encode())
        handle.flush()
        os.fsync(handle.fileno())


def read_history(run_dir: Path) -> list:
    """The records of history.jsonl, oldest first (lines that are not JSON objects skipped); [] without one."""
    try:
        lines = (Path(run_dir) / HISTORY).read_text().splitlines()
    except OSError:
        return []
    records = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def remove_stale_tmp(run_dir: Path) -> list:
    """Delete the temporary files of atomic writes a kill interrupted (a checkpoint's can be gigabytes)."""
    removed = []
    for folder, names in ATOMIC.items():
        for name in names:
            for tmp in (Path(run_dir) / folder).glob(f".{name}.*.tmp"):
                tmp.unlink(missing_ok=True)
                removed.append(tmp)
    return removed


def keep_measured(stored: Optional[Dict[str, Any]], new: Dict[str, Any]) -> Dict[str, Any]:
    """`new`, with the stored measurement wherever this process measured nothing (0) and the run had one."""
    if not stored:
        return new
    merged = dict(new)
    for section, key, companions in MEASURED:
        old_part, new_part = stored.get(section), new.get(section)
        if not (isinstance(old_part, dict) and isinstance(new_part, dict)):
            continue
        if not new_part.get(key) and old_part.get(key):
            merged[section] = {**merged[section], **{k: old_part[k] for k in (key, *companions) if k in old_part}}
    return merged


def write_summary(run_dir: Path, summary: Dict[str, Any]) -> Dict[str, Any]:
    """Write summary.json atomically, keeping stored measurements the new one lacks; returns what was written."""
    merged = keep_measured(read_summary(run_dir), summary)
    atomic_write_json(Path(run_dir) / SUMMARY, merged)
    return merged


def record_failure(run_dir: Path, error: BaseException, steps_done: int, epochs_done: int) -> None:
    """Mark the run failed, keeping everything its summary already held (params, FLOPs, metrics)."""
    stored = read_summary(run_dir) or {}
    progress = {"steps_done": steps_done, "epochs_done": epochs_done}
    if steps_done == 0 and "steps_done" in stored:  # it failed before its first step: the stored progress stands
        progress = {}
    error_text = f"{type(error).__name__}: {error}"
    atomic_write_json(Path(run_dir) / SUMMARY, {**stored, "status": RunStatus.FAILED.value, "error": error_text, **progress})
