"""What RepL costs and saves against end-to-end backprop (BP), per model, measured interleaved in one process.

For each model: BP, then RepL at each ratio (default 0.25 and the model's largest) with each surrogate
(lite, full). Per configuration: trainable parameters, optimizer-state bytes, activation memory (bytes of
tensors saved for backward), the device-independent training-state estimate, the CUDA allocator peak of
a step (GPU only), training FLOPs per step (forward + backward, torch.utils.flop_counter) and the median
step time (forward, loss, backward, optimizer step), each as an absolute and as a ratio to BP.

    python benchmarks/cost.py                                    # the default suite (CPU: a few minutes)
    python benchmarks/cost.py --models resnet32,resnet110 --rounds 5 --steps 4
    python benchmarks/cost.py --models resnet50 --batch resnet50=8 --ratios 0.25
    python benchmarks/cost.py --models vit_b,lm --surrogates lite --recompute --tag recompute   # also kept / rebuilt
    python benchmarks/cost.py --device cuda --precision bf16 --compile --tag bf16_compile   # on a GPU

Writes results/bench/cost_<device>.json and .md (see benchmarks/README.md).
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a clone without `pip install -e .`

from benchmarks.common import (at_least, closing_lines, cuda_allocated, header,  # noqa: E402
                               interleave, json_name, mib, name_list, other_recompute_settings, output_dir, partial_note,
                               provenance, resolve_device, script_main, set_threads, slug, spread, steady_allocator,
                               step_peak, write_partial, write_result)
from repl import ReplConfig, apply_replacement  # noqa: E402
from repl.engine import measure  # noqa: E402
from repl.engine.optim import ADAMW, SGD  # noqa: E402
from repl.engine.precision import Precision, autocast  # noqa: E402
from repl.families import discover_blocks  # noqa: E402
from repl.errors import ConfigError  # noqa: E402
from repl.method.apply import plan_replacement  # noqa: E402
from repl.method.bake import bake  # noqa: E402
from repl.method.config import CHOICES, SurrogateKind  # noqa: E402
from repl.method.plan import max_replaceable, replace_count  # noqa: E402
from repl.models import build_model  # noqa: E402
from repl.models.config import ModelConfig  # noqa: E402

Batch = Tuple[torch.Tensor, torch.Tensor]
BAKED = "baked"  # label suffix of the rows timed with the surrogates materialized (--baked)
GOAL_GAP = 1.05  # lite: (time ratio) / (FLOP ratio) should stay at or under this on every row


@dataclass(frozen=True)
class ModelSpec:
    """One model of the suite: registry name, input, batch per device kind, optimizer."""

    name: str
    inputs: str  # "image" ([B, 3, size, size], class labels) | "tokens" ([B, size] tokens, next-token targets)
    size: int  # image side or sequence length
    classes: int  # classes, or vocabulary size for tokens
    batch: Dict[str, int]  # per device type
    optim: str = SGD  # sgd (momentum 0.9) | adamw: names of optim.name, with make_optimizer's settings
    kwargs: Dict[str, Any] = field(default_factory=dict)
    source: str = "repl"  # model.source: repl (curated names) | timm | torchvision | hf_causal_lm
    label: str = ""  # the suite's name for it (--models, --batch, the tables), when not `name`

    @property
    def key(self) -> str:
        """The name the suite knows the model by."""
        return self.label or self.name

    @property
    def tokens(self) -> bool:
        """Whether the model reads token sequences (else images); the one place `inputs` is compared."""
        return self.inputs == "tokens"

    def build(self) -> nn.Module:
        cfg = ModelConfig(source=self.source, name=self.name, kwargs=dict(self.kwargs))
        if self.tokens:
            return build_model(cfg, vocab_size=self.classes, seq_len=self.size)
        return build_model(cfg, num_classes=self.classes, in_chans=3, image_size=self.size)

    def memory_format(self, channels_last: bool) -> torch.memory_format:
        """The layout of this model's 4-d tensors: channels-last if asked for and the model reads images."""
        return torch.channels_last if channels_last and not self.tokens else torch.preserve_format

    def make_batch(self, batch_size: int, device: torch.device, generator: torch.Generator,
                   memory_format: torch.memory_format = torch.preserve_format) -> Batch:
        if not self.tokens:
            x = torch.randn(batch_size, 3, self.size, self.size, generator=generator)
            y = torch.randint(0, self.classes, (batch_size,), generator=generator)
        else:
            x = torch.randint(0, self.classes, (batch_size, self.size), generator=generator)
            y = torch.randint(0, self.classes, (batch_size, self.size), generator=generator)
        return x.to(device, memory_format=memory_format), y.to(device)


