"""The paper's tables from collected runs: `python scripts/make_tables.py [--runs CSV] [--paper CSV] [--out DIR]`.

Reads results/runs.csv (scripts/collect.py) and results/paper.csv (the paper's reported numbers,
one row per table row, keyed by the experiment config that reproduces it). Completed runs that
differ only in their seed form one row: mean +- sample std over seeds of the experiment's metric,
beside the paper's number and the difference measured - paper (negative when the measurement is
lower). The paper reports RepL only, so only `repl` rows carry it. Every row also names the commits,
hardware and epochs of its runs; a paper row without runs shows the paper's number and no
measurement. Runs of experiments that feed no paper table go to table `other`. Writes
<table>.md and <table>.tex per table into results/tables/.

Runs are averaged only when they differ in nothing but the seed: collect.py's `config_id` (a hash of
the run's config less the seed and the keys that do not change what is trained) is part of a row's
key, and where one method and ratio have several settings a `settings` column names the overrides
that tell them apart. A row holding one seed twice is flagged. A runs CSV from before `config_id`
is read as one setting per row, with a note.
"""
from __future__ import annotations

import argparse
import csv
import math
import re
import statistics
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, NoReturn

from repl.engine.checkpoint import atomic_write_text
from repl.engine.status import RunStatus

DEFAULT_RUNS = Path("results/runs.csv")
DEFAULT_PAPER = Path("results/paper.csv")
PAPER_METHOD = "repl"  # the method results/paper.csv reports, unless a row has a `method` column
DEFAULT_OUT = Path("results/tables")
GROUP_KEYS = ("experiment", "dataset", "model", "method", "ratio", "surrogate", "fusion", "epochs", "max_steps",
              "config_id")
SETTING_KEY = "config_id"  # collect.py's hash of what was trained but the seed; older CSVs lack it
RUNS_COLUMNS = ("status", "git_sha", *(k for k in GROUP_KEYS if k != SETTING_KEY))  # what a runs CSV needs here
RUNS_NUMERIC = ("ratio", "seed", "params_trainable", "memory_peak_bytes")  # with every metric.* column
TABLE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")  # a paper.csv `table` is a file stem under --out
PAPER_COLUMNS = ("table", "row", "experiment", "metric", "value")
ACCEPTED = {"--runs": "the CSV that scripts/collect.py writes", "--paper": "the paper's numbers, results/paper.csv"}
OTHER = "other"


@dataclass
class Group:
    """Runs that differ only in their seed."""

    key: dict[str, str]
    runs: list[dict[str, str]] = field(default_factory=list)

    @property
    def completed(self) -> list[dict[str, str]]:
        return [r for r in self.runs if r["status"] == RunStatus.COMPLETED and not r.get("problem")]

    def repeated_seeds(self) -> list[str]:
        """Seeds that more than one completed run of the group has (never seeds of one configuration)."""
        seeds = [r.get("seed") or "" for r in self.completed]
        return sorted({s for s in seeds if seeds.count(s) > 1}, key=lambda s: (number(s) is None, number(s) or 0, s))

    def overrides(self) -> set[str]:
        """The command-line overrides the group's runs share (collect.py's `overrides`), less repl.ratio."""
        sets = [set((r.get("overrides") or "").split()) for r in self.runs]
        common = set.intersection(*sets) if sets else set()
        return {o for o in common if o.split("=", 1)[0].lstrip("+~") != "repl.ratio"}

    def values(self, metric: str) -> list[float]:
        """The metric of every completed run that has it."""
        column = "metric." + metric
        numbers = (number(r.get(column)) for r in self.completed)
        return [v for v in numbers if v is not None]

    def distinct(self, column: str) -> str:
        """The distinct non-empty values of a column over the completed runs, joined."""
        return ", ".join(sorted({r[column] for r in self.completed if r.get(column)}))


