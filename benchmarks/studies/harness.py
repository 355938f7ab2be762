"""Short training runs for the studies, built as `repl.run.train` builds them, with a hook for the method.

`train_run(overrides, run_dir, apply=...)` composes the Hydra config exactly as train.py does, builds the
model, lets `apply(model, cfg)` put a method on it (default: `apply_replacement` with the `repl.*` config,
as a normal run), then trains with the project's Trainer and returns (summary, trained model, data, task).
So a study can combine RepL with something `repl.method` does not offer (stochastic depth) and keep the
trained model in memory (quantization, inference).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from torch import nn

from benchmarks.common import header, write_result

from repl import apply_replacement
from repl.config import TrainConfig, compose, to_config
from repl.data import build_data, num_outputs
from repl.engine import distributed
from repl.engine.trainer import Trainer
from repl.families import discover_blocks
from repl.method.plan import Plan
from repl.models import build_model
from repl.run import seed_everything
from repl.tasks import build_task

Apply = Callable[[nn.Module, TrainConfig], Plan]


def default_apply(model: nn.Module, cfg: TrainConfig) -> Plan:
    """What a normal run does: the configured method (`repl.*`)."""
    return apply_replacement(model, cfg.repl)


def train_run(overrides: List[str], run_dir: Path, apply: Optional[Apply] = None) -> Tuple[Dict[str, Any], nn.Module, Any, Any]:
    """Train one config in-process; returns (summary, model, data module, task). CPU-safe, single process."""
    cfg = to_config(compose(overrides))
    dist = distributed.setup(cfg.trainer.device)
    try:
        seed_everything(cfg.seed)
        data_cfg = cfg.dataset
        model = build_model(cfg.model, num_classes=num_outputs(data_cfg, cfg.task.name), in_chans=data_cfg.in_chans,
                            image_size=data_cfg.input_size)
        block_paths = [b.path for b in discover_blocks(model)] if cfg.trainer.checkpointing else None
        plan = (apply or default_apply)(model, cfg)
        data = build_data(data_cfg, seed=cfg.seed, device=dist.device, rank=dist.rank, world_size=dist.world_size,
                          task=cfg.task.name)
        task = build_task(cfg.task)
        trainer = Trainer(cfg, model, plan, data, task, dist, Path(run_dir), block_paths=block_paths)
        summary = trainer.fit()
        return summary, trainer.model, data, task
    finally:
        distributed.cleanup()


SEQUENTIAL_TIMES = ("Each run's step time is in the JSON; the runs ran one after another on a shared machine, so those "
                    "times are not comparable (benchmarks/cost.py measures time ratios interleaved).")


def report_runs(study: str, runs: Dict[str, Any], settings: Dict[str, Any], load_before: List[float], out_dir: Path,
                markdown: Callable[[Dict[str, Any]], str]) -> Dict[str, Any]:
    """The result of a study made of training runs ({label: {"overrides", "summary"}}): written as
    results/studies/<study>_<model>.{json,md} (and printed), and returned."""
    first = next(iter(runs.values()))["summary"]
    result = header(torch.device("cpu"), settings, load_before)
    result.update({"study": study, "model": first["model"], "primary": first["primary"]["name"], "runs": runs})
    text = markdown(result)
    write_result(out_dir, f"{study}_{first['model']}", result, text)
    return result
