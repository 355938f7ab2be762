"""Where a training step's time goes, by kind of operation, next to where its FLOPs are: BP against RepL.

`cost.py` reports the gap (time ratio / FLOP ratio). This says where it comes from: every aten op of a
forward + backward is timed (a TorchDispatchMode, wall clock around the op, the device synchronized on
CUDA) and its FLOPs counted with the project's FLOP rules (repl.engine.measure.flops), grouped by kind
(a convolution by kernel size and phase, matmuls, then each other op by name), for BP, RepL, RepL's network
with its surrogates materialized (baked; --no-baked drops it) and, with --kept, RepL with the other settings of
repl.recompute (kept, rebuilt). An op kind whose time share is smaller than
its FLOP share runs faster per FLOP than the rest of the step: removing it saves fewer seconds than FLOPs.

    python benchmarks/op_time.py --models resnet50                  # BP, lite at the largest ratio, baked
    python benchmarks/op_time.py --models resnet32,resnet50 --steps 5 --surrogate full --ratio 0.25
    python benchmarks/op_time.py --models resnet110 --kept        # also with the weights kept / always rebuilt

Writes results/bench/op_time_<device>[_<tag>].json and .md. The timed steps run under the dispatch mode
(a few microseconds per op); the table also gives each configuration's uninstrumented step time.
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a clone without `pip install -e .`

from benchmarks.common import (at_least, closing_lines, header, interleave, json_name,  # noqa: E402
                               other_recompute_settings, partial_note, provenance, resolve_device, round_order,
                               script_main, set_threads, slug, steady_allocator, write_partial, write_result)
from benchmarks.cost import (BAKED, SPECS, ModelSpec, add_run_options, check_ratios, loss_of,  # noqa: E402
                             model_names, per_model, ratio_arg, ratio_of)  # noqa: E402
from repl import ReplConfig, apply_replacement  # noqa: E402
from repl.engine import measure  # noqa: E402
from repl.engine.measure.flops import flop_counter  # noqa: E402
from repl.families import discover_blocks  # noqa: E402
from repl.method.bake import bake  # noqa: E402
from repl.method.config import CHOICES  # noqa: E402
from repl.method.recompute import in_backward  # noqa: E402

aten = torch.ops.aten
CONVOLUTIONS = {aten.convolution: 8, aten.convolution_backward: 9}  # op -> position of its `groups` argument
MATMULS = {aten.mm, aten.addmm, aten.bmm, aten.baddbmm}
MIN_SHARE = 0.01  # an op kind's FLOP share below which its time per FLOP and FLOP ratio are not shown
ROWS = 14  # op kinds listed per model (the slowest in any configuration) before "other ops"


def op_kind(func: Any, args: Sequence[Any]) -> str:
    """The row an aten op is counted in: `conv 3x3`, `conv 7x7 grouped`, `matmul`, else the op's name; each with
    its phase (` (backward)` while autograd runs a backward pass)."""
    packet = func.overloadpacket
    if packet in CONVOLUTIONS:
        weight = args[2] if packet is aten.convolution_backward else args[1]
        groups = args[CONVOLUTIONS[packet]]
        kind = "conv " + "x".join(str(k) for k in weight.shape[2:]) + (" grouped" if groups > 1 else "")
    elif packet in MATMULS:
        kind = "matmul"
    else:
        kind = packet.__name__
    return kind + (" (backward)" if in_backward() else "")


class OpTimer(TorchDispatchMode):
    """Seconds and FLOPs per op kind of everything run under it. FLOPs are read from `counter`, a FlopCounterMode
    entered before this mode (so it sees each op after this mode passes it on), when one is given."""

    def __init__(self, device: torch.device, counter: Optional[Any] = None) -> None:
        super().__init__()
        self.device = device
        self.counter = counter
        self.seconds: Dict[str, float] = defaultdict(float)
        self.flops: Dict[str, int] = defaultdict(int)
        self.calls: Dict[str, int] = defaultdict(int)

    def __torch_dispatch__(self, func: Any, types: Any, args: Sequence[Any] = (), kwargs: Optional[Dict[str, Any]] = None) -> Any:
        kind = op_kind(func, args)
        before = self.counter.get_total_flops() if self.counter is not None else 0
        measure.synchronize(self.device)
        start = time.perf_counter()
        out = func(*args, **(kwargs or {}))
        measure.synchronize(self.device)
        self.seconds[kind] += time.perf_counter() - start
        self.calls[kind] += 1
        if self.counter is not None:
            self.flops[kind] += self.counter.get_total_flops() - before
        return out


def count_flops(step: Callable[[], Any], device: torch.device) -> OpTimer:
    """One step under the FLOP counter and an OpTimer reading it: FLOPs and calls per op kind."""
    counter = flop_counter()
    with counter, OpTimer(device, counter) as counted:
        step()
    return counted


def interleaved_op_seconds(steps: Sequence[Callable[[], Any]], device: torch.device, rounds: int) -> List[List[Dict[str, float]]]:
    """Seconds per op kind of every step, one instrumented step of each per round, the order reversing every
    round (as cost.py's timing), so that drift on a shared machine hits all configurations alike."""
    per_round: List[List[Dict[str, float]]] = [[] for _ in steps]
    for r in range(rounds):
        for i in round_order(len(steps), r):
            with OpTimer(device) as timer:
                steps[i]()
            per_round[i].append(dict(timer.seconds))
    return per_round


def summarize(counted: OpTimer, per_round: List[Dict[str, float]], walls: List[float]) -> Dict[str, Any]:
    """Per op kind: median seconds over rounds, FLOPs and calls of one step; the median uninstrumented step."""
    kinds = sorted(set(counted.seconds) | {k for s in per_round for k in s})
    return {"wall_s": statistics.median(walls),
            "seconds": {k: statistics.median(s.get(k, 0.0) for s in per_round) for k in kinds},
            "flops": {k: counted.flops.get(k, 0) for k in kinds}, "calls": {k: counted.calls.get(k, 0) for k in kinds}}


def measure_model(spec: ModelSpec, args: argparse.Namespace, device: torch.device) -> Dict[str, Any]:
    """BP, RepL (with the other repl.recompute settings, and its baked twin) of one model: per op kind, seconds and FLOPs of a forward + backward."""
    batch_size = args.batch.get(spec.key, spec.batch["cuda" if device.type == "cuda" else "cpu"])
    memory_format = spec.memory_format(args.channels_last)
    batch = spec.make_batch(batch_size, device, torch.Generator().manual_seed(0), memory_format)
    loss_fn = loss_of(spec)
    torch.manual_seed(0)
    template = spec.build()
    num_blocks = len(discover_blocks(template))
    ratio = ratio_of(args.ratio, num_blocks)
    default = ReplConfig().recompute
    # (label, RepL applied: its repl.recompute, or None for BP; surrogates baked)
    configs: List[Tuple[str, Optional[Union[bool, str]], bool]] = [("bp", None, False), (args.surrogate, default, False)]
    if args.kept:
        configs += [(f"{args.surrogate} {suffix}", setting, False) for suffix, setting in other_recompute_settings()]
    if args.baked:
        configs.append((f"{args.surrogate} {BAKED}", default, True))
    models: List[nn.Module] = []
    for _, recompute, baked in configs:
        model = copy.deepcopy(template)
        if recompute is not None:
            apply_replacement(model, ReplConfig(ratio=ratio, surrogate=args.surrogate, recompute=recompute))
        models.append((bake(model) if baked else model).to(device, memory_format=memory_format).train())

    def step_of(model: nn.Module) -> Callable[[], None]:
        def step() -> None:
            loss_fn(model, batch).backward()
            model.zero_grad(set_to_none=True)
        return step

    steps = [step_of(m) for m in models]
    for step in steps:  # warm-up: allocator, oneDNN primitive caches
        step()
    counted = [count_flops(step, device) for step in steps]
    walls = interleave(steps, args.steps, 1, device)  # the uninstrumented step
    per_round = interleaved_op_seconds(steps, device, args.steps)
    rows = [{"label": label, **summarize(c, s, w)} for (label, _, _), c, s, w in zip(configs, counted, per_round, walls)]
    return {"model": spec.key, "batch_size": batch_size, "num_blocks": num_blocks, "ratio": ratio, "configs": rows}


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.3f}" if b else ""


