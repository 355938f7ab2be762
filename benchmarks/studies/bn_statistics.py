"""BatchNorm statistics under RepL: one trained model evaluated with batch, running and recalibrated statistics.

RepL's synthesized weights move with both neighbours, and the running statistics (momentum 0.1) lag
behind them. For each row (BP, RepL lite at 0.25, lite and full at the model's largest ratio) and
seed, the project's Trainer trains the model (no recalibration: trainer.bn_recalibrate=0); the
trained model is then evaluated on the eval split
- with batch statistics (every BatchNorm normalises each eval batch by its own mean and variance),
- with its running statistics (what a normal evaluation, the checkpoint and a baked model use),
- with running statistics recalibrated over N training batches (repl/engine/recalibrate.py, as
  trainer.bn_recalibrate=N does before each evaluation), for each N of --recalibrate,
and, for the RepL rows, a second training run whose surrogate BatchNorms use a faster momentum
(--surrogate-momentum; 0 skips it) is evaluated with its running statistics.

    python benchmarks/studies/bn_statistics.py
    python benchmarks/studies/bn_statistics.py --seeds 0 --recalibrate 5,20 model=resnet32 --max-ratio 0.4

Writes results/studies/bn_statistics_<model>.json and .md.
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.common import (at_least, check_training_configs, header, nonnegative_int_list, output_dir,  # noqa: E402
                               provenance, refuse_overrides, script_main, set_threads, write_result)
from benchmarks.studies.harness import train_run  # noqa: E402
from repl.build import Apply, configured_method  # noqa: E402
from repl.config import TrainConfig  # noqa: E402
from repl.errors import ConfigError  # noqa: E402
from repl.engine.recalibrate import batchnorm_modules, calibration_batches, recalibrate_batchnorm  # noqa: E402
from repl.method.plan import Plan  # noqa: E402
from repl.method.surrogates import Surrogate  # noqa: E402

# ResNet-20 (9 blocks, at most 4 replaced: ratio 0.44), 40 steps of 64 per epoch, cut at step 100 of the
# 4-epoch cosine schedule: evaluated mid-schedule (lr ~0.03), as an epoch-end evaluation of a longer run is.
DEFAULTS = ["trainer.device=cpu", "model=resnet20", "dataset.batch_size=64", "dataset.num_train=2560",
            "trainer.epochs=4", "trainer.max_steps=100", "trainer.eval_every=4", "trainer.progress=false",
            "trainer.bn_recalibrate=0"]


def rows(max_ratio: float) -> Dict[str, List[str]]:
    """label: overrides of each trained configuration."""
    return {
        "backprop": ["repl=none"],
        "RepL lite 0.25": ["repl.ratio=0.25"],
        f"RepL lite {max_ratio}": [f"repl.ratio={max_ratio}"],
        f"RepL full {max_ratio}": [f"repl.ratio={max_ratio}", "repl.surrogate=full"],
    }


# Keys every row sets itself (an override of them would be silently replaced, and mislabelled): what to use instead.
OWNED = {"repl": "its rows are backprop and RepL", "repl.method": "its rows are backprop and RepL",
         "repl.ratio": "the RepL rows run 0.25 and --max-ratio; use --max-ratio",
         "repl.surrogate": "its rows run lite and full", "seed": "use --seeds"}


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="BatchNorm statistics: batch vs running vs recalibrated, per row and seed.",
                                     epilog=f"Positional: Hydra overrides of every run, after {' '.join(DEFAULTS)}")
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--seeds", type=nonnegative_int_list, default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    parser.add_argument("--recalibrate", type=nonnegative_int_list, default="5,20,50",
                        help="comma-separated N: recalibration batches (default 5,20,50)")
    parser.add_argument("--max-ratio", type=fraction, default=0.44,
                        help="the model's largest repl.ratio, a number in (0, 1) (default 0.44, resnet20: 4/9)")
    parser.add_argument("--surrogate-momentum", type=float, default=0.5,
                        help="BatchNorm momentum inside surrogates for the extra RepL runs; 0 = no extra runs")
    parser.add_argument("--threads", type=at_least(0), default=None, help="default 1 (see cost.py), 0 = torch's choice")
    parser.add_argument("--out-dir", type=output_dir, default=str(ROOT / "results" / "studies"))
    return parser.parse_intermixed_args(argv)


def fraction(value: str) -> float:
    """--max-ratio: a number in (0, 1) (else one line naming what is accepted)."""
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if not 0 < number < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number between 0 and 1")
    return number


def surrogate_momentum(momentum: float) -> Apply:
    """The configured method, then every BatchNorm inside a surrogate set to `momentum`."""
    def apply(model: nn.Module, cfg: TrainConfig) -> Plan:
        plan = configured_method(model, cfg)
        for module in model.modules():
            if isinstance(module, Surrogate):
                for norm in batchnorm_modules(module.body):
                    norm.momentum = momentum
        return plan
    return apply


def primary(model: nn.Module, data: Any, task: Any) -> float:
    """The task's primary metric on the eval split, the model in eval mode (then back in train mode)."""
    model.eval()
    try:
        return task.evaluate(model, data.eval_batches(), nullcontext())[task.primary]
    finally:
        model.train()


