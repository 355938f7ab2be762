"""Short training runs for the studies, built by `repl.build.build_run` as train.py builds them, with a hook
for the method.

`train_run(overrides, run_dir, apply=...)` composes the Hydra config exactly as train.py does and builds the
run, with `apply(model, cfg)` putting a method on the model (default: the configured `repl.*`, as a normal
run), then trains it with the project's Trainer and returns (summary, trained model, data, task). So a study
can combine RepL with something `repl.method` does not offer (stochastic depth) and keep the trained model
in memory (quantization, inference).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from torch import nn

from benchmarks.common import header, train_config, write_result

from repl.build import Apply, build_run, configured_method
from repl.engine import distributed

default_apply = configured_method  # what a normal run does: the configured method (`repl.*`)


def train_run(overrides: List[str], run_dir: Path, apply: Optional[Apply] = None) -> Tuple[Dict[str, Any], nn.Module, Any, Any]:
    """Train one config in-process; returns (summary, model, data module, task). CPU-safe, single process."""
    cfg = train_config(overrides)
    dist = distributed.setup(cfg.trainer.device)
    try:
        run = build_run(cfg, Path(run_dir), dist, apply=apply)
        summary = run.trainer.fit()
        return summary, run.model, run.data, run.task
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
