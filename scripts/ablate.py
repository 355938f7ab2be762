"""The ablation table: every open choice of the method card against backprop and the baselines, on one plan.

    python scripts/ablate.py                              # both suites, 3 seeds (CPU: under an hour)
    python scripts/ablate.py --suite classification --seeds 0,1 --variants bp,repl,repl_full
    python scripts/ablate.py --list                       # the variants and their overrides, nothing run

Each suite is a base setting (the embedded data, a small model, the largest ratio its block sequence
allows) and a list of variants, each a set of Hydra overrides that changes one choice from RepL's
defaults (or names a baseline: the baselines replace, drop or freeze the same blocks, since they plan
with the same rules). Every run is an ordinary training run in outputs/ablation/<suite>/<variant>/seed<N>
(summary.json, config, env): a rerun skips the runs that completed and resumes the others, so the
command can be stopped and started again. All configurations are validated before the first run.

Writes results/ablation/<suite>.json and .md: per variant the primary metric's mean +- std over the
seeds, and trainable parameters, training FLOPs per step and step time as ratios to backprop. Step
times come from runs made one after another (not interleaved): read them as indicative only; the cost
benchmark (benchmarks/cost.py) measures time ratios properly.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, NoReturn, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a clone without `pip install -e .`

from omegaconf import OmegaConf  # noqa: E402

from repl.config import as_dict, compose, to_config  # noqa: E402
from repl.engine.checkpoint import atomic_write_text, writable_dir  # noqa: E402
from repl.errors import ReplError  # noqa: E402

BASELINE = "bp"  # the variant every ratio is taken against
REFERENCE = "repl"  # RepL with its defaults: each variant's metric is also given as a per-seed difference to it


@dataclass(frozen=True)
class Suite:
    """A base setting and the variants run on it."""

    name: str
    base: List[str]  # Hydra overrides shared by every variant
    variants: Dict[str, List[str]]  # name -> overrides on top of base (and of RepL's defaults)
    note: str  # what the base setting is, for the table


def _variants(ratio: float, names: Sequence[str]) -> Dict[str, List[str]]:
    """backprop, the baselines on the same plan, RepL's defaults, then one changed choice per variant: those of
    ALL_VARIANTS named in `names`, in that order."""
    r = f"repl.ratio={ratio}"
    every = {
        BASELINE: ["repl=none"],
        "drop": ["repl=drop", r],
        "freeze": ["repl=freeze", r],
        "layerdrop": ["repl=layerdrop", r],
        "stochastic_depth": ["repl=stochastic_depth"],
        "repl": [r],
        "repl_full": [r, "repl.surrogate=full"],
        "repl_fusion_tensor": [r, "repl.fusion=tensor"],
        "repl_fusion_channel": [r, "repl.fusion=channel"],
        "repl_adapt_learned": [r, "repl.adapt=learned"],
        "repl_no_neighbor_grad": [r, "repl.neighbor_grad=false"],
        "repl_select_random": [r, "repl.select=random"],
        "repl_select_similarity": [r, "repl.select=similarity"],
        "repl_select_cka": [r, "repl.select=similarity", "repl.similarity=cka"],
        "repl_init_lstsq": [r, "repl.init=lstsq"],
        "repl_fusion_lr_0.1": [r, "optim.fusion_lr_scale=0.1"],
        "repl_fusion_lr_10": [r, "optim.fusion_lr_scale=10"],
        "repl_start1_lstsq": [r, "repl.start=1", "repl.init=lstsq"],
        "repl_start1_similarity": [r, "repl.start=1", "repl.init=lstsq", "repl.select=similarity"],
        "repl_restore1": [r, "repl.restore=1"],
        "repl_no_recalibrate": [r, "trainer.bn_recalibrate=0"],
        "bp_no_recalibrate": ["repl=none", "trainer.bn_recalibrate=0"],
    }
    return {name: every[name] for name in names}


SUITES = {
    "classification": Suite(
        name="classification",
        base=["trainer.epochs=3"],
        variants=_variants(0.466, [  # ResNet-32: 15 blocks, at most 7 replaced
            BASELINE, "drop", "freeze", "repl", "repl_full", "repl_fusion_channel", "repl_no_neighbor_grad",
            "repl_select_similarity", "repl_init_lstsq", "repl_fusion_lr_10", "repl_start1_lstsq", "repl_restore1",
            "repl_no_recalibrate"]),
        note="ResNet-32 on the embedded synthetic 10-class set (dataset=synthetic), SGD, 3 epochs, "
             "largest ratio 0.466 (7 of 15 blocks)",
    ),
    "lm": Suite(
        name="lm",
        base=["task=lm", "trainer.epochs=2"],
        variants=_variants(0.333, [  # the project's GPT: 6 blocks, at most 2 replaced; no BatchNorm, no channel mismatch
            BASELINE, "drop", "repl", "repl_init_lstsq", "repl_start1_lstsq"]),
        note="the project's GPT (6 x 128) on the embedded corpus (task=lm), AdamW, 2 epochs, "
             "largest ratio 0.333 (2 of 6 blocks)",
    ),
}


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Run the ablation suites and write their tables.")
    parser.add_argument("--suite", default="all", help=f"all, or comma-separated from {', '.join(SUITES)}")
    parser.add_argument("--seeds", default=DEFAULT_SEEDS, help="comma-separated seeds (default 0,1,2)")
    parser.add_argument("--variants", default=None, help="comma-separated variant names (default: all of each suite)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="an extra override for every run (repeatable), e.g. --set trainer.max_steps=20")
    parser.add_argument("--runs-dir", default="outputs/ablation", help="where the runs live (default outputs/ablation)")
    parser.add_argument("--out-dir", default="results/ablation", help="where the tables go (default results/ablation)")
    parser.add_argument("--threads", type=_threads, default=1,
                        help="torch threads (default 1: on a shared machine spare cores make OpenMP threads spin and "
                             "runs slow down tenfold; 0 = torch's choice)")
    parser.add_argument("--list", action="store_true", help="print the variants and their overrides; run nothing")
    return parser.parse_args(argv)


def _threads(value: str) -> int:
    """--threads: an integer >= 0 (0: torch's choice)."""
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"{value!r} is not an integer >= 0")
    return int(value)