SPECS: Dict[str, ModelSpec] = {
    "resnet32": ModelSpec("resnet32", "image", 32, 10, {"cpu": 32, "cuda": 128}),
    "resnet110": ModelSpec("resnet110", "image", 32, 10, {"cpu": 16, "cuda": 128}),
    "resnet50": ModelSpec("resnet50", "image", 224, 1000, {"cpu": 2, "cuda": 64}),
    "vit_b": ModelSpec("vit_b", "image", 32, 10, {"cpu": 2, "cuda": 128}, optim=ADAMW),
    "lm": ModelSpec("lm", "tokens", 64, 512, {"cpu": 8, "cuda": 64}, optim=ADAMW, kwargs={"context": 64}),
}
SPECS.update({spec.key: spec for spec in (  # models of the open zoo, by their zoo names
    ModelSpec("convnext_tiny", "image", 224, 1000, {"cpu": 2, "cuda": 64}, optim=ADAMW, source="timm"),
    ModelSpec("swin_tiny_patch4_window7_224", "image", 224, 1000, {"cpu": 2, "cuda": 64}, optim=ADAMW, source="timm",
              label="swin_tiny"),
    ModelSpec("gpt2", "tokens", 64, 512, {"cpu": 8, "cuda": 64}, optim=ADAMW, source="hf_causal_lm", label="hf_gpt2",
              kwargs={"hidden_size": 128, "num_hidden_layers": 6, "num_attention_heads": 4, "intermediate_size": 512}),
)})
METHOD = (
    "All configurations of a model are built from the same seed and live in one process. Parameters and "
    "optimizer state are counted exactly (repl.engine.measure.count_parameters, optimizer_state_bytes). One "
    "probe step per configuration (repl.engine.measure.probe_step) gives training FLOPs (forward + backward, "
    "matmul/conv/attention as torch.utils.flop_counter counts them) and the bytes of tensors saved for backward "
    "(activations); 'train state' = activations + parameters + gradients + optimizer state. On CUDA the "
    "allocator peak of one step is taken after a reset, minus what was allocated before the configuration was "
    "built (its own model, gradients, optimizer state and the step's transients; the shared input batch is "
    "excluded). Time: after warm-up steps, each "
    "round runs `steps` steps of every configuration (forward, loss, backward, optimizer step, zero_grad) on a "
    "fixed batch, in an order that reverses every round; a configuration's time per round is wall clock "
    "(device synchronized) / steps, and its ratio to BP is taken per round, reported as the median over rounds "
    "with min-max. gap = time ratio / FLOP ratio (1.0: the time saving equals the FLOP saving). With --baked, "
    "'baked' rows are the RepL network with its surrogates materialized as plain modules (same FLOPs, no "
    "synthesis), and 'vs baked' is a RepL row's time over its baked row's, per round (median, min-max): the part "
    "of the gap that is RepL's own cost; the baked row's gap is how the smaller network runs on this hardware. "
    "On CPU, glibc's malloc is set to keep freed memory (benchmarks.common.steady_allocator; --glibc-malloc "
    "leaves it as it is): by default it unmaps every large block on free, and each step page-faults its whole "
    "working set again, a cost in proportion to activation memory that the CUDA caching allocator never pays. "
    "With --processes N the whole measurement runs in N fresh processes, one after another: a row's time ratio, "
    "gap and 'vs baked' are then the median of the processes' medians, min-max over those medians (a process's "
    "memory layout moves its ratios together, by up to ~10% on CPU, which more rounds in one process do not average "
    "out); counts, memory and FLOPs are the same in every process and taken from the first."
)


