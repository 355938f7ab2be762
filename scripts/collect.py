"""Gather every run's summary.json into one CSV: `python scripts/collect.py [dirs...] [--out FILE]`.

Looks under each directory (default: outputs/ and multirun/) for summary.json files. Each run gives
one row: its status, what was trained (experiment, model, method, ratio, seed, planned epochs from
the run's .hydra/config.yaml), what it measured and where it ran. A file that cannot be read or
parsed, a summary that lacks fields or has one of the wrong type (its cell is left empty), or an
unreadable or oddly shaped .hydra/config.yaml, still gives a row whose `problem` says so, and is listed
on stderr; it never stops the collection. A run that replaced nothing (repl.ratio=0) is method `bp`.
Finding no run at all writes nothing (an earlier CSV stays) and exits 2, as any user error does.

Runs that differ in anything but their seed must not be averaged together: `config_id` is a short hash of
the run's .hydra/config.yaml without `seed` and without the keys that do not change what is trained (the
config's hydra.job.config.override_dirname.exclude_keys, read from the run's .hydra/hydra.yaml, else from
configs/train.yaml), and `overrides` lists the run's command-line overrides less those same keys.
"""
from __future__ import annotations

import argparse
import copy
import csv
import functools
import hashlib
import io
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from repl.engine.checkpoint import atomic_write_text
from repl.engine.status import RunStatus

DEFAULT_DIRS = ("outputs", "multirun")
DEFAULT_OUT = Path("results/runs.csv")
REQUIRED = ("task", "dataset", "model", "method", "plan", "params", "metrics", "primary", "env")
COLUMNS = [
    "path", "status", "problem", "error", "experiment", "task", "dataset", "model", "method", "ratio", "blocks",
    "surrogate", "fusion", "seed", "epochs", "max_steps", "epochs_done", "steps_done", "world_size",
    "primary", "primary_value", "higher_is_better", "params_total", "params_trainable", "params_replaced",
    "params_fusion", "memory_peak_bytes", "memory_estimate_bytes", "flops_train_step", "time_train_s",
    "time_step_s", "throughput", "throughput_unit", "git_sha", "git_dirty", "device", "cpu", "torch", "hostname",
    "config_id", "overrides",
]
METRIC_PREFIX = "metric."  # one column per task metric: metric.top1, metric.test_ppl, ...

PLAIN_BACKPROP = "bp"  # the label of a plan that acts on no block (repl.method.registry.PLAIN_BACKPROP)

NUMERIC = {"ratio", "seed", "epochs", "max_steps", "epochs_done", "steps_done", "world_size", "primary_value",
           "params_total", "params_trainable", "params_replaced", "params_fusion", "memory_peak_bytes",
           "memory_estimate_bytes", "flops_train_step", "time_train_s", "time_step_s", "throughput"}
READ_ERRORS = (OSError, ValueError, RecursionError, yaml.YAMLError)  # UnicodeDecodeError is a ValueError