def with_batch_statistics(model: nn.Module) -> nn.Module:
    """A copy whose BatchNorms normalise every batch by its own statistics, in eval mode too."""
    plain = copy.deepcopy(model)
    for norm in batchnorm_modules(plain):
        norm.track_running_stats = False
        norm.running_mean = norm.running_var = norm.num_batches_tracked = None
    return plain


def recalibrated(model: nn.Module, data: Any, task: Any, epoch: int, steps: int) -> tuple:
    """(a copy with statistics recalibrated over `steps` training batches from `epoch` on, seconds it took)."""
    fresh = copy.deepcopy(model)
    start = time.perf_counter()
    recalibrate_batchnorm(fresh, calibration_batches(data, epoch), task.loss, steps)
    return fresh, time.perf_counter() - start


def measure_model(model: nn.Module, data: Any, task: Any, epoch: int, steps: List[int]) -> Dict[str, Any]:
    """Every column of one trained model."""
    out: Dict[str, Any] = {"batch": primary(with_batch_statistics(model), data, task), "running": primary(model, data, task),
                           "recalibrated": {}, "recalibrate_s": {}}
    for n in steps:
        fresh, seconds = recalibrated(model, data, task, epoch, n)
        out["recalibrated"][str(n)] = primary(fresh, data, task)
        out["recalibrate_s"][str(n)] = seconds
    return out


def mean(values: List[float]) -> str:
    """'mean ± sd' over seeds (just the value for one seed)."""
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def markdown(result: Dict[str, Any]) -> str:
    """The table: one row per trained configuration, mean ± sd over seeds of every column."""
    st = result["settings"]
    steps, momentum = st["recalibrate"], st["surrogate_momentum"]
    cols = ["batch stats", "running stats", *[f"recalibrated N={n}" for n in steps]]
    if momentum:
        cols.append(f"running, surrogate momentum {momentum}")
    lines = ["# BatchNorm statistics under RepL", "", provenance(result), "",
             f"{result['model']}, `{' '.join(st['overrides'])}`, seeds {', '.join(map(str, st['seeds']))}: eval "
             f"{result['primary']} (mean ± sd over seeds).", "",
             "| run | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for label, row in result["rows"].items():
        seeds = row["seeds"]
        cells = [mean([s["batch"] for s in seeds]), mean([s["running"] for s in seeds]),
                 *[mean([s["recalibrated"][str(n)] for s in seeds]) for n in steps]]
        if momentum:
            fast = [s["surrogate_momentum_running"] for s in seeds if "surrogate_momentum_running" in s]
            cells.append(mean(fast) if fast else "n/a")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    step_s = statistics.mean(s["step_s"] for row in result["rows"].values() for s in row["seeds"])
    costs = ", ".join(f"N={n}: {statistics.mean(s['recalibrate_s'][str(n)] for row in result['rows'].values() for s in row['seeds']):.2f} s"
                      for n in steps)
    lines += ["", f"Recalibration cost per evaluation (N forwards without gradient, mean over runs): {costs}; "
                  f"one training step took {step_s:.2f} s (runs one after another on a shared machine).", ""]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    args = parse_args(argv)
    set_threads(args.threads, torch.device("cpu"))
    load_before = list(os.getloadavg())
    seeds, steps = args.seeds, args.recalibrate
    refuse_overrides(args.overrides, OWNED)
    base = [*DEFAULTS, *args.overrides]
    # every row's configuration and plan (--max-ratio on this model), before the first run trains
    try:
        check_training_configs([[*base, *extra, f"seed={seeds[0]}"] for extra in rows(args.max_ratio).values()])
    except ConfigError as err:
        raise ConfigError(f"--max-ratio: {err}" if str(err).startswith(f"repl.ratio={args.max_ratio} ") else str(err)) from None
    table: Dict[str, Any] = {}
    first: Dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bn_statistics_") as tmp:
        for r, (label, extra) in enumerate(rows(args.max_ratio).items()):
            per_seed = []
            for seed in seeds:
                overrides = [*base, *extra, f"seed={seed}"]
                summary, model, data, task = train_run(overrides, Path(tmp) / f"{r}_{seed}")
                first = first or summary
                record = measure_model(model, data, task, summary["epochs_done"], steps)
                record.update(seed=seed, plan=summary["plan"]["blocks"], step_s=summary["time"]["step_s"],
                              trainer_eval=summary["primary"]["value"])
                if args.surrogate_momentum and any(isinstance(m, Surrogate) for m in model.modules()):
                    fast, fast_model, fast_data, _ = train_run(overrides, Path(tmp) / f"{r}_{seed}_m",
                                                               apply=surrogate_momentum(args.surrogate_momentum))
                    record["surrogate_momentum_running"] = fast["primary"]["value"]
                    record["surrogate_momentum_batch"] = primary(with_batch_statistics(fast_model), fast_data, task)
                per_seed.append(record)
            table[label] = {"overrides": [*base, *extra], "seeds": per_seed}
    settings = {"overrides": base, "seeds": seeds, "recalibrate": steps, "max_ratio": args.max_ratio,
                "surrogate_momentum": args.surrogate_momentum}
    result = header(torch.device("cpu"), settings, load_before)
    result.update({"study": "bn_statistics", "model": first["model"], "primary": first["primary"]["name"], "rows": table})
    write_result(args.out_dir, f"bn_statistics_{first['model']}", result, markdown(result))
    return result


if __name__ == "__main__":
    script_main(main)