@dataclass
class Setup:
    """One configuration under measurement."""

    label: str
    method: str  # bp | repl
    ratio: float
    surrogate: Optional[str]
    blocks: List[int]
    model: nn.Module
    optimizer: torch.optim.Optimizer
    step: Callable[[], None]
    seconds: List[float] = field(default_factory=list)


def loss_of(spec: ModelSpec) -> Callable[[nn.Module, Batch], torch.Tensor]:
    """Cross-entropy over classes (images) or over every next-token position (tokens)."""
    def loss_fn(model: nn.Module, batch: Batch) -> torch.Tensor:
        x, y = batch
        out = model(x)
        return F.cross_entropy(out.flatten(0, -2) if spec.tokens else out, y.flatten())

    return loss_fn


def make_optimizer(name: str, model: nn.Module) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if name == ADAMW:
        return torch.optim.AdamW(params, lr=1e-4, weight_decay=0.05)
    return torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=5e-4)


def ratio_points(spec_blocks: int, ratios: Sequence[str]) -> Tuple[List[Tuple[float, str]], List[str]]:
    """(ratio, label) per requested ratio ("max" = the model's largest), duplicates by block count merged; and why
    each ratio this model cannot take was left out (it rounds to no block, or asks for more than the model allows:
    a suite of models of different depths shares one --ratios)."""
    allowed = max_replaceable(spec_blocks)
    out: Dict[int, Tuple[float, str]] = {}
    skipped = []
    for r in ratios:
        value = allowed / spec_blocks if r == "max" else float(r)
        k = replace_count(value, spec_blocks)
        if k == 0 or k > allowed:
            skipped.append(f"ratio {r} left out: it asks for {k} of {spec_blocks} blocks, and the model takes 1 to {allowed}")
            continue
        name = f"max ({value:.3f})" if r == "max" else f"{value:g}"
        out[k] = (value, f"{out[k][1]} = {name}" if k in out else name)
    return [out[k] for k in sorted(out)], skipped


def ratio_arg(value: str) -> str:
    """An argparse type of a --ratio: 'max' or a number in (0, 1) (else one line naming what is accepted)."""
    try:
        if value == "max" or 0 < float(value) < 1:
            return value
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"{value!r} is not 'max' or a number between 0 and 1")


def ratio_value(parser: argparse.ArgumentParser, value: str) -> str:
    """One --ratios entry, checked: 'max' or a number in (0, 1) (a parser error, one line, otherwise)."""
    try:
        return ratio_arg(value)
    except argparse.ArgumentTypeError as err:
        parser.error(f"--ratios: {err}")


def ratio_of(value: str, num_blocks: int) -> float:
    """A checked --ratio value as a number: 'max' is the model's largest."""
    return max_replaceable(num_blocks) / num_blocks if value == "max" else float(value)


def check_ratios(spec: ModelSpec, ratios: Sequence[str], surrogates: Sequence[str], flag: str) -> None:
    """Before anything is measured: a ConfigError (one line, exit 2 through script_main) naming `flag` and the model
    unless the model can take the ratios, each with each surrogate (repl's own check, plan_replacement, on a freshly
    built model). With several --ratios (cost.py's suite of models of different depths) a ratio one model cannot
    take is left out of its rows with a note (ratio_points), but a model left with none of them is refused: it
    would measure backprop alone."""
    torch.manual_seed(0)
    model = spec.build()
    num_blocks = len(discover_blocks(model))
    points, skipped = ratio_points(num_blocks, ratios)
    values = [value for value, _ in points] or [ratio_of(ratios[0], num_blocks)]
    try:
        for value in values:
            for surrogate in surrogates:
                plan_replacement(model, ReplConfig(ratio=value, surrogate=surrogate))
    except ConfigError as err:
        raise ConfigError(f"{flag} for {spec.key}: {err}") from None
    if not points:
        raise ConfigError(f"{flag} for {spec.key}: {'; '.join(skipped)}")


