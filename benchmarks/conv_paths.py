"""Which CPU kernel torch runs for each convolution of a model, and what oneDNN would take for the same work.

torch picks a CPU convolution backend per call. For a 1x1, unstrided float32 convolution on a batch under 16
with one thread, it takes its own `thnn` path (an im2col-free GEMM through the BLAS torch was built with) over
oneDNN's (`mkldnn_convolution`); every other convolution here goes to oneDNN. Where the BLAS runs slower than
oneDNN (MKL on an AMD CPU, for one), the 1x1 convolutions of a small batch run slower per FLOP than the 3x3
ones, and a network that loses its 3x3 convolutions (ResNet-50 `lite`) saves fewer seconds than FLOPs:
`cost.py`'s gap, from the hardware and torch's choice rather than from RepL. This measures it: per convolution
of the model at the given batch, the forward through torch's choice (the kernel it ran, read from the profiler)
and through oneDNN directly (`torch.mkldnn_convolution`), interleaved, with their outputs compared.

    python benchmarks/conv_paths.py                              # ResNet-50 at batch 2, one thread
    python benchmarks/conv_paths.py --model resnet50 --batch 16 --tag b16

Writes results/bench/conv_paths_cpu[_<tag>].json and .md. Forward only: torch's backward re-selects the same
backend by the same rule, and oneDNN's backward cannot be called apart from it.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.profiler import profile

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a clone without `pip install -e .`

from benchmarks.common import (at_least, closing_lines, header, output_dir, provenance, round_order,  # noqa: E402
                               script_main, set_threads, slug, steady_allocator, write_result)
from benchmarks.cost import SPECS  # noqa: E402

PATHS = {"slow_conv2d": "thnn", "thnn_conv": "thnn", "mkldnn_convolution": "onednn"}  # profiler event -> path
# (in_channels, out_channels, kernel, stride, padding, dilation, groups, input H, input W)
Shape = Tuple[int, int, Tuple[int, ...], Tuple[int, ...], Tuple[int, ...], Tuple[int, ...], int, int, int]


def conv_shapes(model: nn.Module, x: torch.Tensor) -> Dict[Shape, int]:
    """Every Conv2d call of one forward of `model` on `x`, as {shape: calls}."""
    seen: Dict[Shape, int] = defaultdict(int)

    def hook(module: nn.Conv2d, args: Tuple[torch.Tensor, ...]) -> None:
        h, w = args[0].shape[-2:]
        seen[(module.in_channels, module.out_channels, tuple(module.kernel_size), tuple(module.stride),
              tuple(module.padding), tuple(module.dilation), module.groups, int(h), int(w))] += 1

    handles = [m.register_forward_pre_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return dict(seen)


def kernel_path(fn: Callable[[], Any]) -> str:
    """The backend torch ran `fn`'s convolution on: thnn | onednn | the op's name where neither matched."""
    with profile() as prof:
        fn()
    names = {event.name for event in prof.events()}
    found = {path for key, path in PATHS.items() if any(key in name for name in names)}
    return "+".join(sorted(found)) or ", ".join(sorted(n for n in names if "conv" in n))


def flops(shape: Sequence[Any], batch: int) -> int:
    """Forward FLOPs of one call (2 per multiply-add), as the project's FLOP counter counts a convolution."""
    cin, cout, kernel, stride, padding, dilation, groups, h, w = shape
    out = [(size + 2 * p - d * (k - 1) - 1) // s + 1 for size, k, s, p, d in zip((h, w), kernel, stride, padding, dilation)]
    return 2 * batch * cout * (cin // groups) * kernel[0] * kernel[1] * out[0] * out[1]


def measure_shape(shape: Shape, batch: int, rounds: int, generator: torch.Generator) -> Dict[str, Any]:
    """Median forward seconds through torch's choice and through oneDNN, interleaved, and the largest difference of
    their outputs relative to the output's scale."""
    cin, cout, kernel, stride, padding, dilation, groups, h, w = shape
    x = torch.randn(batch, cin, h, w, generator=generator)
    weight = torch.randn(cout, cin // groups, *kernel, generator=generator) / (cin // groups * kernel[0] * kernel[1]) ** 0.5
    calls = {
        "torch": lambda: F.conv2d(x, weight, None, stride, padding, dilation, groups),
        "onednn": lambda: torch.mkldnn_convolution(x, weight, None, padding, stride, dilation, groups),
    }
    with torch.no_grad():
        outputs = {name: fn() for name, fn in calls.items()}  # (also the warm-up: oneDNN builds its kernel here)
        path = kernel_path(calls["torch"])
        seconds: Dict[str, List[float]] = {name: [] for name in calls}
        names = list(calls)
        for r in range(rounds):
            for i in round_order(len(names), r):
                start = time.perf_counter()
                calls[names[i]]()
                seconds[names[i]].append(time.perf_counter() - start)
    scale = outputs["torch"].abs().max().item() or 1.0
    return {"shape": list(shape), "flops": flops(shape, batch), "torch_path": path,
            "seconds": {name: statistics.median(s) for name, s in seconds.items()},
            "max_rel_diff": (outputs["torch"] - outputs["onednn"]).abs().max().item() / scale}


def kind(shape: Sequence[Any]) -> str:
    """'conv 1x1', 'conv 3x3 stride 2': the row a convolution is summed in."""
    kernel, stride = shape[2], shape[3]
    return "conv " + "x".join(map(str, kernel)) + (f" stride {'x'.join(map(str, stride))}" if max(stride) > 1 else "")


def markdown(result: Dict[str, Any]) -> str:
    """Per kind of convolution: calls, FLOPs, the path torch took, ms and ms/GFLOP on each path."""
    st = result["settings"]
    lines = ["# Which kernel runs each convolution on this CPU: torch's choice against oneDNN", "", provenance(result), "",
             f"{st['model']} at batch {st['batch']}: every convolution of one forward, each timed alone (median of "
             f"{st['rounds']} interleaved calls, forward only, float32, NCHW). 'torch' is `F.conv2d` (torch picks the "
             "backend: `thnn` = its own GEMM path through the BLAS, `onednn` = mkldnn_convolution), 'oneDNN' is "
             "`torch.mkldnn_convolution` called directly. ms are summed over the model's calls of that kind.", "",
             "| convolution | calls | GFLOP | torch's path | torch ms | torch ms/GFLOP | oneDNN ms | oneDNN ms/GFLOP | torch / oneDNN |",
             "|---|---:|---:|---|---:|---:|---:|---:|---:|"]
    rows: Dict[str, Dict[str, Any]] = {}
    for conv in result["convolutions"]:
        row = rows.setdefault(kind(conv["shape"]), {"calls": 0, "flops": 0, "paths": set(), "torch": 0.0, "onednn": 0.0})
        row["calls"] += conv["calls"]
        row["flops"] += conv["calls"] * conv["flops"]
        row["paths"].add(conv["torch_path"])
        for name in ("torch", "onednn"):
            row[name] += conv["calls"] * conv["seconds"][name]
    for name, row in sorted(rows.items(), key=lambda item: -item[1]["flops"]):
        gflop = row["flops"] / 1e9
        lines.append(f"| {name} | {row['calls']} | {gflop:.2f} | {', '.join(sorted(row['paths']))} | "
                     f"{1e3 * row['torch']:.1f} | {1e3 * row['torch'] / gflop:.2f} | {1e3 * row['onednn']:.1f} | "
                     f"{1e3 * row['onednn'] / gflop:.2f} | {row['torch'] / row['onednn']:.2f} |")
    worst = max(conv["max_rel_diff"] for conv in result["convolutions"])
    lines += ["", f"Both paths compute the same convolution: largest output difference {worst:.1e} of the output's "
              "largest magnitude (float32 sums in another order).", ""]
    lines += closing_lines(result, "Every convolution shape with its path and times")
    return "\n".join(lines)


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="CPU convolution kernels of a model: torch's choice against oneDNN.")
    images = [name for name, spec in SPECS.items() if not spec.tokens]
    parser.add_argument("--model", default="resnet50", help=f"one of {', '.join(images)} (default resnet50)")
    parser.add_argument("--batch", type=at_least(1), default=None, help="batch size (default: cost.py's CPU batch for the model)")
    parser.add_argument("--rounds", type=at_least(1), default=15, help="timed calls per convolution and path (default 15)")
    parser.add_argument("--threads", type=at_least(1), default=1, help="torch.set_num_threads (default 1, as cost.py on CPU)")
    parser.add_argument("--out-dir", type=output_dir, default=str(ROOT / "results" / "bench"), help="default results/bench")
    parser.add_argument("--tag", default="", help="suffix of the result files: conv_paths_cpu_<tag>.json / .md")
    parser.add_argument("--note", action="append", default=[], help="a line for the results' notes (repeatable)")
    args = parser.parse_args(argv)
    if args.model not in images:
        why = "reads tokens and has no convolutions" if args.model in SPECS else "is not a model cost.py knows"
        parser.error(f"--model: {args.model} {why}; choose from {', '.join(images)}")
    if not torch.backends.mkldnn.is_available():
        parser.error("this torch build has no oneDNN (torch.backends.mkldnn.is_available() is False)")
    return args


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Measure every convolution of the model, write results/bench/conv_paths_cpu[_<tag>].json and .md."""
    args = parse_args(argv)
    device = torch.device("cpu")
    set_threads(args.threads, device)
    steady = steady_allocator()
    load_before = list(os.getloadavg())
    spec = SPECS[args.model]
    batch = args.batch or spec.batch["cpu"]
    torch.manual_seed(0)
    model = spec.build().eval()
    x, _ = spec.make_batch(batch, device, torch.Generator().manual_seed(0))
    generator = torch.Generator().manual_seed(0)
    convolutions = [{**measure_shape(shape, batch, args.rounds, generator), "calls": calls}
                    for shape, calls in conv_shapes(model, x).items()]
    result = header(device, {"model": args.model, "batch": batch, "rounds": args.rounds, "steady_malloc": steady,
                             "argv": list(argv) if argv is not None else sys.argv[1:]}, load_before)
    name = "conv_paths_" + slug(result["hardware"]["device"]) + (f"_{slug(args.tag)}" if args.tag else "")
    result.update({"benchmark": "conv_paths", "notes": list(args.note), "json_name": f"{name}.json",
                   "convolutions": convolutions})
    write_result(args.out_dir, name, result, markdown(result))
    return result


if __name__ == "__main__":
    script_main(main)