def fail(message: str) -> NoReturn:
    """A user's mistake: one `ablate.py: error:` line and exit status 2 (argparse's), before anything runs."""
    print(f"ablate.py: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def _parse_list(text: str, what: str, allowed: Optional[Sequence[str]] = None) -> List[str]:
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        fail(f"--{what}: {text!r} names nothing; give at least one")
    unknown = [item for item in items if allowed is not None and item not in allowed]
    if unknown:
        fail(f"--{what}: {unknown[0]!r} is not one of {', '.join(allowed)}")
    return items


DEFAULT_SEEDS = "0,1,2"


def set_label(sets: Sequence[str]) -> str:
    """The run-directory level of a --set combination: '' without any, else a file-name-safe form of them, so that
    runs of different settings never share a directory."""
    return "set_" + re.sub(r"[^A-Za-z0-9.=_-]+", "_", "__".join(sets)) if sets else ""


def narrowed(args: argparse.Namespace) -> bool:
    """Whether this run's tables hold less than (or other than) a full suite's: some variants or seeds, or --set."""
    return args.variants is not None or args.seeds.replace(" ", "") != DEFAULT_SEEDS or bool(args.set)


def planned_runs(args: argparse.Namespace) -> List[Dict[str, Any]]:
    """Every (suite, variant, seed) with its overrides and run directory, in the order they run."""
    suites = list(SUITES) if args.suite == "all" else _parse_list(args.suite, "suite", list(SUITES))
    items = _parse_list(args.seeds, "seeds")
    if not all(item.isdigit() for item in items):
        fail(f"--seeds: {args.seeds!r} is not comma-separated integers >= 0, e.g. 0,1,2")
    seeds = [int(item) for item in items]
    for item in args.set:
        key = item.lstrip("+~").split("=", 1)[0].strip()
        if key == "seed":
            fail(f"--set {item}: every run's seed comes from --seeds")
        if "=" not in item:
            fail(f"--set {item!r}: give KEY=VALUE")
    runs = []
    for name in suites:
        suite = SUITES[name]
        chosen = list(suite.variants) if args.variants is None else [
            v for v in _parse_list(args.variants, "variants", sorted({v for s in suites for v in SUITES[s].variants}))
            if v in suite.variants]
        if BASELINE not in chosen:
            chosen.insert(0, BASELINE)  # every ratio is taken against it
        for variant in chosen:
            for seed in seeds:
                overrides = [*suite.base, *suite.variants[variant], *args.set, f"seed={seed}",
                             "trainer.progress=false", f"experiment_name=ablation_{name}"]
                runs.append({"suite": name, "variant": variant, "seed": seed, "overrides": overrides,
                             "run_dir": Path(args.runs_dir) / name / variant / set_label(args.set) / f"seed{seed}"})
    return runs


def validate(runs: List[Dict[str, Any]]) -> None:
    """Compose and validate every run's config before the first one trains (one line per bad variant)."""
    for run in runs:
        try:
            run["config"] = to_config(compose(run["overrides"]))
        except ReplError as err:
            fail(f"{run['suite']}/{run['variant']}: {err}")
        except Exception as err:  # noqa: BLE001 - Hydra's own errors (unknown key or option): one line
            fail(f"{run['suite']}/{run['variant']}: {str(err).splitlines()[0]}")
        recorded = run["run_dir"] / ".hydra" / "overrides.yaml"
        if recorded.exists() and list(OmegaConf.load(recorded)) != list(run["overrides"]):
            fail(f"{run['run_dir']} holds a run of other settings ({' '.join(map(str, OmegaConf.load(recorded)))}); "
                 "give another --runs-dir or remove it")


def execute(runs: List[Dict[str, Any]]) -> None:
    """Train each run (a completed one is read back, not retrained)."""
    from repl.run import train  # imported here: --list needs no torch start-up

    for i, run in enumerate(runs, 1):  # numbered within the list given
        start = time.perf_counter()
        record_config(run)
        summary = train(run["config"], run["run_dir"])
        primary = summary["primary"]
        print(f"[{i}/{len(runs)}] {run['suite']}/{run['variant']} seed {run['seed']}: "
              f"{primary['name']}={primary['value']:.4g} ({time.perf_counter() - start:.0f} s)", flush=True)


def record_config(run: Dict[str, Any]) -> None:
    """The run's composed config and overrides in <run_dir>/.hydra/, where a train.py run keeps them (collect.py
    reads them there); a run dir that already has them keeps its own."""
    hydra_dir = run["run_dir"] / ".hydra"
    if (hydra_dir / "config.yaml").exists():
        return
    atomic_write_text(hydra_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(as_dict(run["config"]))))
    atomic_write_text(hydra_dir / "overrides.yaml", OmegaConf.to_yaml(OmegaConf.create(list(run["overrides"]))))