def measure_model(spec: ModelSpec, args: argparse.Namespace, device: torch.device) -> Dict[str, Any]:
    """Build BP and every RepL configuration of one model, probe each, then time them in interleaved rounds."""
    batch_size = args.batch.get(spec.key, spec.batch["cuda" if device.type == "cuda" else "cpu"])
    memory_format = spec.memory_format(args.channels_last)
    batch = spec.make_batch(batch_size, device, torch.Generator().manual_seed(0), memory_format)
    loss_fn = loss_of(spec)
    def cast_loss(model: nn.Module, b: Batch) -> torch.Tensor:
        with autocast(args.precision, device.type):
            return loss_fn(model, b)

    torch.manual_seed(0)
    template = spec.build()
    num_blocks = len(discover_blocks(template))
    default = ReplConfig().recompute
    # (label, ratio, surrogate, repl.recompute, baked): `baked` = the surrogates materialized as plain modules, the
    # same architecture and FLOPs as the RepL row without the synthesis, which separates RepL's own cost from
    # what the smaller network runs at on this hardware.
    variants: List[Tuple[str, float, Optional[str], Optional[Union[bool, str]], bool]] = [("bp", 0.0, None, None, False)]
    points, skipped = ratio_points(num_blocks, args.ratios)
    for note in skipped:
        print(f"cost.py: {spec.key}: {note}", file=sys.stderr)
    for ratio, label in points:
        for surrogate in args.surrogates:
            variants.append((f"{surrogate} r={label}", ratio, surrogate, default, False))
            if args.recompute:  # the other settings of repl.recompute, interleaved with the default
                variants += [(f"{surrogate} r={label} {suffix}", ratio, surrogate, setting, False)
                             for suffix, setting in other_recompute_settings()]
            if args.baked:
                variants.append((f"{surrogate} r={label} {BAKED}", ratio, surrogate, default, True))
    if args.compile:
        # Every instance of a model class compiles its own entry for the class's forward; past dynamo's
        # recompile limit (8) later configurations would silently run eager. One model's configurations
        # at a time, each compiled: reset between models, limit above the number of configurations.
        torch._dynamo.reset()
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 2 * len(variants))
    setups, rows = [], []
    for label, ratio, surrogate, recompute, baked in variants:
        base = cuda_allocated(device)
        model = copy.deepcopy(template)
        switches = {} if recompute is None else {"recompute": recompute}
        plan = apply_replacement(model, ReplConfig(ratio=ratio, surrogate=surrogate or ReplConfig().surrogate, **switches))
        if baked:
            model = bake(model)
        model.to(device, memory_format=memory_format).train()
        optimizer = make_optimizer(spec.optim, model)
        forward = torch.compile(model) if args.compile else model

        def step(forward: nn.Module = forward, optimizer: torch.optim.Optimizer = optimizer) -> None:
            cast_loss(forward, batch).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        probe = measure.probe_step(model, cast_loss, batch, optimizer)  # before any step: optimizer state via meta
        for _ in range(args.warmup):
            step()
        peak = step_peak(step, device, base)
        params = measure.count_parameters(model)
        rows.append({
            "label": label, "method": plan.method, "ratio": ratio, "surrogate": surrogate, "recompute": recompute,
            "baked": baked,
            "blocks": plan.blocks, "params": {**params, "replaced": plan.params_replaced, "fusion": plan.params_fusion},
            "memory": {**probe["memory"], "cuda_peak": peak}, "flops": probe["flops"],
        })
        setups.append(Setup(label, plan.method, ratio, surrogate, plan.blocks, model, optimizer, step))
    for s, seconds in zip(setups, interleave([s.step for s in setups], args.rounds, args.steps, device)):
        s.seconds = seconds
    bp = rows[0]
    for row, s in zip(rows, setups):
        per_round = [t / b for t, b in zip(s.seconds, setups[0].seconds)]
        row["time"] = {"step_s": statistics.median(s.seconds), "rounds_s": s.seconds, "ratio": spread(per_round)}
        row["ratios"] = {
            "trainable": row["params"]["trainable"] / bp["params"]["trainable"],
            "optimizer": row["memory"]["optimizer"] / max(bp["memory"]["optimizer"], 1),
            "activations": row["memory"]["activations"] / bp["memory"]["activations"],
            "train_state": row["memory"]["total"] / bp["memory"]["total"],
            "cuda_peak": row["memory"]["cuda_peak"] / bp["memory"]["cuda_peak"] if bp["memory"]["cuda_peak"] else None,
            "flops": row["flops"] / bp["flops"],
            "time": row["time"]["ratio"]["median"],
        }
        row["gap"] = row["ratios"]["time"] / row["ratios"]["flops"]
    for row, s in zip(rows, setups):  # RepL's own cost: each RepL row's time over its baked network's, per round
        twin = next((t for r, t in zip(rows, setups) if r["baked"] and not row["baked"] and r["ratio"] == row["ratio"]
                     and r["surrogate"] == row["surrogate"]), None)  # (bp: surrogate None, never baked)
        row["vs_baked"] = spread([a / b for a, b in zip(s.seconds, twin.seconds)]) if twin else None
    # A `full` surrogate baked is BP's own architecture built a second way: its time ratio to BP, ideally 1.000, is
    # the error of this model's time ratios in this run (an A/A comparison).
    control = [row["ratios"]["time"] for row in rows if row["baked"] and row["surrogate"] == SurrogateKind.FULL]
    return {"model": spec.key, "spec": asdict(replace(spec, batch={**spec.batch})), "batch_size": batch_size,
            "num_blocks": num_blocks, "max_ratio": max_replaceable(num_blocks) / num_blocks, "configs": rows,
            "aa_time_ratios": control, "skipped_ratios": skipped}


