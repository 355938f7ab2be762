"""Figures from collected runs: `python scripts/plots.py [--runs CSV] [--out DIR]` (PNG and PDF).

Per experiment in results/runs.csv (completed runs only, mean +- std over seeds):
- <experiment>_metric_vs_ratio: the primary metric against repl.ratio, one line per method, plain
  backprop as a horizontal band;
- <experiment>_cost_vs_ratio: trainable parameters and peak memory against the ratio;
- <experiment>_curves: training loss and evaluation metric over steps, backprop against RepL (the
  lowest seed of each, read from the runs' metrics.jsonl).
Runs are averaged only over seeds of one setting (make_tables' grouping, collect.py's config_id); a method
with several settings gets one line per setting, labelled with the overrides that differ. Figures are
written whole or not at all (through a temporary file renamed over the old one).
"""
from __future__ import annotations

import argparse
import io
import json
import sys
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_tables import (ACCEPTED, DEFAULT_RUNS, RUNS_COLUMNS, RUNS_NUMERIC, check_numbers, fail, group_runs,
                         mean_std, note_old_csv, number, read_csv, report_stale, settings_labels)

from repl.engine.checkpoint import atomic_write_bytes, writable_dir

DEFAULT_OUT = Path("results/figures")
COST = (("params_trainable", "trainable parameters", 1.0), ("memory_peak_bytes", "peak memory (MiB)", 2.0**-20))


def _save(fig, out: Path, name: str) -> list[Path]:
    """Each format rendered in memory, then written atomically: a kill mid-write leaves the old figure whole."""
    paths = [out / f"{name}.{ext}" for ext in ("png", "pdf")]
    try:
        for path in paths:
            buffer = io.BytesIO()
            fig.savefig(buffer, format=path.suffix[1:], dpi=150, bbox_inches="tight")
            atomic_write_bytes(path, buffer.getvalue())
    finally:
        plt.close(fig)
    return paths


LABELS: dict[int, str] = {}  # id(group) -> its settings (make_tables.settings_labels), set by main


def _label(group) -> str:
    """The method, with the overrides that set this group apart from the method's other settings."""
    settings = LABELS.get(id(group), "")
    return group.key["method"] + (f" [{settings}]" if settings else "")


def _series(groups, column: str, scale: float = 1.0) -> dict[str, list[tuple[float, float, float]]]:
    """method (and setting) -> [(ratio, mean, std)] of a column over each group's completed runs."""
    series: dict[str, list[tuple[float, float, float]]] = defaultdict(list)
    for group in groups:
        values = [v * scale for v in (number(r.get(column)) for r in group.completed) if v is not None]
        if values:
            mean, std = mean_std(values)
            series[_label(group)].append((number(group.key["ratio"]) or 0.0, mean, std or 0.0))
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


def training_curve(run_dir: Path, key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of one key in a run's metrics.jsonl; empty if absent or unreadable; a line without a
    numeric step or value (cut by a kill, edited by hand) is skipped."""
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
        if not isinstance(record, dict):  # a hand-edited or foreign line: not a record of this run's
            continue
        step, value = record.get("step"), record.get(key)
        if isinstance(step, (int, float)) and isinstance(value, (int, float)):
            steps.append(step)
            values.append(value)
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
            label = _label(group) if not number(ratio) else f"{_label(group)} {ratio}"  # ratio 0: plain backprop
            firsts.setdefault(label, Path(run["path"]))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for label, run_dir in sorted(firsts.items()):
        for ax, key in zip(axes, ("train/loss", f"eval/{metric}")):
            steps, values = training_curve(run_dir, key)
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
    parser.add_argument("--runs", type=Path, default=DEFAULT_RUNS,
                        help=f"{ACCEPTED['--runs']} (default: {DEFAULT_RUNS})")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"directory for the .png and .pdf figures (default: {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    runs = read_csv(args.runs, RUNS_COLUMNS)  # before --out is made: a bad --runs leaves no empty directory
    check_numbers(args.runs, runs, (*RUNS_NUMERIC, "metric.*"))
    note_old_csv(args.runs, runs)
    if args.out.exists() and not args.out.is_dir():
        fail(f"--out takes the directory to write the figures into; {args.out} is a file")
    groups = group_runs(runs)
    LABELS.clear()
    LABELS.update(settings_labels(groups))
    by_experiment = defaultdict(list)
    for group in groups:
        by_experiment[group.key["experiment"]].append(group)
    written_all: list[Path] = []
    try:
        writable_dir(args.out)
        for experiment, groups in sorted(by_experiment.items()):
            written = plot_experiment(experiment or "unnamed", groups, args.out)
            written_all += written
            print(f"{experiment}: {len(written)} files" if written else f"{experiment}: no completed runs, no figure")
    except OSError as err:
        fail(f"cannot write the figures into {args.out}: {err.strerror or err}")
    report_stale(args.out, written_all, (".png", ".pdf"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
