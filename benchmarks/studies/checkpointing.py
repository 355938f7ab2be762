"""RepL with activation checkpointing: memory and time of BP and RepL, each with and without checkpointing.

Checkpointing is applied as the Trainer applies it with `trainer.checkpointing=true`
(`repl.engine.trainer.enable_activation_checkpointing` on every block of the sequence, surrogates
included). Per configuration: bytes of tensors saved for backward, the train-state estimate, the CUDA
peak of a step (GPU only), training FLOPs (checkpointing recomputes the blocks' forwards), step time
interleaved in rounds, and whether the gradients equal the same model's without checkpointing.

    python benchmarks/studies/checkpointing.py                        # resnet32, lite at the largest ratio
    python benchmarks/studies/checkpointing.py --model resnet110 --ratio 0.25 --surrogate full
    python train.py experiment=study_checkpointing                    # the same combination in a training run

Writes results/studies/checkpointing_<device>.json and .md.
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.common import (at_least, cuda_allocated, header, interleave, mib, output_dir, provenance,  # noqa: E402
                               resolve_device, script_main, set_threads, slug, step_peak, write_result)
from benchmarks.cost import SPECS, check_ratios, loss_of, make_optimizer, ratio_arg, ratio_of  # noqa: E402
from repl import ReplConfig, apply_replacement  # noqa: E402
from repl.engine import measure  # noqa: E402
from repl.engine.trainer import enable_activation_checkpointing  # noqa: E402
from repl.families import discover_blocks  # noqa: E402
from repl.method.config import CHOICES  # noqa: E402


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="RepL x activation checkpointing: memory, FLOPs, time, gradient parity.")
    parser.add_argument("--model", default="resnet32", choices=sorted(SPECS))
    parser.add_argument("--ratio", type=ratio_arg, default="max", help="RepL ratio, or 'max' = the model's largest (default)")
    parser.add_argument("--surrogate", default="lite", choices=CHOICES["surrogate"])
    parser.add_argument("--batch", type=at_least(1), default=None, help="default: the cost benchmark's batch for the device")
    parser.add_argument("--rounds", type=at_least(1), default=3, help="interleaved timing rounds (default 3)")
    parser.add_argument("--steps", type=at_least(1), default=2, help="timed steps per configuration per round (default 2)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda[:N] (default auto)")
    parser.add_argument("--threads", type=at_least(0), default=None, help="default 1 on CPU (see cost.py), 0 = torch's choice")
    parser.add_argument("--out-dir", type=output_dir, default=str(ROOT / "results" / "studies"), help="default results/studies")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    args = parse_args(argv)
    device = resolve_device(args.device)
    set_threads(args.threads, device)
    load_before = list(os.getloadavg())
    spec = SPECS[args.model]
    check_ratios(spec, [args.ratio], [args.surrogate], "--ratio")  # before anything is measured, in one line
    batch_size = args.batch or spec.batch["cuda" if device.type == "cuda" else "cpu"]
    batch = spec.make_batch(batch_size, device, torch.Generator().manual_seed(0))
    loss_fn = loss_of(spec)
    torch.manual_seed(0)
    template = spec.build()
    paths = [b.path for b in discover_blocks(template)]
    n = len(paths)
    ratio = ratio_of(args.ratio, n)
    rows: List[Dict[str, Any]] = []
    steps = []
    for label, replaced in (("BP", 0.0), (f"RepL {args.surrogate}", ratio)):  # ratio 0 is plain backprop
        grads = None
        for ckpt in (False, True):
            base = cuda_allocated(device)
            model = copy.deepcopy(template)
            plan = apply_replacement(model, ReplConfig(ratio=replaced, surrogate=args.surrogate))
            model.to(device).train()
            if ckpt:
                enable_activation_checkpointing(model, paths)
            optimizer = make_optimizer(spec.optim, model)
            probe = measure.probe_step(model, loss_fn, batch, optimizer)
            loss_fn(model, batch).backward()
            now = [p.grad.clone() for p in model.parameters()]
            model.zero_grad(set_to_none=True)
            parity = None if grads is None else max((a - b).abs().max().item() for a, b in zip(grads, now))
            grads = now

            def step(model=model, optimizer=optimizer) -> None:
                loss_fn(model, batch).backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)

            step()
            peak = step_peak(step, device, base)
            steps.append(step)
            rows.append({"label": f"{label}{' + checkpointing' if ckpt else ''}",
                         "method": plan.method, "checkpointing": ckpt, "blocks": plan.blocks,
                         "trainable": measure.count_parameters(model)["trainable"], "flops": probe["flops"],
                         "memory": {**probe["memory"], "cuda_peak": peak},
                         "grad_max_abs_diff_vs_no_checkpointing": parity})
    seconds = interleave(steps, args.rounds, args.steps, device)
    for row, s in zip(rows, seconds):
        row["time"] = {"step_s": statistics.median(s), "rounds_s": s,
                       "ratio_to_bp": statistics.median(t / b for t, b in zip(s, seconds[0]))}
    settings = {"model": args.model, "ratio": ratio, "surrogate": args.surrogate, "batch": batch_size,
                "rounds": args.rounds, "steps": args.steps, "device": str(device)}
    result = header(device, settings, load_before)
    name = f"checkpointing_{slug(result['hardware']['device'])}"
    result.update({"study": "checkpointing", "json_name": f"{name}.json", "configs": rows})
    bp = rows[0]
    lines = ["# RepL with activation checkpointing", "", provenance(result), "",
             f"{args.model}, batch {batch_size}, RepL {args.surrogate} at ratio {ratio:.3f} ({len(rows[2]['blocks'])} "
             f"of {n} blocks); checkpointing wraps every block (surrogates included) as `trainer.checkpointing=true` "
             f"does. Ratios to BP without checkpointing in parentheses.", "",
             "| config | trainable | saved activations MiB | train state MiB | CUDA peak MiB | GFLOP/step | ms/step "
             "| grads vs no checkpointing (max abs diff) |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        m = r["memory"]
        peak = "n/a (CPU)" if m["cuda_peak"] is None else f"{mib(m['cuda_peak'])} ({m['cuda_peak'] / bp['memory']['cuda_peak']:.3f})"
        parity = "-" if r["grad_max_abs_diff_vs_no_checkpointing"] is None else f"{r['grad_max_abs_diff_vs_no_checkpointing']:.1e}"
        lines.append(f"| {r['label']} | {r['trainable']:,} | {mib(m['activations'])} ({m['activations'] / bp['memory']['activations']:.3f}) "
                     f"| {mib(m['total'])} ({m['total'] / bp['memory']['total']:.3f}) | {peak} "
                     f"| {r['flops'] / 1e9:.2f} ({r['flops'] / bp['flops']:.3f}) "
                     f"| {1e3 * r['time']['step_s']:.1f} ({r['time']['ratio_to_bp']:.3f}) | {parity} |")
    lines += ["", "Saved activations under checkpointing are what stays stored outside the recomputed regions "
              "(block inputs and the stem/head); the recomputation shows in FLOPs and time.", ""]
    text = "\n".join(lines)
    write_result(args.out_dir, name, result, text)
    return result


if __name__ == "__main__":
    script_main(main)