def merge_processes(runs: Sequence[List[Dict[str, Any]]]) -> List[Dict[str, Any]]:
    """One list of model results from the same measurement run in several processes (--processes): per row, the
    time ratio and 'vs baked' become the spread of the processes' medians (each process's own in "processes"), the
    gap follows from the median; everything else (counts, memory, FLOPs: deterministic) is the first process's."""
    merged = copy.deepcopy(runs[0])
    for m, model in enumerate(merged):
        for c, row in enumerate(model["configs"]):
            copies = [run[m]["configs"][c] for run in runs]
            if any(other["label"] != row["label"] for other in copies):
                raise RuntimeError(f"processes measured different configurations of {model['model']}")
            row["time"] = {"step_s": statistics.median(r["time"]["step_s"] for r in copies),
                           "rounds_s": [t for r in copies for t in r["time"]["rounds_s"]],
                           "ratio": spread([r["time"]["ratio"]["median"] for r in copies]),
                           "processes": [r["time"]["ratio"] for r in copies]}
            row["ratios"]["time"] = row["time"]["ratio"]["median"]
            row["gap"] = row["ratios"]["time"] / row["ratios"]["flops"]
            if row["vs_baked"] is not None:
                row["vs_baked"] = {**spread([r["vs_baked"]["median"] for r in copies]),
                                   "processes": [r["vs_baked"] for r in copies]}
        model["aa_time_ratios"] = [r for run in runs for r in run[m]["aa_time_ratios"]]
    return merged


def run_processes(argv: Sequence[str], processes: int) -> List[List[Dict[str, Any]]]:
    """Run this benchmark's measurement with `argv` in `processes` fresh Python processes, one after another (so
    that they never share the CPU), and return each one's model results."""
    runs = []
    with tempfile.TemporaryDirectory(prefix="repl-cost-") as tmp:
        for i in range(processes):
            path = Path(tmp) / f"process{i}.json"
            print(f"cost.py: process {i + 1} of {processes}", file=sys.stderr, flush=True)
            done = subprocess.run([sys.executable, str(Path(__file__).resolve()), *argv, "--processes", "1",
                                   "--models-json", str(path)], check=False)
            if done.returncode != 0:
                raise SystemExit(f"cost.py: measurement process {i + 1} of {processes} failed (exit {done.returncode})")
            runs.append(json.loads(path.read_text()))
    return runs


def aa_values(model: Dict[str, Any]) -> str:
    """'0.909, 0.910': a model's A/A time ratios (its `full` baked control rows, with --baked), '' without any."""
    return ", ".join(f"{r:.3f}" for r in model.get("aa_time_ratios") or [])