def _mean_std(values: List[float]) -> Dict[str, float]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "n": len(values)}


def _ratio(value: Optional[float], base: Optional[float]) -> Optional[float]:
    return None if value is None or not base else value / base


def summarise(suite: Suite, runs: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Per variant: the primary metric over seeds and the cost ratios to backprop (read from each summary.json)."""
    rows: Dict[str, Dict[str, Any]] = {}
    for run in runs:
        summary = json.loads((run["run_dir"] / "summary.json").read_text())
        row = rows.setdefault(run["variant"], {"overrides": suite.variants[run["variant"]], "summaries": []})
        row["summaries"].append(summary)
    base = rows[BASELINE]["summaries"]
    costs = {key: statistics.median(_cost(s, key) for s in base) for key in ("params", "flops", "step_s")}
    table = {}
    for variant, row in rows.items():
        summaries = row["summaries"]
        primary = summaries[0]["primary"]
        table[variant] = {
            "overrides": row["overrides"],
            "method": summaries[0]["plan"]["method"],
            "blocks": summaries[0]["plan"].get("blocks", []),
            "metric": primary["name"],
            "higher_is_better": primary["higher_is_better"],
            "value": _mean_std([s["primary"]["value"] for s in summaries]),
            "paired_delta": _paired_delta(summaries, rows.get(REFERENCE, {}).get("summaries", [])),
            "seeds": [s["seed"] for s in summaries],
            **{f"{key}_ratio": _ratio(statistics.median(_cost(s, key) for s in summaries), costs[key]) for key in costs},
        }
    first = base[0]
    return {"suite": suite.name, "note": suite.note, "base_overrides": suite.base, "variants": table,
            "provenance": {"git_sha": first["env"].get("git_sha"), "git_dirty": first["env"].get("git_dirty"),
                           "device": first["env"].get("device"), "torch": first["env"].get("torch"),
                           "hostname": first["env"].get("hostname"), "epochs_done": first.get("epochs_done"),
                           "steps_done": first.get("steps_done")}}


def _paired_delta(summaries: List[Dict[str, Any]], reference: List[Dict[str, Any]]) -> Optional[Dict[str, float]]:
    """The primary metric minus RepL-with-defaults' on the same seed, mean +- std over the seeds both ran: the
    seed's own luck (data order, init) cancels, so a small but consistent effect shows where the spread hides it."""
    by_seed = {s["seed"]: s["primary"]["value"] for s in reference}
    diffs = [s["primary"]["value"] - by_seed[s["seed"]] for s in summaries if s["seed"] in by_seed]
    return _mean_std(diffs) if diffs else None


def _cost(summary: Dict[str, Any], key: str) -> float:
    if key == "params":
        return float(summary["params"]["trainable"])
    if key == "flops":
        return float(summary["flops"]["train_step"] or math.nan)
    return float(summary["time"]["step_s"] or math.nan)


def markdown(result: Dict[str, Any]) -> str:
    """The table: one row per variant, the best mean in bold."""
    rows = result["variants"]
    first = next(iter(rows.values()))
    better = max if first["higher_is_better"] else min
    best = better(row["value"]["mean"] for row in rows.values())
    prov = result["provenance"]
    lines = [f"# Ablation: {result['suite']}", "",
             f"{result['note']}. Seeds {', '.join(map(str, first['seeds']))}; {prov['steps_done']} steps "
             f"({prov['epochs_done']} epochs) per run; git {str(prov['git_sha'])[:10]}"
             f"{' (dirty)' if prov['git_dirty'] else ''}, {prov['device']}, torch {prov['torch']}. Ratios are to "
             f"`{BASELINE}` (medians over seeds); step times come from runs made one after another, so they are "
             "indicative only. Generated by `python scripts/ablate.py`.", "",
             f"| variant | overrides | blocks | {first['metric']} (mean +- std) | minus `{REFERENCE}`, same seed | "
             "trainable params | FLOPs/step | step time |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for name, row in rows.items():
        value = row["value"]
        cell = f"{value['mean']:.4g} +- {value['std']:.2g}"
        if value["mean"] == best:
            cell = f"**{cell}**"
        overrides = " ".join(f"`{o}`" for o in row["overrides"])
        ratios = [f"{row[k]:.3f}" if row[k] is not None and math.isfinite(row[k]) else "-"
                  for k in ("params_ratio", "flops_ratio", "step_s_ratio")]
        delta = row.get("paired_delta")
        paired = "-" if delta is None or name == REFERENCE else f"{delta['mean']:+.3g} +- {delta['std']:.2g}"
        lines.append(f"| {name} | {overrides} | {','.join(map(str, row['blocks'])) or '-'} | {cell} | {paired} | "
                     f"{' | '.join(ratios)} |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    runs = planned_runs(args)
    if args.list:
        for run in runs:
            print(f"{run['suite']}/{run['variant']} seed {run['seed']}: {' '.join(run['overrides'])}")
        return 0
    validate(runs)
    for flag, where in (("--runs-dir", args.runs_dir), ("--out-dir", args.out_dir)):  # before anything trains
        try:
            writable_dir(Path(where))
        except OSError as err:
            fail(f"{flag}: cannot write to {where}: {err.strerror or err}")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    print(f"{len(runs)} runs validated; runs in {args.runs_dir}, tables in {args.out_dir}", flush=True)
    for name in dict.fromkeys(run["suite"] for run in runs):  # each suite's table as soon as its runs are done
        suite_runs = [run for run in runs if run["suite"] == name]
        execute(suite_runs)
        result = summarise(SUITES[name], suite_runs)
        out = Path(args.out_dir)
        # a narrowed run (some variants or seeds, --set) never replaces the full suite's table: <suite>_narrowed.*
        stem = f"{name}_narrowed" if narrowed(args) else name
        atomic_write_text(out / f"{stem}.json", json.dumps(result, indent=2) + "\n")
        table = markdown(result)
        atomic_write_text(out / f"{stem}.md", table)
        print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