def number(text: str | None) -> float | None:
    """A cell as a float; None when it is empty or not a number (a hand-edited or older CSV)."""
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def fail(message: str) -> NoReturn:
    """A user mistake: one `error:` line on stderr and exit 2, as collect.py does; no traceback."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def check_numbers(path: Path, rows: list[dict[str, str]], columns: Iterable[str], flag: str = "--runs") -> None:
    """fail() naming the file, row and column of the first cell of `columns` (a name ending in `.*` stands for
    every column it prefixes) that is neither empty nor a number; of runs, only the completed sound ones count
    (collect.py blanks what it could not read and says so in `problem`)."""
    for index, row in enumerate(rows):
        if flag == "--runs" and (row.get("status") != RunStatus.COMPLETED or row.get("problem")):
            continue
        for column in row:
            wanted = any(column == c or (c.endswith(".*") and column.startswith(c[:-1])) for c in columns)
            text = row[column]
            if wanted and text and number(text) is None:
                fail(f"{path} row {index + 2} column {column}: {text!r} is not a number; {flag} takes {ACCEPTED[flag]}")


def settings_labels(groups: list[Group]) -> dict[int, str]:
    """id(group) -> the overrides that tell it apart from the other groups of its experiment and method ("" for a
    group that is the only one of its experiment, method and ratio); a group with no differing override but a
    configuration of its own (configs changed between commits) shows its config id."""
    by_label: dict[tuple, list[Group]] = defaultdict(list)
    for group in groups:
        by_label[group.key["experiment"], group.key["method"]].append(group)
    labels = {}
    for siblings in by_label.values():
        common = set.intersection(*(g.overrides() for g in siblings))
        per_ratio: dict[str, int] = defaultdict(int)
        for group in siblings:
            per_ratio[group.key["ratio"]] += 1
        for group in siblings:
            differing = " ".join(sorted(group.overrides() - common))
            if per_ratio[group.key["ratio"]] > 1 or differing:
                labels[id(group)] = differing or (f"config {group.key[SETTING_KEY]}" if group.key[SETTING_KEY] else "")
            else:
                labels[id(group)] = ""
    return labels


def read_csv(path: Path, needed: Iterable[str], flag: str = "--runs") -> list[dict[str, str]]:
    """Rows of the CSV given as `flag` (a key of ACCEPTED), as dicts; fail() naming the flag, the file and what the
    flag takes if it is missing, not a file, unreadable, or its header lacks a `needed` column."""
    accepted = f"{flag} takes {ACCEPTED[flag]}"
    if path.is_dir():
        fail(f"{accepted}; {path} is a directory")
    if not path.exists():
        fail(f"{accepted}; {path} does not exist" + (" (run repl-collect first, or python scripts/collect.py from a checkout)" if flag == "--runs" else ""))
    try:
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            lacking = sorted(set(needed) - set(reader.fieldnames or ()))
            if lacking:
                fail(f"{path} lacks columns {', '.join(lacking)}; {accepted}")
            return list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as err:  # unreadable, not text, or not CSV
        fail(f"{accepted}; {path} is unreadable ({getattr(err, 'strerror', None) or (str(err).splitlines() or [type(err).__name__])[0]})")


def group_runs(runs: list[dict[str, str]]) -> list[Group]:
    """Runs grouped by GROUP_KEYS (everything but the seed), in a stable order."""
    groups: dict[tuple, Group] = {}
    for run in runs:
        if run["status"] == "unreadable":
            continue
        key = tuple(run.get(k) or "" for k in GROUP_KEYS)
        groups.setdefault(key, Group(dict(zip(GROUP_KEYS, key)))).runs.append(run)
    return [groups[k] for k in sorted(groups, key=_sort_key)]


def _sort_key(key: tuple) -> tuple:
    record = dict(zip(GROUP_KEYS, key))
    ratio = number(record["ratio"]) or 0.0
    return record["experiment"], record["model"], ratio != 0.0, record["method"], ratio, key  # plain backprop (ratio 0) first


def mean_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for a single value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def fmt(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def check_paper(path: Path, paper: list[dict[str, str]]) -> None:
    """fail() on a paper row whose `table` is not a plain file stem or whose `value` is not a number."""
    for index, ref in enumerate(paper):
        if not TABLE_NAME.fullmatch(ref["table"] or ""):
            fail(f"{path} row {index + 2} column table: {ref['table']!r} is not a table name (letters, digits, _ "
                 f"and -, as the file <table>.md under --out)")
    check_numbers(path, paper, ("value",), "--paper")


def hardware(group: Group) -> str:
    """The devices of a group's completed runs; a CPU with its model name where the run recorded it."""
    names = {f"cpu ({r['cpu']})" if r.get("device") == "cpu" and r.get("cpu") else r["device"]
             for r in group.completed if r.get("device")}
    return ", ".join(sorted(names))