def aa_note(model: Dict[str, Any]) -> str:
    """'; A/A 0.909, 0.910' beside a model's missed goal, '' without A/A rows."""
    return f"; A/A {aa_values(model)}" if aa_values(model) else ""


def processes_phrase(processes: int) -> str:
    """', in each of 4 processes (...)' for a multi-process run's table header, '' for one process."""
    if processes <= 1:
        return ""
    return (f", in each of {processes} processes (time ratio, gap, vs baked: median of the processes' medians, "
            "min-max over them)")


def _cell(value: str, ratio: Optional[float]) -> str:
    return value if ratio is None else f"{value} ({ratio:.3f})"


def markdown(result: Dict[str, Any]) -> str:
    """One table per model: absolute values with the ratio to BP in parentheses."""
    st = result["settings"]
    lines = [
        "# What RepL costs and saves against backprop",
        "",
        provenance(result),
        "",
        f"Precision {st['precision']}, {'torch.compile, ' if st['compile'] else ''}"
        f"{'channels-last (NHWC) images and weights, ' if st.get('channels_last') else ''}"
        f"{'malloc keeping freed memory, ' if st.get('steady_malloc') else ''}{st['rounds']} interleaved rounds "
        f"x {st['steps']} steps after {st['warmup']} warm-up steps"
        f"{processes_phrase(st.get('processes', 1))}. Each cell: absolute (ratio to BP). "
        "MiB = 2^20 bytes. gap = time ratio / FLOP ratio.",
        "",
    ]
    for m in result["models"]:
        spec = m["spec"]
        shape = f"{spec['size']}x{spec['size']} images" if spec["inputs"] == "image" else f"{spec['size']} tokens"
        lines += [
            f"## {m['model']}: batch {m['batch_size']} of {shape}, {m['num_blocks']} blocks "
            f"(largest ratio {m['max_ratio']:.3f}), optimizer {spec['optim']}",
            "",
            "| config | blocks | trainable params | optimizer MiB | activations MiB | train state MiB | CUDA peak MiB "
            "| GFLOP/step | ms/step | time ratio min-max | gap |" + (" vs baked |" if st.get("baked") else ""),
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if st.get("baked") else ""),
        ]
        for c in m["configs"]:
            r, mem = c["ratios"], c["memory"]
            peak = "n/a (CPU)" if mem["cuda_peak"] is None else _cell(mib(mem["cuda_peak"]), r["cuda_peak"])
            t = c["time"]["ratio"]
            cells = [
                c["label"], str(len(c["blocks"])), _cell(f"{c['params']['trainable']:,}", r["trainable"]),
                _cell(mib(mem["optimizer"]), r["optimizer"]), _cell(mib(mem["activations"]), r["activations"]),
                _cell(mib(mem["total"]), r["train_state"]), peak, _cell(f"{c['flops'] / 1e9:.2f}", r["flops"]),
                _cell(f"{1e3 * c['time']['step_s']:.1f}", r["time"]), f"{t['min']:.3f}-{t['max']:.3f}", f"{c['gap']:.3f}",
            ]
            if st.get("baked"):
                b = c.get("vs_baked")
                cells.append("" if b is None else f"{b['median']:.3f} ({b['min']:.2f}-{b['max']:.2f})")
            lines.append("| " + " | ".join(cells) + " |")
        if aa_values(m):
            lines.append(f"A/A: the `full` baked rows are BP's architecture built a second way; their time ratio to BP "
                         f"({aa_values(m)}) is this model's measurement error in this run.")
        lines.append("")
    if "goal_gap" in result:
        verdict = ("not judged: no `lite` row with the defaults was measured" if not result.get("goal_rows", 1)
                   else "met on every row" if result["goal_met"] else "not met on " + "; ".join(result["goal_missed"]))
        lines += [f"Goal: `lite` gap (time ratio / FLOP ratio) at most {result['goal_gap']}: {verdict}.", ""]
    lines += ["Method: " + result["method"], ""]
    lines += closing_lines(result, "Full settings, per-round times and memory breakdowns")
    return "\n".join(lines)


