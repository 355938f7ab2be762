"""INT8 post-training quantization of a baked RepL model: accuracy, size and latency before and after.

1. Train a short run with the project's Trainer (Hydra overrides as for train.py; default: resnet32, RepL lite
   at ratio 0.25, 4 epochs of the embedded dataset, CPU: the README's setting).
2. `bake` it (surrogates become plain modules; the study checks the baked outputs equal the surrogate model's).
3. Quantize on CPU: CNNs by FX graph-mode static PTQ (`torch.ao.quantization.quantize_fx`, x86 backend,
   conv+bn folded, per-channel weights) calibrated on `--calib` training batches; transformers (vit_*, lm) by
   dynamic INT8 quantization of every nn.Linear.
4. Evaluate both on the eval split with the task's own metric, measure the serialized state_dict size, and
   time eval forwards of both (batch 1 and the eval batch size) in interleaved rounds.

    python benchmarks/studies/quantize.py
    python benchmarks/studies/quantize.py model=resnet20 trainer.epochs=1 --calib 4 --rounds 3

Writes results/studies/quantize_<model>.json and .md.
"""
from __future__ import annotations

import argparse
import copy
import io
import itertools
import os
import statistics
import sys
import tempfile
import warnings
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.common import (at_least, header, interleave, output_dir, provenance, script_main, set_threads,  # noqa: E402
                               write_result)
from benchmarks.studies.harness import train_run  # noqa: E402
from repl import bake  # noqa: E402

DEFAULTS = ["trainer.device=cpu", "model=resnet32", "repl.ratio=0.25", "trainer.epochs=4", "trainer.progress=false"]
TRANSFORMERS = ("vit", "lm")


def state_bytes(model: nn.Module) -> int:
    """Bytes of the model's state_dict as torch.save writes it."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.tell()


class CpuMarked(nn.Module):
    """`model` plus an empty CPU parameter: task.evaluate finds the device from the first parameter, and a
    converted FX graph has none."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.marker = nn.Parameter(torch.empty(0), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def quantize(model: nn.Module, name: str, calibration: List[torch.Tensor]) -> tuple[nn.Module, str]:
    """(INT8 model, how): dynamic Linear quantization for transformers, FX static PTQ (x86) for CNNs."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization announces its move to torchao on every call
        if name.startswith(TRANSFORMERS):
            q = torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {nn.Linear}, dtype=torch.qint8)
            return q, "dynamic INT8 nn.Linear (torch.ao.quantization.quantize_dynamic)"
        from torch.ao.quantization import get_default_qconfig_mapping
        from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

        prepared = prepare_fx(copy.deepcopy(model), get_default_qconfig_mapping("x86"), example_inputs=(calibration[0],))
        with torch.no_grad():
            for x in calibration:
                prepared(x)
        return convert_fx(prepared), f"FX static PTQ, x86 backend, {len(calibration)} calibration batches"


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="INT8 PTQ of a baked RepL model: accuracy, size, latency.",
                                     epilog=f"Positional: Hydra overrides after the defaults {' '.join(DEFAULTS)}")
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--calib", type=at_least(1), default=8, help="calibration batches (static PTQ)")
    parser.add_argument("--rounds", type=at_least(1), default=5,
                        help="interleaved timing rounds of the float and the INT8 model (default 5)")
    parser.add_argument("--steps", type=at_least(1), default=5, help="forwards per round per model and batch size")
    parser.add_argument("--threads", type=at_least(0), default=None, help="default 1 (see cost.py), 0 = torch's choice")
    parser.add_argument("--out-dir", type=output_dir, default=str(ROOT / "results" / "studies"))
    return parser.parse_intermixed_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    args = parse_args(argv)
    cpu = torch.device("cpu")
    set_threads(args.threads, cpu)
    load_before = list(os.getloadavg())
    overrides = [*DEFAULTS, *args.overrides]
    with tempfile.TemporaryDirectory(prefix="quantize_") as tmp:
        summary, model, data, task = train_run(overrides, Path(tmp))
    model = model.to(cpu).eval()
    baked = bake(model).eval()
    # (inputs, targets[, split]): image and text tasks alike; the inputs come first
    eval_batches = [tuple(t.to(cpu) if torch.is_tensor(t) else t for t in b) for b in data.eval_batches()]
    with torch.no_grad():
        bake_diff = max((baked(b[0]) - model(b[0])).abs().max().item() for b in eval_batches)
    calibration = [b[0].to(cpu) for b in itertools.islice(data.train_batches(0), args.calib)]
    name = summary["model"]
    int8, how = quantize(baked, name, calibration)
    metrics = {label: task.evaluate(CpuMarked(m), eval_batches, nullcontext()) for label, m in (("fp32", baked), ("int8", int8))}
    x_full = eval_batches[0][0]
    latency: Dict[str, Dict[str, float]] = {}
    with torch.no_grad():
        for size in sorted({1, x_full.shape[0]}):
            x = x_full[:size]
            seconds = interleave([lambda m=baked: m(x), lambda m=int8: m(x)], args.rounds, args.steps, cpu)
            latency[str(size)] = {"fp32_ms": 1e3 * statistics.median(seconds[0]), "int8_ms": 1e3 * statistics.median(seconds[1]),
                                  "speedup": statistics.median(f / q for f, q in zip(*seconds))}
    sizes = {"fp32": state_bytes(baked), "int8": state_bytes(int8)}
    primary = summary["primary"]["name"]
    settings = {"overrides": overrides, "calib": args.calib, "rounds": args.rounds, "steps": args.steps}
    result = header(cpu, settings, load_before)
    result.update({
        "study": "quantize", "model": name, "method": summary["method"], "plan": summary["plan"], "quantization": how,
        "train_summary": {k: summary[k] for k in ("metrics", "params", "time", "steps_done")},
        "bake_max_abs_diff": bake_diff, "metrics": metrics, "primary": primary, "bytes": sizes, "latency": latency,
    })
    lines = ["# INT8 post-training quantization of a baked RepL model", "", provenance(result), "",
             f"{name}, {summary['method']} (blocks {summary['plan']['blocks']}, surrogate "
             f"{summary['plan']['settings']['surrogate']}), trained {summary['steps_done']} steps with "
             f"`{' '.join(overrides)}`; baked (max |baked - surrogate model| on eval: {bake_diff:.1e}); {how}.", "",
             f"| model | eval {primary} | state_dict MiB | " + " | ".join(f"ms/forward, batch {b}" for b in latency) + " |",
             "|---|---:|---:|" + "---:|" * len(latency)]
    for label in ("fp32", "int8"):
        cells = [f"{latency[b][label + '_ms']:.2f}" + (f" (x{latency[b]['speedup']:.2f})" if label == "int8" else "")
                 for b in latency]
        lines.append(f"| baked {label} | {metrics[label][primary]:.2f} | {sizes[label] / 2**20:.3f} | "
                     + " | ".join(cells) + " |")
    lines += ["", f"Latency: median of {args.rounds} interleaved rounds x {args.steps} forwards, "
              f"{result['settings']['threads']} thread(s); x = fp32 / int8 time.", ""]
    text = "\n".join(lines)
    write_result(args.out_dir, f"quantize_{name}", result, text)
    return result


if __name__ == "__main__":
    script_main(main)
