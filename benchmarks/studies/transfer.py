"""Transfer learning with RepL: pretrain with backprop on one task, fine-tune with RepL on another.

The source task is the embedded dataset generated from `--source-seed` (other class textures), the target
task the one from `seed` of the overrides (default 0). Three fine-tuning runs on the target, same budget:
RepL from the pretrained weights (`model.weights=FILE`, loaded before the surgery, so the replaced blocks'
own weights are discarded and their neighbours' feed the surrogates), RepL from scratch, and backprop from
the pretrained weights. Hub weights (`model.pretrained=true`, timm models such as resnet50 / vit_b) need
network access to the Hugging Face hub or a filled cache; this study uses a file so it runs offline.

    python benchmarks/studies/transfer.py
    python benchmarks/studies/transfer.py model=resnet20 trainer.epochs=1 --pretrain-epochs 2

Writes results/studies/transfer_<model>.json and .md.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.common import at_least, check_training_configs, output_dir, provenance, script_main, set_threads  # noqa: E402
from benchmarks.studies.harness import SEQUENTIAL_TIMES, report_runs, train_run  # noqa: E402

# repl.ratio=0.25 is a default: the user's repl.* overrides (ratio, surrogate, method) come after it and win,
# and the RepL runs' labels are read from the configuration they ran with.
DEFAULTS = ["trainer.device=cpu", "model=resnet32", "trainer.epochs=2", "trainer.progress=false", "repl.ratio=0.25"]
RUNS = {  # label (METHOD: the configured method, as it ran): overrides of the fine-tuning run besides DEFAULTS and the user's
    "METHOD, from pretrained": ["WEIGHTS"],
    "METHOD, from scratch": [],
    "BP, from pretrained": ["repl=none", "WEIGHTS"],
}


def without_repl(overrides: Sequence[str]) -> List[str]:
    """The overrides but those of the repl group and its keys."""
    return [o for o in overrides if not o.lstrip("+~").startswith(("repl.", "repl="))]


def method_label(cfg: Any) -> str:
    """What a fine-tuning run's configured method is, for its row: 'repl lite 0.25', 'BP', 'drop 0.25' (the
    method's record says which switches it reads)."""
    repl = cfg.repl
    if repl.is_plain_backprop:
        return "BP"
    record = repl.record
    parts = [repl.method, repl.surrogate if "surrogate" in record.switches else "",
             f"{repl.ratio:g}" if record.uses_ratio else ""]
    return " ".join(part for part in parts if part)


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Pretrain with BP on one synthetic task, fine-tune with RepL on another.",
                                     epilog=f"Positional: Hydra overrides of every run, after {' '.join(DEFAULTS)}")
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--source-seed", type=int, default=1, help="seed of the pretraining task (default 1)")
    parser.add_argument("--pretrain-epochs", type=at_least(1), default=4,
                        help="epochs of backprop on the source task (default 4)")
    parser.add_argument("--threads", type=at_least(0), default=None, help="default 1 (see cost.py), 0 = torch's choice")
    parser.add_argument("--out-dir", type=output_dir, default=str(ROOT / "results" / "studies"))
    return parser.parse_intermixed_args(argv)


def markdown(result: Dict[str, Any]) -> str:
    """The table of a result (accuracy, trainable parameters, steps, FLOPs per run)."""
    st, primary = result["settings"], result["primary"]
    lines = ["# Transfer learning: BP pretraining, RepL fine-tuning", "", provenance(result), "",
             f"{result['model']}; source task: embedded dataset with seed {st['source_seed']} ({st['pretrain_epochs']} "
             f"epochs of BP); target task: the embedded dataset with the runs' seed (default 0), fine-tuning runs "
             f"`{' '.join(st['overrides'])}`, all with that budget.", "",
             f"| run | eval {primary} | trainable params | steps | train GFLOP/step |", "|---|---:|---:|---:|---:|"]
    for label, run in result["runs"].items():
        s = run["summary"]
        lines.append(f"| {label} | {s['primary']['value']:.2f} | {s['params']['trainable']:,} | {s['steps_done']} "
                     f"| {s['flops']['train_step'] / 1e9:.2f} |")
    lines += ["", SEQUENTIAL_TIMES, ""]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    args = parse_args(argv)
    set_threads(args.threads, torch.device("cpu"))
    load_before = list(os.getloadavg())
    base = [*DEFAULTS, *args.overrides]
    plain = without_repl(base)  # the backprop runs: repl=none, none of the repl.* settings of the RepL runs
    source = [*plain, "repl=none", f"seed={args.source_seed}", f"trainer.epochs={args.pretrain_epochs}"]
    finetune = [[*(plain if "repl=none" in extra else base), *extra] for extra in RUNS.values()]
    # every run's configuration and plan, before the pretraining starts (the weights file does not exist yet)
    configs = check_training_configs([source, *([o for o in run if o != "WEIGHTS"] for run in finetune)])
    labels = [label.replace("METHOD", method_label(cfg)) for label, cfg in zip(RUNS, configs[1:])]
    runs: Dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="transfer_") as tmp:
        pretrain, model, _, _ = train_run(source, Path(tmp) / "pretrain")
        weights = Path(tmp) / "pretrained.pt"
        torch.save(model.state_dict(), weights)
        runs["pretrain (BP, source task)"] = {"overrides": source, "summary": pretrain}
        for i, (label, run) in enumerate(zip(labels, finetune)):
            overrides = [f"model.weights={weights}" if o == "WEIGHTS" else o for o in run]
            summary, _, _, _ = train_run(overrides, Path(tmp) / str(i))
            runs[label] = {"overrides": [o.replace(str(weights), "PRETRAINED.pt") for o in overrides], "summary": summary}
    settings = {"overrides": base, "source_seed": args.source_seed, "pretrain_epochs": args.pretrain_epochs}
    return report_runs("transfer", runs, settings, load_before, args.out_dir, markdown)

if __name__ == "__main__":
    script_main(main)