def add_run_options(parser: argparse.ArgumentParser, benchmark: str) -> None:
    """The options this benchmark shares with op_time.py: --device, --threads, --glibc-malloc, --channels-last,
    --out-dir, --tag, --note."""
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    parser.add_argument("--threads", type=at_least(0), default=None,
                        help="torch.set_num_threads; default 1 on CPU (a shared machine's spare cores make OpenMP "
                             "threads spin and times swing tenfold), torch's choice on CUDA; 0 = torch's choice")
    parser.add_argument("--glibc-malloc", dest="steady_malloc", action="store_false",
                        help="CPU: leave glibc's malloc as it is (default: keep freed memory, as a GPU's caching "
                             "allocator does; benchmarks.common.steady_allocator)")
    parser.add_argument("--channels-last", action="store_true",
                        help="image models in channels-last (NHWC) memory format, model and batch, as "
                             "trainer.channels_last=true trains them")
    parser.add_argument("--out-dir", type=output_dir, default=str(ROOT / "results" / "bench"), help="default results/bench")
    parser.add_argument("--tag", default="", help=f"suffix of the result files: {benchmark}_<device>_<tag>.json / .md")
    parser.add_argument("--note", action="append", default=[], help="a line for the results' notes (repeatable)")


def model_names(parser: argparse.ArgumentParser, value: str) -> List[str]:
    """The comma-separated --models value as a list of suite names (a parser error, one line, for an unknown one)."""
    return name_list(parser, "--models", value, list(SPECS))


def per_model(parser: argparse.ArgumentParser, key: str, items: Sequence[str]) -> Dict[str, int]:
    """--batch / --size MODEL=N items as {model: N} (a parser error, one line, unless every N is a positive integer
    and every MODEL a suite name)."""
    pairs = [item.split("=", 1) for item in items]
    if any(len(p) != 2 or p[0] not in SPECS or not p[1].isdigit() or int(p[1]) < 1 for p in pairs):
        parser.error(f"--{key} takes MODEL=INT (INT >= 1) with MODEL in {', '.join(SPECS)}")
    return {m: int(v) for m, v in pairs}


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Cost of RepL against backprop (parameters, optimizer state, memory, FLOPs, step time), "
                    "all configurations of a model interleaved in one process.")
    parser.add_argument("--models", default=",".join(SPECS), help=f"comma-separated, from {', '.join(SPECS)}")
    parser.add_argument("--ratios", default="0.25,max", help="comma-separated ratios; 'max' = the model's largest")
    parser.add_argument("--surrogates", default="lite,full", help="comma-separated: lite, full")
    parser.add_argument("--recompute", action="store_true",
                        help="also measure each RepL configuration with the other settings of repl.recompute (default "
                             "auto): rows labelled 'kept' keep the synthesized weights for backward, 'rebuilt' always "
                             "free them and rebuild them in backward")
    parser.add_argument("--baked", action="store_true",
                        help=f"also time each RepL configuration '{BAKED}': its surrogates materialized as plain "
                             "modules (the same network and FLOPs without the synthesis); column 'vs baked' = RepL's "
                             "time over it, per round: RepL's own cost, apart from how the smaller network runs")
    parser.add_argument("--batch", action="append", default=[], metavar="MODEL=B", help="batch size for a model")
    parser.add_argument("--size", action="append", default=[], metavar="MODEL=S", help="image side / sequence length")
    parser.add_argument("--rounds", type=at_least(1), default=3, help="interleaved timing rounds (default 3)")
    parser.add_argument("--steps", type=at_least(1), default=2, help="timed steps per configuration per round (default 2)")
    parser.add_argument("--warmup", type=at_least(0), default=1, help="untimed steps per configuration first (default 1)")
    parser.add_argument("--precision", default=Precision.FP32.value, choices=[Precision.FP32.value, Precision.BF16.value], help="autocast dtype (default 32)")
    parser.add_argument("--compile", action="store_true", help="time torch.compile'd models (probes run eager)")
    parser.add_argument("--processes", type=at_least(1), default=1,
                        help="run the whole measurement in this many fresh processes, one after another, and report "
                             "the median of their medians (default 1; per-process memory layout moves CPU ratios by "
                             "up to ~10%%, which more rounds do not average out)")
    parser.add_argument("--models-json", type=Path, default=None, help=argparse.SUPPRESS)  # --processes' children
    add_run_options(parser, "cost")
    args = parser.parse_args(argv)
    args.models = model_names(parser, args.models)
    args.ratios = [ratio_value(parser, r) for r in name_list(parser, "--ratios", args.ratios)]
    args.surrogates = name_list(parser, "--surrogates", args.surrogates, list(CHOICES["surrogate"]))
    for key in ("batch", "size"):
        setattr(args, key, per_model(parser, key, getattr(args, key)))
    return args


