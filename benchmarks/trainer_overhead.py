"""Trainer overhead: the Trainer's step time against a bare PyTorch loop on the same model, batches and
precision, interleaved in one process (a benchmark states hardware, versions and config,
and compares configurations as ratios measured in one process). Goal: overhead at most 5%.

    python benchmarks/trainer_overhead.py                     # resnet32, synthetic, batch 128: repl=none and repl=repl
    python benchmarks/trainer_overhead.py model=resnet56 repl=none trainer.precision=bf16 --rounds 5 --steps 30

Positional arguments are Hydra overrides for repl.config.compose; without a `repl=` override both
repl=none and repl=repl are measured. Writes results/bench/trainer_overhead_<device>.json and .md.
"""
from __future__ import annotations

import argparse
import copy
import itertools
import os
import statistics
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a clone without `pip install -e .`

from benchmarks.common import (at_least, check_training_configs, hardware, output_dir, script_main, slug, spread, timed, train_config,  # noqa: E402
                               usable_cores, write_result)
from repl.build import build_run  # noqa: E402
from repl.config import TrainConfig  # noqa: E402
from repl.data import build_data  # noqa: E402
from repl.engine import distributed, measure  # noqa: E402
from repl.engine.config import TrainerConfig  # noqa: E402
from repl.engine.optim import build_optimizer  # noqa: E402
from repl.engine.precision import autocast, grad_scaler  # noqa: E402
from repl.errors import ConfigError  # noqa: E402

GOAL_OVERHEAD_PCT = 5.0
Batch = Tuple[torch.Tensor, torch.Tensor]
# Trainer features that change the computation and that the bare loop does not reproduce.
UNMATCHED = ("grad_clip", "ema_decay", "checkpointing", "checkpoint_every")
METHOD = (
    "Each round runs N steps of the Trainer's own loop (Trainer.run_steps: autocast, train_step, LR schedule, "
    "loss accumulation, StepTimer, metrics.jsonl every trainer.log_every steps and at the end of the round, "
    "checkpoint checks, tqdm progress bar as configured) and N steps of a bare loop (forward, cross-entropy, "
    "backward, optimizer step, zero_grad) on a deep copy of the same initial model, the same optimizer "
    "(repl.engine.optim.build_optimizer), the same precision and the same pre-materialised batches; the order "
    "alternates every round. Warm-up steps of both, the first-batch measurement probe, checkpoint saves and "
    "evaluation are excluded. A round's time is wall clock (device synchronized at both ends) divided by N; "
    "ratio = trainer / bare per round, reported as median with min/max and quartiles over rounds."
)


class ReplayData:
    """A DataModule stand-in that cycles over batches already on the device, so neither loop pays for data."""

    def __init__(self, batches: List[Batch], steps_per_epoch: int) -> None:
        self.batches = batches
        self.steps_per_epoch = steps_per_epoch

    def train_batches(self, epoch: int, start_step: int = 0) -> Iterator[Batch]:
        """Batch `step % len(batches)` for steps start_step, start_step+1, ... (endless; the trainer stops)."""
        for step in itertools.count(start_step):
            yield self.batches[step % len(self.batches)]


class BareLoop:
    """The reference: forward, cross-entropy, backward, optimizer step, zero_grad; nothing else."""

    def __init__(self, model: nn.Module, cfg: TrainConfig, device: torch.device, batches: List[Batch]) -> None:
        tcfg = cfg.trainer
        memory_format = torch.channels_last if tcfg.channels_last else torch.preserve_format
        self.model = model.to(device, memory_format=memory_format)
        self.forward = torch.compile(self.model) if tcfg.compile else self.model
        self.optimizer = build_optimizer(cfg.optim, self.model, device)
        self.autocast: Callable[[], Any] = lambda: autocast(tcfg.precision, device.type)  # the Trainer's own
        self.scaler = grad_scaler(tcfg.precision, device.type)
        self.label_smoothing = cfg.task.label_smoothing
        self.batches = batches
        self.step = 0

    def run(self, steps: int) -> None:
        """Train `steps` steps on the next batches."""
        for _ in range(steps):
            images, labels = self.batches[self.step % len(self.batches)]
            with self.autocast():
                loss = F.cross_entropy(self.forward(images), labels, label_smoothing=self.label_smoothing)
            if self.scaler is None:
                loss.backward()
                self.optimizer.step()
            else:
                self.scaler.scale(loss).backward()
                self.scaler.step(self.optimizer)
                self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            self.step += 1