def kind(value: Any) -> str:
    """A JSON/YAML value's type as a reader of the problem column knows it."""
    names = {dict: "an object", list: "a list", str: "a string"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def run_config(run_dir: Path, problems: list[str] | None = None) -> dict[str, Any]:
    """The run's composed config (.hydra/config.yaml) as a dict; {} if absent, unreadable or not a mapping."""
    path = run_dir / ".hydra" / "config.yaml"
    if not path.exists():
        return {}
    problems = problems if problems is not None else []
    try:
        loaded = yaml.safe_load(path.read_text())
    except READ_ERRORS as err:
        problems.append(f".hydra/config.yaml is unreadable ({type(err).__name__})")
        return {}
    if not isinstance(loaded, dict):
        problems.append(f".hydra/config.yaml is {kind(loaded)}, not a mapping")
        return {}
    return loaded


TRAIN_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "train.yaml"
EXCLUDE_PATH = ("hydra", "job", "config", "override_dirname", "exclude_keys")
SEED = "seed"  # the one key whose runs are averaged together


def _exclude_keys_in(config: Any) -> list[str] | None:
    """hydra.job.config.override_dirname.exclude_keys of a loaded hydra.yaml/train.yaml; None if it has none."""
    for key in EXCLUDE_PATH:
        if not isinstance(config, dict):
            return None
        config = config.get(key)
    return [str(k) for k in config] if isinstance(config, list) else None


def _load_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except READ_ERRORS:
        return None


@functools.lru_cache(maxsize=1)
def _default_exclude_keys() -> tuple[str, ...]:
    """configs/train.yaml's exclude_keys, read once."""
    return tuple(_exclude_keys_in(_load_yaml(TRAIN_CONFIG)) or ())


def exclude_keys(run_dir: Path) -> list[str]:
    """The keys that do not change what is trained, as the run's Hydra config lists them (the repository's
    configs/train.yaml for a run without a readable .hydra/hydra.yaml); `seed` always among them."""
    keys = _exclude_keys_in(_load_yaml(run_dir / ".hydra" / "hydra.yaml"))
    if keys is None:
        keys = list(_default_exclude_keys())
    return [SEED, *(k for k in keys if k != SEED)]


def _without(config: dict[str, Any], dotted: str) -> None:
    """Remove a dotted key (trainer.device) from a nested dict in place; absent keys are ignored."""
    *parents, last = dotted.split(".")
    for key in parents:
        config = config.get(key)
        if not isinstance(config, dict):
            return
    config.pop(last, None)


def config_id(config: dict[str, Any], excluded: list[str]) -> str:
    """A short hash of everything in the run's config that defines what is trained (the excluded keys removed)."""
    kept = copy.deepcopy(config)
    for key in excluded:
        _without(kept, key)
    text = yaml.safe_dump(kept, sort_keys=True, default_flow_style=True, width=2**31)
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def override_key(override: str) -> str:
    """The key of a Hydra override: `+a.b=1` -> a.b, `~a` -> a."""
    return override.split("=", 1)[0].lstrip("+~")


def run_overrides(run_dir: Path, excluded: list[str], problems: list[str]) -> str | None:
    """The run's command-line overrides (.hydra/overrides.yaml) less the excluded keys, space-separated in the
    order given; None when the file is absent or unreadable (the latter is a problem)."""
    path = run_dir / ".hydra" / "overrides.yaml"
    if not path.exists():
        return None
    loaded = _load_yaml(path)
    if not isinstance(loaded, list):
        problems.append(".hydra/overrides.yaml is unreadable or not a list")
        return None
    skip = set(excluded)
    kept = [str(o) for o in loaded if override_key(str(o)) not in skip and not override_key(str(o)).startswith("hydra.")]
    return " ".join(kept)


def mapping(parent: dict[str, Any], key: str, problems: list[str], label: str | None = None) -> dict[str, Any]:
    """parent[key] when it is an object (absent or null: {}); any other type is a problem and gives {}."""
    value = parent.get(key)
    if value is None or isinstance(value, dict):
        return value or {}
    problems.append(f"{label or key} is {kind(value)}")
    return {}


def method_label(summary: dict[str, Any], plan: dict[str, Any]) -> str | None:
    """The summary's method, with `bp` for a plan that acts on no block (ratio 0 of any method is plain backprop)."""
    if "blocks" in plan and not plan["blocks"]:
        return PLAIN_BACKPROP
    return summary.get("method")


def blocks_text(plan: dict[str, Any], problems: list[str]) -> str | None:
    """The plan's blocks as "1;3"; None (and a problem) unless they are a list."""
    blocks = plan.get("blocks", [])
    if not isinstance(blocks, list):
        problems.append(f"plan.blocks is {kind(blocks)}")
        return None
    return ";".join(str(b) for b in blocks)


def clean_cells(row: dict[str, Any], problems: list[str]) -> None:
    """Blank every cell a table could not use: an object or list anywhere, a non-number in a number column."""
    for column, value in row.items():
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        numeric = column in NUMERIC or column.startswith(METRIC_PREFIX)
        if value is None or (number if numeric else isinstance(value, (str, int, float, bool))):
            continue
        problems.append(f"{column} is {kind(value)}")
        row[column] = None


def summary_row(path: Path) -> dict[str, Any]:
    """One CSV row for the run whose summary.json is `path`; `problem` is set when it is unusable."""
    run_dir = path.parent
    row: dict[str, Any] = {"path": str(run_dir)}
    problems: list[str] = []
    config = run_config(run_dir, problems)
    trainer = mapping(config, "trainer", problems, ".hydra/config.yaml trainer")
    row.update(experiment=config.get("experiment_name"), epochs=trainer.get("epochs"),
               max_steps=trainer.get("max_steps"), seed=config.get("seed"))
    if config:
        excluded = exclude_keys(run_dir)
        row.update(config_id=config_id(config, excluded), overrides=run_overrides(run_dir, excluded, problems))
    try:
        summary = json.loads(path.read_text())
    except READ_ERRORS as err:
        row.update(status="unreadable", problem=f"corrupt: {type(err).__name__}: {(str(err).splitlines() or [''])[0]}")
        return row
    if not isinstance(summary, dict):
        row.update(status="unreadable", problem="corrupt: not a JSON object")
        return row
    fill_from_summary(row, summary, problems)
    missing = [key for key in REQUIRED if key not in summary]
    malformed = "; ".join(problems)
    if malformed:
        row["problem"] = f"malformed: {malformed}"
    elif row["status"] != RunStatus.FAILED and missing:  # a failed run's summary is short by design
        row["problem"] = f"partial: no {', '.join(missing)}"
    elif row["status"] == RunStatus.COMPLETED and row.get("primary_value") is None:
        row["problem"] = "partial: no primary metric value"
    return row


def fill_from_summary(row: dict[str, Any], summary: dict[str, Any], problems: list[str]) -> None:
    """The row's cells from a summary object, each field checked for its type (problems listed)."""
    plan, params = mapping(summary, "plan", problems), mapping(summary, "params", problems)
    memory, time_, env = (mapping(summary, key, problems) for key in ("memory", "time", "env"))
    primary, throughput = mapping(summary, "primary", problems), mapping(summary, "throughput", problems)
    flops, metrics = mapping(summary, "flops", problems), mapping(summary, "metrics", problems)
    settings = mapping(plan, "settings", problems, "plan.settings")
    status = summary.get("status", "unknown")
    if not isinstance(status, str):
        problems.append(f"status is {kind(status)}")
        status = "unknown"
    row.update(
        status=status, error=summary.get("error"), task=summary.get("task"),
        dataset=summary.get("dataset"), model=summary.get("model"), method=method_label(summary, plan),
        ratio=plan.get("ratio"), blocks=blocks_text(plan, problems),
        surrogate=settings.get("surrogate"), fusion=settings.get("fusion"),
        seed=summary.get("seed", row["seed"]), epochs_done=summary.get("epochs_done"),
        steps_done=summary.get("steps_done"), world_size=summary.get("world_size"),
        primary=primary.get("name"), primary_value=primary.get("value"), higher_is_better=primary.get("higher_is_better"),
        params_total=params.get("total"), params_trainable=params.get("trainable"),
        params_replaced=params.get("replaced"), params_fusion=params.get("fusion"),
        memory_peak_bytes=memory.get("peak_bytes"), memory_estimate_bytes=memory.get("estimate_bytes"),
        flops_train_step=flops.get("train_step"), time_train_s=time_.get("train_s"),
        time_step_s=time_.get("step_s"), throughput=throughput.get("train_per_s"), throughput_unit=throughput.get("unit"),
        git_sha=env.get("git_sha"), git_dirty=env.get("git_dirty"), device=env.get("device"), cpu=env.get("cpu"),
        torch=env.get("torch"),
        hostname=env.get("hostname"),
    )
    for name, value in metrics.items():
        row[METRIC_PREFIX + name] = value
    clean_cells(row, problems)


def collect(dirs: list[Path]) -> list[dict[str, Any]]:
    """Rows for every summary.json under `dirs`, sorted by path."""
    paths = sorted({p for d in dirs for p in d.rglob("summary.json")})  # relative if the dirs are
    return [summary_row(p) for p in paths]


def write_csv(rows: list[dict[str, Any]], out: Path) -> None:
    """Write the rows with the fixed columns first, then every metric column seen; atomically, so that an
    interrupted write leaves the previous CSV whole."""
    metrics = sorted({k for row in rows for k in row if k.startswith(METRIC_PREFIX)})
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=COLUMNS + metrics)
    writer.writeheader()
    writer.writerows(rows)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, text.getvalue())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="*", type=Path, help=f"where to look (default: {' '.join(DEFAULT_DIRS)})")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"CSV to write (default: {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    if args.out.is_dir():
        print(f"error: --out {args.out} is a directory; give the CSV file to write", file=sys.stderr)
        return 2
    dirs = args.dirs or [Path(d) for d in DEFAULT_DIRS if Path(d).is_dir()]
    missing = [str(d) for d in args.dirs if not d.is_dir()]
    if missing or not dirs:
        print(f"error: no such directory: {', '.join(missing) or ' / '.join(DEFAULT_DIRS)}", file=sys.stderr)
        return 2
    rows = collect(dirs)
    if not rows:  # nothing to write: an existing CSV is not replaced by a header alone
        print(f"error: no runs (summary.json) under {', '.join(str(d) for d in dirs)}; {args.out} is left as it was",
              file=sys.stderr)
        return 2
    try:
        write_csv(rows, args.out)
    except OSError as err:
        print(f"error: cannot write {args.out}: {err.strerror or err}", file=sys.stderr)
        return 2
    for row in rows:
        if row.get("problem") or row["status"] != RunStatus.COMPLETED:
            print(f"  {row['status']}: {row['path']}  {row.get('problem') or row.get('error') or ''}".rstrip(),
                  file=sys.stderr)
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    status = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "none"
    print(f"collected {len(rows)} runs ({status}) into {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
