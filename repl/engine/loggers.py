"""Metric sinks: metrics.jsonl (always, rank 0) and optionally Weights & Biases."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Dict, Optional

from repl.engine.checkpoint import atomic_write_text
from repl.engine.config import LoggerConfig
from repl.errors import ConfigError


class MetricsLog:
    """Append-only JSON lines, one object per logged step or epoch."""

    def __init__(self, path: Path, cfg: LoggerConfig, run_config: Optional[Dict[str, Any]] = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._wandb = None
        if cfg.name == "wandb":
            self._wandb = _start_wandb(cfg, self.path.parent, run_config or {})

    def truncate_after(self, step: int) -> None:
        """On resume: drop records logged after the checkpoint, which the resumed run logs again."""
        if not self.path.exists():
            return
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                if json.loads(line).get("step", 0) <= step:
                    kept.append(line)
            except json.JSONDecodeError:  # a line cut by a kill mid-write
                continue
        atomic_write_text(self.path, "".join(f"{line}\n" for line in kept))

    def log(self, record: Dict[str, Any]) -> None:
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        if self._wandb is not None:
            self._wandb.log({k: v for k, v in record.items() if isinstance(v, (int, float))}, step=record.get("step"))

    def close(self, summary: Optional[Dict[str, Any]] = None) -> None:
        if self._wandb is not None:
            if summary:
                self._wandb.summary.update({"primary": summary.get("primary", {}).get("value")})
            self._wandb.finish()
            self._wandb = None


def _start_wandb(cfg: LoggerConfig, run_dir: Path, run_config: Dict[str, Any]):
    """A wandb run writing into the run directory; offline unless configured otherwise."""
    try:
        import wandb
    except ImportError:
        raise ConfigError("logger=wandb needs the wandb package: pip install -e '.[wandb]'") from None
    return wandb.init(project=cfg.project, entity=cfg.entity, mode=cfg.mode, dir=str(run_dir),
                      tags=list(cfg.tags), config=run_config, resume="allow", id=run_id(run_dir))


def run_id(run_dir: Path) -> str:
    """A stable id per run directory, so a resumed run continues its wandb run."""
    return hashlib.sha1(str(Path(run_dir).resolve()).encode()).hexdigest()[:16]
