"""RepL composed with stochastic depth: four short training runs on the same data and budget.

BP, RepL, stochastic depth alone (`repl=stochastic_depth`) and RepL + stochastic depth
(`repl.stochastic_depth=true`: RepL's surrogates always run, every block left
trained is skipped per batch with Huang et al.'s linearly decaying survival). Each run is the project's
Trainer on the embedded dataset (default: the README's setting, ResNet-32, 4 epochs); the table gives
accuracy, trainable parameters, training FLOPs (of one sampled step for the stochastic runs) and step time.

    python benchmarks/studies/stochastic_depth.py
    python benchmarks/studies/stochastic_depth.py model=resnet20 trainer.epochs=1 repl.survival_last=0.8

Writes results/studies/stochastic_depth_<model>.json and .md.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.common import at_least, check_training_configs, output_dir, provenance, script_main, set_threads  # noqa: E402
from benchmarks.studies.harness import SEQUENTIAL_TIMES, default_apply, report_runs, train_run  # noqa: E402
from repl.method.registry import Selection, get_method  # noqa: E402

DEFAULTS = ["trainer.device=cpu", "model=resnet32", "trainer.epochs=4", "trainer.progress=false", "repl.ratio=0.25"]


RUNS = {  # label: (extra overrides, how the method is applied)
    "BP": (["repl=none"], default_apply),
    "RepL": ([], default_apply),
    "stochastic depth": (["repl=stochastic_depth"], default_apply),
    "RepL + stochastic depth": (["repl.stochastic_depth=true"], default_apply),
}


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="RepL x stochastic depth: four short training runs.",
                                     epilog=f"Positional: Hydra overrides of every run, after {' '.join(DEFAULTS)}")
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--threads", type=at_least(0), default=None, help="default 1 (see cost.py), 0 = torch's choice")
    parser.add_argument("--out-dir", type=output_dir, default=str(ROOT / "results" / "studies"))
    return parser.parse_intermixed_args(argv)


def markdown(result: Dict[str, Any]) -> str:
    """The table of a result (accuracy, trainable parameters, FLOPs per run)."""
    base, primary = result["settings"]["overrides"], result["primary"]
    lines = ["# RepL with stochastic depth", "", provenance(result), "", f"{result['model']}, `{' '.join(base)}`, one seed.",
             "", f"| run | plan | eval {primary} | trainable params | train GFLOP/step |", "|---|---|---:|---:|---:|"]
    for label, run in result["runs"].items():
        s = run["summary"]
        plan = s["plan"]
        record = get_method(plan["method"])
        sd = bool(plan["settings"].get("stochastic_depth"))  # the switch validates with repl.method=repl only
        what = (f"{record.verb} {plan['blocks']}" if record.selection is Selection.CHOSEN else plan["method"]) + (
            f", stochastic depth on {plan['num_blocks'] - len(plan['blocks'])} trained blocks" if sd else "")
        lines.append(f"| {label} | {what} | {s['primary']['value']:.2f} | {s['params']['trainable']:,} "
                     f"| {s['flops']['train_step'] / 1e9:.2f} |")
    lines += ["", "FLOPs of the stochastic runs are those of the one sampled step the trainer probes. " + SEQUENTIAL_TIMES, ""]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    args = parse_args(argv)
    set_threads(args.threads, torch.device("cpu"))
    load_before = list(os.getloadavg())
    base = [*DEFAULTS, *args.overrides]
    check_training_configs([[*base, *extra] for extra, _ in RUNS.values()])  # before the first run trains
    runs: Dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="stochastic_depth_") as tmp:
        for i, (label, (extra, apply)) in enumerate(RUNS.items()):
            summary, _, _, _ = train_run([*base, *extra], Path(tmp) / str(i), apply=apply)
            runs[label] = {"overrides": [*base, *extra], "summary": summary}
    return report_runs("stochastic_depth", runs, {"overrides": base}, load_before, args.out_dir, markdown)

if __name__ == "__main__":
    script_main(main)
