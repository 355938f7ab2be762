"""Metric sinks: metrics.jsonl (always, rank 0) and optionally Weights & Biases.

Keys carry a namespace and, where it is not obvious, a unit: `train/loss`, `train/lr`,
`train/throughput(samples/s)`, `train/grad_norm`, `memory/...(bytes)`, `eval/<metric>` (README,
"What a run records"). The wandb run starts at the first record, so that a run resumed from a checkpoint
older than its last record rewinds the wandb run to the checkpoint (`resume_from`) instead of having
the re-logged steps dropped as already seen.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Optional

from repl.engine.checkpoint import atomic_write_text
from repl.errors import ConfigError, install_hint

if TYPE_CHECKING:  # repl.engine.config asks this module for the backends
    from repl.engine.config import LoggerConfig

JSONL, WANDB = "jsonl", "wandb"
BACKENDS = (JSONL, WANDB)  # logger.backend: metrics.jsonl is always written; wandb mirrors it
SUMMARY_SECTIONS = ("params", "flops", "memory", "time", "throughput")  # numeric leaves go to the wandb summary


class MetricsLog:
    """Append-only JSON lines, one object per logged window or evaluation; mirrored to wandb when configured."""

    def __init__(self, path: Path, cfg: LoggerConfig, run_config: Optional[Dict[str, Any]] = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._wandb = None
        self._wandb_settings: Optional[Dict[str, Any]] = None
        if cfg.backend == WANDB:
            _import_wandb()  # a missing package stops the run before training
            experiment = (run_config or {}).get("experiment_name")
            self._wandb_settings = {**wandb_settings(cfg, self.path.parent, experiment), "config": run_config or {}}
        self._rewind_to: Optional[int] = None

    def truncate_after(self, step: int) -> None:
        """On resume: drop records logged after the checkpoint, which the resumed run logs again."""
        if not self.path.exists():
            return
        kept, dropped = [], 0
        for line in self.path.read_text().splitlines():
            try:
                if json.loads(line).get("step", 0) <= step:
                    kept.append(line)
                else:
                    dropped += 1
            except json.JSONDecodeError:  # a line cut by a kill mid-write
                continue
        atomic_write_text(self.path, "".join(f"{line}\n" for line in kept))
        if dropped:
            self._rewind_to = step

    def log(self, record: Dict[str, Any]) -> None:
        """Append `record` as one line of metrics.jsonl; its numbers (less "step") go to wandb at its step."""
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        run = self._wandb_run()
        if run is not None:
            run.log({k: v for k, v in record.items() if isinstance(v, (int, float)) and k != "step"}, step=record.get("step"))

    def close(self, summary: Optional[Dict[str, Any]] = None, exit_code: int = 0) -> None:
        """Finish the wandb run: its summary gets every measurement of `summary`; a non-zero exit code marks it failed."""
        run = self._wandb_run() if summary is not None or self._wandb is not None else None
        if run is None:
            return
        if summary:
            run.summary.update(wandb_summary(summary))
        run.finish(exit_code=exit_code)
        self._wandb = None
        self._wandb_settings = None  # finished: a later record starts no new run

    def _wandb_run(self):
        """The wandb run, started on first use (rewound to the checkpoint when records were dropped)."""
        if self._wandb is None and self._wandb_settings is not None:
            wandb = _import_wandb()
            settings = dict(self._wandb_settings)
            if self._rewind_to is not None:
                settings["resume_from"] = f"{settings['id']}?_step={self._rewind_to}"
            else:
                settings["resume"] = "allow"
            self._wandb = wandb.init(**settings)
        return self._wandb


def _import_wandb():
    try:
        import wandb
    except ImportError:
        raise ConfigError(f"logger=wandb needs the wandb package: {install_hint('wandb')}") from None
    return wandb


def wandb_settings(cfg: LoggerConfig, run_dir: Path, experiment: Optional[str]) -> Dict[str, Any]:
    """wandb.init's arguments: the config's value, else the WANDB_* variable, else the default (offline, "repl")."""
    run_dir = Path(run_dir)
    return {
        "mode": cfg.wandb_mode(),
        "project": cfg.project or os.environ.get("WANDB_PROJECT") or "repl",
        "entity": cfg.entity or os.environ.get("WANDB_ENTITY") or None,
        "group": cfg.group or experiment,
        "name": cfg.name or f"{run_dir.parent.name}/{run_dir.name}",
        "job_type": cfg.job_type,
        "tags": list(cfg.tags),
        "dir": str(run_dir),
        "id": run_id(run_dir),
    }


def wandb_summary(summary: Dict[str, Any]) -> Dict[str, Any]:
    """summary.json's measurements as flat wandb summary keys: params/total, flops/train_step,
    memory/peak_bytes, time/train_s, throughput/train_per_s, final/<metric> (every one), primary, status."""
    flat: Dict[str, Any] = {"status": summary.get("status"), "primary": (summary.get("primary") or {}).get("value"),
                            "steps_done": summary.get("steps_done"), "epochs_done": summary.get("epochs_done")}
    for section in SUMMARY_SECTIONS:
        _flatten(summary.get(section) or {}, section, flat)
    _flatten(summary.get("metrics") or {}, "final", flat)
    return {k: v for k, v in flat.items() if v is not None}


def _flatten(values: Dict[str, Any], prefix: str, into: Dict[str, Any]) -> None:
    for key, value in values.items():
        if isinstance(value, dict):
            _flatten(value, f"{prefix}/{key}", into)
        elif isinstance(value, (int, float, str)):
            into[f"{prefix}/{key}"] = value


def run_id(run_dir: Path) -> str:
    """A stable id per run directory, so a resumed run continues its wandb run."""
    return hashlib.sha1(str(Path(run_dir).resolve()).encode()).hexdigest()[:16]