def table_rows(paper: list[dict[str, str]], runs: list[dict[str, str]]) -> dict[str, list[dict[str, str]]]:
    """For each table: its rows as display strings, measured groups beside the paper's numbers."""
    by_experiment: dict[str, list[Group]] = defaultdict(list)
    groups = group_runs(runs)
    labels = settings_labels(groups)
    for group in groups:
        by_experiment[group.key["experiment"]].append(group)
    tables: dict[str, list[dict[str, str]]] = defaultdict(list)
    for ref in paper:
        groups = by_experiment.pop(ref["experiment"], [])
        if not groups:
            tables[ref["table"]].append(_row(ref, None, ref["metric"]))
        for group in groups:
            tables[ref["table"]].append(_row(ref, group, ref["metric"], labels[id(group)]))
    for experiment, groups in sorted(by_experiment.items()):
        for group in groups:
            metric = next((r["primary"] for r in group.runs if r.get("primary")), "")
            tables[OTHER].append(_row({"row": "", "experiment": experiment}, group, metric, labels[id(group)]))
    return tables


def _row(ref: dict[str, str], group: Group | None, metric: str, settings: str = "") -> dict[str, str]:
    row = {"row": ref.get("row", ""), "experiment": ref["experiment"], "metric": metric, "settings": settings or "—"}
    paper_value = number(ref.get("value"))
    if group is None:
        return {**row, "method": "—", "ratio": "—", "seeds": "0", "measured": "no runs", "paper": fmt(paper_value),
                "diff": "—", "trainable": "—", "memory_mib": "—", "epochs": "—", "not_completed": "—",
                "commit": "—", "hardware": "—"}
    values = group.values(metric)
    mean, std = mean_std(values) if values else (None, None)
    if group.key["method"] != (ref.get("method") or PAPER_METHOD):  # a paper number belongs to the method it reports
        paper_value = None
    measured = "—" if mean is None else fmt(mean) + ("" if std is None else f" ± {fmt(std)}")
    diff = "—" if mean is None or paper_value is None else f"{mean - paper_value:+.2f}"
    trainable = group.distinct("params_trainable")
    memory = [v / 2**20 for v in (number(r.get("memory_peak_bytes")) for r in group.completed) if v is not None]
    commits = sorted({r["git_sha"][:7] + ("+dirty" if r.get("git_dirty") == "True" else "")
                      for r in group.completed if r.get("git_sha")})
    epochs_done = group.distinct("epochs_done")
    planned = group.key["epochs"] + (f" (≤{group.key['max_steps']} steps)" if group.key["max_steps"] else "")
    repeated = group.repeated_seeds()
    seeds = str(len(values)) + (f" (seed {', '.join(repeated)} repeated: not seeds of one setting)" if repeated else "")
    no_metric = sum(number(r.get("metric." + metric)) is None for r in group.completed)
    not_completed = str(len(group.runs) - len(group.completed) + no_metric)
    if no_metric:
        not_completed += f" ({no_metric} completed without {metric or 'a metric'})"
    return {
        **row,
        "method": group.key["method"],
        "ratio": group.key["ratio"] or "—",
        "seeds": seeds,
        "measured": measured,
        "paper": fmt(paper_value),
        "diff": diff,
        "trainable": f"{int(trainable):,}" if trainable.isdigit() else trainable or "—",
        "memory_mib": fmt(statistics.fmean(memory), 1) if memory else "—",
        "epochs": f"{epochs_done or '—'} of {planned}" if planned else epochs_done or "—",
        "not_completed": not_completed,
        "commit": ", ".join(commits) or "—",
        "hardware": hardware(group) or "—",
    }


HEADERS = [("row", "row"), ("experiment", "experiment"), ("method", "method"), ("ratio", "ratio"),
           ("settings", "settings"), ("seeds", "seeds"), ("measured", "measured (mean ± std)"), ("paper", "paper (RepL)"),
           ("diff", "Δ measured − paper"), ("trainable", "trainable params"), ("memory_mib", "peak memory MiB"),
           ("epochs", "epochs"), ("not_completed", "failed/unfinished"), ("commit", "commit"),
           ("hardware", "hardware")]


def headers(rows: list[dict[str, str]]) -> list[tuple[str, str]]:
    """The table's columns: `settings` only where some row has several settings for its method and ratio."""
    return [(k, h) for k, h in HEADERS if k != "settings" or any(r["settings"] != "—" for r in rows)]


NOTES: list[str] = []  # said under every table's caption (an older runs CSV)