def check_comparable(tcfg: TrainerConfig) -> None:
    """Refuse trainer settings that would make the two loops compute different things."""
    active = [f"trainer.{key}={getattr(tcfg, key)}" for key in UNMATCHED if getattr(tcfg, key) not in (None, False, 0)]
    if active:
        raise ConfigError(f"{', '.join(active)}: the bare loop does not do this; unset it to compare like with like")


def measure_config(overrides: List[str], args: argparse.Namespace, run_dir: Path) -> Dict[str, Any]:
    """Build one config with repl.build.build_run (as train.py does, the data replayed from memory), then time
    trainer and bare loop in interleaved rounds."""
    cfg = train_config(overrides)
    check_comparable(cfg.trainer)
    dist = distributed.setup(cfg.trainer.device)
    data_cfg = cfg.dataset
    data = build_data(data_cfg, seed=cfg.seed, device=dist.device, rank=dist.rank, world_size=dist.world_size,
                      task=cfg.task.name)
    batches = [(images.clone(), labels.clone())
               for images, labels in itertools.islice(data.train_batches(0), args.batches)]
    total = args.warmup + args.rounds * args.steps
    run = build_run(cfg, run_dir, dist, data=ReplayData(batches, steps_per_epoch=total + 1))
    trainer, plan = run.trainer, run.plan
    bare_model = copy.deepcopy(run.model)  # the same initial weights (the Trainer only moved them to the device)
    bare = BareLoop(bare_model, cfg, dist.device, batches)
    trainer.run_steps(args.warmup)  # includes the one-off first-batch probe
    bare.run(args.warmup)
    loops = {"trainer": lambda: trainer.run_steps(args.steps), "bare": lambda: bare.run(args.steps)}
    seconds: Dict[str, List[float]] = {"trainer": [], "bare": []}
    for r in range(args.rounds):
        for name in ("trainer", "bare") if r % 2 == 0 else ("bare", "trainer"):
            seconds[name].append(timed(loops[name], dist.device) / args.steps)
    ratios = [t / b for t, b in zip(seconds["trainer"], seconds["bare"])]
    ratio = spread(ratios)
    return {
        "overrides": overrides,
        "model": cfg.model.name,
        "method": plan.method,
        "dataset": data_cfg.name,
        "batch_size": data_cfg.batch_size,
        "image_size": data_cfg.input_size,
        "precision": cfg.trainer.precision,
        "device": str(dist.device),
        "trainer_step_s": statistics.median(seconds["trainer"]),
        "bare_step_s": statistics.median(seconds["bare"]),
        "ratio": ratio,
        "overhead_pct": 100.0 * (ratio["median"] - 1.0),
        "added_s_per_step": statistics.median(t - b for t, b in zip(seconds["trainer"], seconds["bare"])),
        "rounds_s": seconds,
        "config": OmegaConf.to_container(OmegaConf.structured(cfg)),
    }


