"""Figures from collected runs: `python scripts/plots.py [--runs CSV] [--out DIR]` (PNG and PDF).

Per experiment in results/runs.csv (completed runs only, mean +- std over seeds):
- <experiment>_metric_vs_ratio: the primary metric against repl.ratio, one line per method, plain
  backprop as a horizontal band;
- <experiment>_cost_vs_ratio: trainable parameters and peak memory against the ratio;
- <experiment>_curves: training loss and evaluation metric over steps, backprop against RepL (the
  lowest seed of each, read from the runs' metrics.jsonl).
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_tables import DEFAULT_RUNS, RUNS_COLUMNS, group_runs, mean_std, number, read_csv

from repl.engine.checkpoint import writable_dir

DEFAULT_OUT = Path("results/figures")
COST = (("params_trainable", "trainable parameters", 1.0), ("memory_peak_bytes", "peak memory (MiB)", 2.0**-20))


def _save(fig, out: Path, name: str) -> list[Path]:
    paths = [out / f"{name}.{ext}" for ext in ("png", "pdf")]
    for path in paths:
        fig.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(fig)
    return paths


def _series(groups, column: str, scale: float = 1.0) -> dict[str, list[tuple[float, float, float]]]:
    """method -> [(ratio, mean, std)] of a column over each group's completed runs."""
    series: dict[str, list[tuple[float, float, float]]] = defaultdict(list)
    for group in groups:
        values = [float(r[column]) * scale for r in group.completed if r.get(column)]
        if values:
            mean, std = mean_std(values)
            series[group.key["method"]].append((float(group.key["ratio"] or 0), mean, std or 0.0))
    return {m: sorted(points) for m, points in series.items()}


def _plot_vs_ratio(ax, series: dict, ylabel: str) -> None:
    for method, points in sorted(series.items()):
        xs, ys, errs = zip(*points)
        if set(xs) == {0.0}:  # plain backprop: every method at ratio 0 is collected as it
            ax.axhline(ys[0], color="black", linestyle="--", label=method)
            ax.plot(0.0, ys[0], "ks")  # the baseline is ratio 0: keep it on the axis
            ax.axhspan(ys[0] - errs[0], ys[0] + errs[0], color="black", alpha=0.1)
        else:
            ax.errorbar(xs, ys, yerr=errs, marker="o", capsize=3, label=method)
    ax.set_xlabel("repl.ratio (fraction of blocks)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend()


def _curve(run_dir: Path, key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of one key in a run's metrics.jsonl; empty if absent or unreadable."""
    steps, values = [], []
    try:
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    except OSError:
        return [], []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if key in record:
            steps.append(record["step"])
            values.append(record[key])
    return steps, values


def plot_experiment(experiment: str, groups, out: Path) -> list[Path]:
    """The three figures of one experiment; returns the files written."""
    metric = next((r["primary"] for g in groups for r in g.completed if r.get("primary")), "")
    if not metric:
        return []
    written = []
    fig, ax = plt.subplots(figsize=(5, 3.5))
    _plot_vs_ratio(ax, _series(groups, "metric." + metric), metric)
    ax.set_title(experiment)
    written += _save(fig, out, f"{experiment}_metric_vs_ratio")

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for ax, (column, label, scale) in zip(axes, COST):
        _plot_vs_ratio(ax, _series(groups, column, scale), label)
    fig.suptitle(experiment)
    written += _save(fig, out, f"{experiment}_cost_vs_ratio")

    firsts = {}
    for group in groups:
        for run in sorted(group.completed, key=lambda r: int(r.get("seed") or 0)):
            ratio = group.key["ratio"]
            label = group.key["method"] if not number(ratio) else f"{group.key['method']} {ratio}"  # ratio 0: plain backprop
            firsts.setdefault(label, Path(run["path"]))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for label, run_dir in sorted(firsts.items()):
        for ax, key in zip(axes, ("train/loss", f"eval/{metric}")):
            steps, values = _curve(run_dir, key)
            if steps:
                ax.plot(steps, values, marker="." if key.startswith("eval") else None, label=label)
                ax.set_xlabel("step")
                ax.set_ylabel(key)
    for ax in axes:
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.suptitle(f"{experiment}: training curves (lowest seed)")
    written += _save(fig, out, f"{experiment}_curves")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=DEFAULT_RUNS)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    try:
        writable_dir(args.out)
    except OSError as err:
        sys.exit(f"error: cannot write the figures into {args.out}: {err.strerror or err}")
    by_experiment = defaultdict(list)
    for group in group_runs(read_csv(args.runs, RUNS_COLUMNS)):
        by_experiment[group.key["experiment"]].append(group)
    for experiment, groups in sorted(by_experiment.items()):
        written = plot_experiment(experiment or "unnamed", groups, args.out)
        print(f"{experiment}: {len(written)} files" if written else f"{experiment}: no completed runs, no figure")
    return 0


if __name__ == "__main__":
    sys.exit(main())
