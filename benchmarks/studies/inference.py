"""Inference throughput of baked RepL models against the BP model, eval mode, interleaved in one process.

Per model: the BP network, the RepL network with its surrogates (weights synthesized at every forward) and
the same network baked (`repl.bake`: plain modules, materialized weights), all from the same seed. Forward
FLOPs, parameters, the largest |baked - surrogate| output difference, and samples (or tokens) per second of
`torch.no_grad()` forwards in interleaved rounds.

    python benchmarks/studies/inference.py
    python benchmarks/studies/inference.py --models resnet50,vit_b --ratio 0.25 --batch resnet50=16

Writes results/studies/inference_<device>.json and .md.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.common import (at_least, header, interleave, output_dir, provenance, resolve_device,  # noqa: E402
                               script_main, set_threads, slug, write_result)
from benchmarks.cost import SPECS, check_ratios, model_names, per_model, ratio_arg, ratio_of  # noqa: E402
from repl import ReplConfig, apply_replacement, bake  # noqa: E402
from repl.engine import measure  # noqa: E402
from repl.families import discover_blocks  # noqa: E402
from repl.method.config import CHOICES  # noqa: E402

DEFAULT_MODELS = "resnet32,resnet110,resnet50,vit_b,lm"


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Eval throughput: BP vs RepL (surrogates) vs RepL baked.")
    parser.add_argument("--models", default=DEFAULT_MODELS, help=f"comma-separated, from {', '.join(SPECS)}")
    parser.add_argument("--ratio", type=ratio_arg, default="max", help="RepL ratio, or 'max' = the model's largest (default)")
    parser.add_argument("--surrogate", default="lite", choices=CHOICES["surrogate"])
    parser.add_argument("--batch", action="append", default=[], metavar="MODEL=B", help="default: cost.py's batch")
    parser.add_argument("--rounds", type=at_least(1), default=3, help="interleaved timing rounds (default 3)")
    parser.add_argument("--steps", type=at_least(1), default=3, help="timed forwards per configuration per round (default 3)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda[:N] (default auto)")
    parser.add_argument("--threads", type=at_least(0), default=None, help="default 1 on CPU (see cost.py), 0 = torch's choice")
    parser.add_argument("--out-dir", type=output_dir, default=str(ROOT / "results" / "studies"), help="default results/studies")
    args = parser.parse_args(argv)
    args.models = model_names(parser, args.models)
    args.batch = per_model(parser, "batch", args.batch)
    return args


def measure_model(name: str, args: argparse.Namespace, device: torch.device) -> Dict[str, Any]:
    spec = SPECS[name]
    batch_size = args.batch.get(name, spec.batch["cuda" if device.type == "cuda" else "cpu"])
    x, _ = spec.make_batch(batch_size, device, torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    bp = spec.build()
    n = len(discover_blocks(bp))
    ratio = ratio_of(args.ratio, n)
    torch.manual_seed(0)
    repl = spec.build()
    plan = apply_replacement(repl, ReplConfig(ratio=ratio, surrogate=args.surrogate))
    models = {"BP": bp, f"RepL {args.surrogate} (surrogates)": repl, f"RepL {args.surrogate} baked": bake(repl)}
    for m in models.values():
        m.to(device).eval()
    items = batch_size * (spec.size if spec.tokens else 1)
    rows: List[Dict[str, Any]] = []
    with torch.no_grad():
        outputs = [m(x) for m in models.values()]
        flops = [measure.train_flops(lambda m=m: m(x)) for m in models.values()]
        seconds = interleave([lambda m=m: m(x) for m in models.values()], args.rounds, args.steps, device)
    for (label, m), f, s in zip(models.items(), flops, seconds):
        rows.append({"label": label, "params": measure.count_parameters(m)["total"], "forward_flops": f,
                     "step_s": statistics.median(s), "rounds_s": s, "throughput": items / statistics.median(s),
                     "time_ratio_to_bp": statistics.median(t / b for t, b in zip(s, seconds[0]))})
    return {"model": name, "batch_size": batch_size, "unit": "tokens" if spec.tokens else "samples",
            "ratio": ratio, "blocks": plan.blocks, "num_blocks": n,
            "baked_max_abs_diff": (outputs[2] - outputs[1]).abs().max().item(), "configs": rows}


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    args = parse_args(argv)
    device = resolve_device(args.device)
    set_threads(args.threads, device)
    load_before = list(os.getloadavg())
    for name in args.models:  # a ratio a model cannot take stops here, before anything is measured, in one line
        check_ratios(SPECS[name], [args.ratio], [args.surrogate], "--ratio")
    models = [measure_model(name, args, device) for name in args.models]
    result = header(device, {"models": args.models, "ratio": args.ratio, "surrogate": args.surrogate,
                             "batch": args.batch, "rounds": args.rounds, "steps": args.steps, "device": str(device)},
                    load_before)
    name = f"inference_{slug(result['hardware']['device'])}"
    result.update({"study": "inference", "json_name": f"{name}.json", "models": models})
    lines = ["# Inference throughput: baked RepL models against BP", "", provenance(result), "",
             f"Eval mode, no_grad, {args.rounds} interleaved rounds x {args.steps} forwards; randomly initialised "
             "weights (throughput does not depend on them). Ratios to BP in parentheses.", "",
             "| model | batch | config | blocks replaced | params | forward GFLOP | ms/forward | throughput/s | max abs diff baked vs surrogates |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for m in models:
        bp = m["configs"][0]
        for c in m["configs"]:
            diff = f"{m['baked_max_abs_diff']:.1e}" if c["label"].endswith("baked") else "-"
            replaced = "-" if c is bp else f"{len(m['blocks'])}/{m['num_blocks']}"
            lines.append(f"| {m['model']} | {m['batch_size']} | {c['label']} | {replaced} | {c['params']:,} "
                         f"({c['params'] / bp['params']:.3f}) | {c['forward_flops'] / 1e9:.2f} "
                         f"({c['forward_flops'] / bp['forward_flops']:.3f}) | {1e3 * c['step_s']:.1f} "
                         f"({c['time_ratio_to_bp']:.3f}) | {c['throughput']:.0f} {m['unit']} | {diff} |")
    lines.append("")
    text = "\n".join(lines)
    write_result(args.out_dir, name, result, text)
    return result


if __name__ == "__main__":
    script_main(main)