def _caption(name: str, rows: list[dict[str, str]]) -> str:
    metrics = ", ".join(sorted({r["metric"] for r in rows if r["metric"]}))
    if name == OTHER:
        name = "other (experiments that feed no paper table; never paper numbers)"
    return (f"Table {name}: {metrics or 'metric'}; mean ± sample std over seeds of completed runs. "
            "The paper reports RepL only, with its ratio and recipe unpublished (results/paper.csv)."
            + "".join(" " + note for note in NOTES))


def markdown(name: str, rows: list[dict[str, str]]) -> str:
    columns = headers(rows)
    lines = [f"# {_caption(name, rows)}", "", "| " + " | ".join(h for _, h in columns) + " |",
             "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(r[k] for k, _ in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def latex(name: str, rows: list[dict[str, str]]) -> str:
    def esc(text: str) -> str:
        for a, b in (("\\", r"\textbackslash{}"), ("_", r"\_"), ("%", r"\%"), ("&", r"\&"), ("#", r"\#"),
                     ("±", r"$\pm$"), ("Δ", r"$\Delta$"), ("−", "$-$"), ("—", "--")):
            text = text.replace(a, b)
        return text

    columns = headers(rows)
    lines = [r"\begin{table}[t]", r"\centering", r"\scriptsize", r"\begin{tabular}{" + "l" * len(columns) + "}",
             r"\toprule", " & ".join(esc(h) for _, h in columns) + r" \\", r"\midrule"]
    lines += [" & ".join(esc(r[k]) for k, _ in columns) + r" \\" for r in rows]
    lines += [r"\bottomrule", r"\end{tabular}", r"\caption{" + esc(_caption(name, rows)) + "}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=DEFAULT_RUNS,
                        help=f"{ACCEPTED['--runs']} (default: {DEFAULT_RUNS})")
    parser.add_argument("--paper", type=Path, default=DEFAULT_PAPER,
                        help=f"the paper's numbers: table,row,experiment,metric,value (default: {DEFAULT_PAPER})")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"directory for <table>.md and <table>.tex (default: {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    paper, runs = read_csv(args.paper, PAPER_COLUMNS, "--paper"), read_csv(args.runs, RUNS_COLUMNS)
    check_paper(args.paper, paper)
    check_numbers(args.runs, runs, (*RUNS_NUMERIC, "metric.*"))
    note_old_csv(args.runs, runs)
    tables = sorted(table_rows(paper, runs).items())
    if args.out.exists() and not args.out.is_dir():
        fail(f"--out takes the directory to write the tables into; {args.out} is a file")
    written = []
    try:
        args.out.mkdir(parents=True, exist_ok=True)
        for name, rows in tables:
            for suffix, render in ((".md", markdown), (".tex", latex)):
                atomic_write_text(args.out / f"{name}{suffix}", render(name, rows))
                written.append(args.out / f"{name}{suffix}")
    except OSError as err:
        fail(f"cannot write the tables into {args.out}: {err.strerror or err}")
    for name, rows in tables:
        measured = sum(r["measured"] not in ("no runs", "—") for r in rows)
        print(f"{args.out / name}.md/.tex: {len(rows)} rows, {measured} measured")
        for row in rows:
            if "repeated" in row["seeds"]:
                print(f"warning: {args.out / name}.md: {row['experiment']} {row['method']} {row['ratio']}: "
                      f"{row['seeds']}", file=sys.stderr)
    report_stale(args.out, written, (".md", ".tex"))
    return 0


def note_old_csv(path: Path, runs: list[dict[str, str]]) -> None:
    """A runs CSV from before collect.py wrote `config_id` cannot tell settings apart: say so, once and in tables."""
    if runs and SETTING_KEY not in runs[0]:
        note = (f"{path} has no {SETTING_KEY} column (collected by an older collect.py): runs that differ in an "
                "override other than these columns may share a row; collect again to separate them.")
        print(f"note: {note}", file=sys.stderr)
        NOTES.append(f"Note: {note}")


def report_stale(out: Path, written: list[Path], suffixes: tuple[str, ...]) -> None:
    """List the files under `out` (of these suffixes) that this run did not rewrite; they are left as they were."""
    stale = sorted(p for p in out.iterdir() if p.suffix in suffixes and p.is_file() and p not in set(written))
    if stale:
        print(f"not rewritten this time (from earlier runs.csv contents; left as they were): "
              f"{', '.join(str(p) for p in stale)}")


if __name__ == "__main__":
    sys.exit(main())