def markdown(result: Dict[str, Any]) -> str:
    """One table per model: each op kind's ms and GFLOP per step in BP and in each RepL configuration."""
    lines = ["# Where the training step's time goes: BP against RepL, by kind of op", "", provenance(result), "",
             f"Forward + backward (no optimizer step); median over {result['settings']['steps']} interleaved rounds of one "
             f"instrumented step{' (malloc keeping freed memory)' if result['settings']['steady_malloc'] else ''}"
             f"{', channels-last (NHWC) images and weights' if result['settings'].get('channels_last') else ''}. "
             "Share = of the configuration's own op time / FLOPs. 'ms/GFLOP' = time per unit of work "
             "(lower is faster).", ""]
    for m in result["models"]:
        bp, *repl = m["configs"]
        totals = {c["label"]: (sum(c["seconds"].values()), sum(c["flops"].values())) for c in m["configs"]}
        kinds = {k for c in m["configs"] for k in c["seconds"]}
        shown = sorted(kinds, key=lambda k: -max(c["seconds"].get(k, 0.0) for c in m["configs"]))[:ROWS]
        lines += [f"## {m['model']}: batch {m['batch_size']}, ratio {m['ratio']:.3f} ({len(repl) and repl[0]['label']})", "",
                  "| op | BP ms | BP time share | BP FLOP share | BP ms/GFLOP | "
                  + " | ".join(f"{c['label']} ms (time; FLOPs vs BP)" for c in repl) + " |",
                  "|---|---:|---:|---:|---:|" + "---:|" * len(repl)]

        def row(name: str, pick: Callable[[Dict[str, Any], str], float], flops: Callable[[Dict[str, Any]], float]) -> str:
            t, f = pick(bp, "seconds"), flops(bp)
            share = f / totals["bp"][1] if totals["bp"][1] else 0.0
            cells = [name, f"{1e3 * t:.1f}", f"{t / totals['bp'][0]:.3f}", f"{share:.3f}" if f else "",
                     f"{1e3 * t / (f / 1e9):.2f}" if share >= MIN_SHARE else ""]
            cells += [f"{1e3 * pick(c, 'seconds'):.1f} ({_ratio(pick(c, 'seconds'), t)}"
                      + (f"; FLOP {_ratio(flops(c), f)})" if share >= MIN_SHARE else ")") for c in repl]
            return "| " + " | ".join(cells) + " |"

        for kind in shown:
            lines.append(row(kind, lambda c, key, k=kind: c[key].get(k, 0.0), lambda c, k=kind: c["flops"].get(k, 0)))
        rest = lambda c, key: sum(v for k, v in c[key].items() if k not in shown)  # noqa: E731
        lines.append(row("other ops", rest, lambda c: rest(c, "flops")))
        lines.append(row("**all ops**", lambda c, key: sum(c[key].values()), lambda c: totals[c["label"]][1]))
        lines.append("| step, uninstrumented | " + f"{1e3 * bp['wall_s']:.1f} | | | | "
                     + " | ".join(f"{1e3 * c['wall_s']:.1f} ({_ratio(c['wall_s'], bp['wall_s'])})" for c in repl) + " |")
        lines.append("")
        flop_ratio = ", ".join(f"{c['label']} {_ratio(totals[c['label']][1], totals['bp'][1])}" for c in repl)
        time_ratio = ", ".join(f"{c['label']} {_ratio(totals[c['label']][0], totals['bp'][0])}" for c in repl)
        lines += [f"FLOP ratio to BP: {flop_ratio}. Op-time ratio to BP: {time_ratio}.", ""]
    lines += closing_lines(result, "Every op kind, with call counts")
    return "\n".join(lines)


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Time and FLOPs per kind of op of a training step, BP against RepL.")
    parser.add_argument("--models", default="resnet50", help=f"comma-separated, from {', '.join(SPECS)} (default resnet50)")
    parser.add_argument("--ratio", type=ratio_arg, default="max", help="RepL's ratio; 'max' = the model's largest (default)")
    parser.add_argument("--surrogate", default="lite", choices=CHOICES["surrogate"], help="default lite")
    parser.add_argument("--kept", action="store_true",
                        help="also RepL with the other settings of repl.recompute (default auto): 'kept' keeps the "
                             "synthesized weights for backward, 'rebuilt' always rebuilds them there; to see what "
                             "the rebuild costs per op")
    parser.add_argument("--no-baked", dest="baked", action="store_false",
                        help="leave out the baked twin (RepL's network with its surrogates materialized)")
    parser.add_argument("--batch", action="append", default=[], metavar="MODEL=B", help="batch size for a model")
    parser.add_argument("--steps", type=at_least(1), default=3, help="instrumented (and uninstrumented) steps (default 3)")
    add_run_options(parser, "op_time")
    args = parser.parse_args(argv)
    args.models = model_names(parser, args.models)
    args.batch = per_model(parser, "batch", args.batch)
    return args


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Profile every model, write results/bench/op_time_<device>.json and .md, return the result dict; what is
    measured so far is written after each model but the last as op_time_<device>.partial.* (common.write_partial)."""
    args = parse_args(argv)
    device = resolve_device(args.device)
    set_threads(args.threads, device)
    steady = args.steady_malloc and device.type == "cpu" and steady_allocator()
    load_before = list(os.getloadavg())
    for m in args.models:  # a ratio a model cannot take stops here, before anything is measured, in one line
        check_ratios(SPECS[m], [args.ratio], [args.surrogate], "--ratio")
    settings = {**{k: getattr(args, k) for k in ("models", "ratio", "surrogate", "kept", "baked", "batch", "steps",
                                                "channels_last")},
                "steady_malloc": steady}

    def report(models: List[Dict[str, Any]], pending: Sequence[str] = ()) -> Tuple[str, Dict[str, Any]]:
        result = header(device, {**settings, "device": str(device),
                                 "argv": list(argv) if argv is not None else sys.argv[1:]}, load_before)
        name = f"op_time_{slug(result['hardware']['device'])}" + (f"_{slug(args.tag)}" if args.tag else "")
        notes = list(args.note) + ([partial_note(pending)] if pending else [])
        result.update({"benchmark": "op_time", "notes": notes, "json_name": json_name(name, pending), "models": models})
        return name, result

    models: List[Dict[str, Any]] = []
    for i, m in enumerate(args.models):
        models.append(measure_model(SPECS[m], args, device))
        if args.models[i + 1:]:
            name, result = report(models, args.models[i + 1:])
            write_partial(args.out_dir, name, result, markdown(result))
    name, result = report(models)
    write_result(args.out_dir, name, result, markdown(result))
    return result


if __name__ == "__main__":
    script_main(main)