def report(args: argparse.Namespace, device: torch.device, models: List[Dict[str, Any]], load_before: List[float],
           argv: List[str], pending: Sequence[str] = ()) -> Tuple[str, Dict[str, Any], str]:
    """(file name, result dict, markdown) of the measured `models`; `pending`: the models still to measure (a
    partial result, noted as such)."""
    settings = {k: getattr(args, k) for k in ("models", "ratios", "surrogates", "recompute", "baked", "batch", "size", "rounds", "steps",
                                                "warmup", "precision", "compile", "channels_last", "steady_malloc",
                                                "processes")}
    result = header(device, {**settings, "device": str(device), "argv": argv}, load_before)
    notes = list(args.note)
    if pending:
        notes.append(partial_note(pending))
    if device.type == "cpu":
        notes.append("CPU run: CUDA allocator peaks are n/a; the train-state estimate is the device-independent memory")
    if load_before[0] > 0.5 * result["hardware"]["cpu_cores_usable"]:
        notes.append(f"1-min load {load_before[0]:.2f} at the start: the machine was shared, absolute times are "
                     "noisy; the per-round ratios (interleaved) are the robust numbers")
    notes += [f"{m['model']}: {note}" for m in models for note in m.get("skipped_ratios", [])]
    judged = [(m, c) for m in models for c in m["configs"]  # the defaults' `lite` rows
              if c["surrogate"] == SurrogateKind.LITE and not c["baked"] and c["recompute"] == ReplConfig().recompute]
    over = [f"{m['model']} {c['label']} ({c['gap']:.3f}{aa_note(m)})" for m, c in judged if c["gap"] > GOAL_GAP]
    name = f"cost_{slug(result['hardware']['device'])}" + (f"_{slug(args.tag)}" if args.tag else "")
    result.update({
        "benchmark": "cost", "method": METHOD, "notes": notes, "json_name": json_name(name, pending),
        "goal_gap": GOAL_GAP, "goal_met": bool(judged) and not over, "goal_missed": over, "goal_rows": len(judged),
        "models": models,
    })
    return name, result, markdown(result)


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Measure every model, write results/bench/cost_<device>.json and .md, return the result dict. In one process,
    what is measured so far is written after each model but the last as cost_<device>.partial.* (common.write_partial)."""
    args = parse_args(argv)
    device = resolve_device(args.device)
    set_threads(args.threads, device)
    args.steady_malloc = args.steady_malloc and device.type == "cpu" and steady_allocator()
    load_before = list(os.getloadavg())
    argv = list(argv) if argv is not None else sys.argv[1:]
    if not args.models_json:  # a ratio a model cannot take stops here, before anything is measured, in one line
        for m in args.models:
            check_ratios(replace(SPECS[m], size=args.size.get(m, SPECS[m].size)), args.ratios, args.surrogates, "--ratios")
    if args.processes > 1:
        models = merge_processes(run_processes(argv, args.processes))
    else:
        models = []
        for i, m in enumerate(args.models):
            models.append(measure_model(replace(SPECS[m], size=args.size.get(m, SPECS[m].size)), args, device))
            pending = args.models[i + 1:]
            if pending and not args.models_json:
                write_partial(args.out_dir, *report(args, device, models, load_before, argv, pending))
    if args.models_json:  # a child of --processes: its parent writes the results
        args.models_json.write_text(json.dumps(models))
        return {"models": models}
    name, result, text = report(args, device, models, load_before, argv)
    write_result(args.out_dir, name, result, text)
    return result


if __name__ == "__main__":
    script_main(main)