def markdown(result: Dict[str, Any]) -> str:
    """A short report: what was measured where, and one table row per config."""
    hw, sw, st = result["hardware"], result["software"], result["settings"]
    lines = [
        "# Trainer overhead vs a bare PyTorch loop",
        "",
        f"Measured {result['created']} on **{hw['gpu'] or hw['cpu']}** ({hw['cpu_cores_usable']} usable CPU cores, "
        f"{st['threads']} torch threads), torch {sw['torch']}, Python {sw['python']}, git {sw['git_sha'][:10]}"
        f"{' (dirty)' if sw['git_dirty'] else ''}.",
        f"Load average before / after: {' '.join(f'{x:.2f}' for x in result['load_before'])} / "
        f"{' '.join(f'{x:.2f}' for x in result['load_after'])}.",
        "",
        f"{st['rounds']} interleaved rounds x {st['steps']} steps per loop after {st['warmup']} warm-up steps; "
        f"progress bar {'on' if st['progress'] else 'off'}; goal: overhead <= {GOAL_OVERHEAD_PCT:g}%.",
        "",
        "| config | model | batch | precision | bare ms/step | trainer ms/step | ratio (median) | ratio min-max "
        "| ratio IQR | overhead | added ms/step |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in result["configs"]:
        r = c["ratio"]
        lines.append(
            f"| {' '.join(c['overrides']) or 'defaults'} | {c['model']} | {c['batch_size']} | {c['precision']} "
            f"| {1e3 * c['bare_step_s']:.1f} | {1e3 * c['trainer_step_s']:.1f} | {r['median']:.4f} "
            f"| {r['min']:.4f}-{r['max']:.4f} | {r['q1']:.4f}-{r['q3']:.4f} | {c['overhead_pct']:+.2f}% "
            f"| {1e3 * c['added_s_per_step']:+.2f} |"
        )
    lines += ["", f"Goal met: **{'yes' if result['goal_met'] else 'no'}**.", "", "Method: " + result["method"]]
    if result["notes"]:
        lines += ["", "Notes:", *(f"- {note}" for note in result["notes"])]
    lines += ["", f"Full config and per-round times: `{result['json_name']}`.", ""]
    return "\n".join(lines)


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Step time of the RepL Trainer against a bare PyTorch loop (same model, batches, precision), "
                    "interleaved in one process.",
        epilog="Positional arguments are Hydra overrides (e.g. model=resnet56 trainer.precision=bf16); without a "
               "repl= override both repl=none and repl=repl are measured.",
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides passed to repl.config.compose")
    parser.add_argument("--rounds", type=at_least(1), default=12, help="interleaved rounds; the order alternates (default 12)")
    parser.add_argument("--steps", type=at_least(1), default=4, help="steps of each loop per round (default 4)")
    parser.add_argument("--warmup", type=at_least(1), default=2, help="untimed steps of each loop first (default 2)")
    parser.add_argument("--batches", type=at_least(1), default=8, help="distinct pre-materialised batches cycled (default 8)")
    parser.add_argument("--threads", type=at_least(1), default=None, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--out-dir", type=output_dir, default=str(ROOT / "results" / "bench"),
                        help="where trainer_overhead_<device>.json and .md go (default results/bench)")
    parser.add_argument("--note", action="append", default=[], help="a line added to the results' notes (repeatable)")
    args = parser.parse_intermixed_args(argv)
    return args


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Measure every config, write the JSON and Markdown results, return the result dict."""
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    has_repl = any(o.startswith("repl=") for o in args.overrides)
    variants = [args.overrides] if has_repl else [[*args.overrides, "repl=none"], [*args.overrides, "repl=repl"]]
    for cfg in check_training_configs(variants):  # every configuration, before the first is measured
        check_comparable(cfg.trainer)
    load_before = list(os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="trainer_overhead_") as tmp:
        configs = [measure_config(v, args, Path(tmp) / str(i)) for i, v in enumerate(variants)]
    load_after = list(os.getloadavg())
    device = torch.device(configs[0]["device"])
    env = measure.environment_info(device)
    cores = usable_cores()
    notes = list(args.note)
    if load_before[0] > 0.5 * cores:
        notes.append(f"1-min load {load_before[0]:.2f} on {cores} cores at the start (it lags: it counts work of the "
                     "last minutes): absolute times may be noisy; the interleaved ratio is the robust number")
    name = f"trainer_overhead_{slug(env['device'])}"
    result = {
        "benchmark": "trainer_overhead",
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "hardware": hardware(device),
        "software": {k: env[k] for k in ("torch", "python", "cuda", "git_sha", "git_dirty")},
        "settings": {"rounds": args.rounds, "steps": args.steps, "warmup": args.warmup, "batches": args.batches,
                     "threads": torch.get_num_threads(), "progress": configs[0]["config"]["trainer"]["progress"],
                     "overrides": args.overrides, "argv": list(argv) if argv is not None else sys.argv[1:]},
        "load_before": load_before,
        "load_after": load_after,
        "method": METHOD,
        "goal_overhead_pct": GOAL_OVERHEAD_PCT,
        "goal_met": all(c["overhead_pct"] <= GOAL_OVERHEAD_PCT for c in configs),
        "notes": notes,
        "json_name": f"{name}.json",
        "configs": configs,
    }
    write_result(args.out_dir, name, result, markdown(result))
    return result


if __name__ == "__main__":
    script_main(main)
