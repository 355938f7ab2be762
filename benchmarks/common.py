"""What every benchmark states beside its numbers (hardware, versions, load) and how it writes them.

The project's habit: a benchmark names hardware, versions and config beside every number,
and compares configurations as ratios measured interleaved in one process.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import re
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence, Tuple, Union

import torch

from repl.engine import measure
from repl.engine.checkpoint import atomic_write_text, writable_dir
from repl.engine.measure.env import cpu_model
from repl.errors import ConfigError, ReplError
from repl.method.config import ReplConfig
from repl.method.recompute import AUTO

ROOT = Path(__file__).resolve().parents[1]
# A row's suffix per setting of repl.recompute: the weights kept for backward, always rebuilt, rebuilt where they pay.
RECOMPUTE_LABELS: Dict[Union[bool, str], str] = {False: "kept", True: "rebuilt", AUTO: "auto"}


def other_recompute_settings() -> List[Tuple[str, Union[bool, str]]]:
    """(row suffix, setting) of every repl.recompute setting but the default, to measure beside it."""
    default = ReplConfig().recompute
    return [(label, setting) for setting, label in RECOMPUTE_LABELS.items() if setting != default]


def usable_cores() -> int:
    """CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def hardware(device: torch.device) -> Dict[str, Any]:
    """What the numbers were measured on."""
    return {
        "device": measure.device_name(device),
        "cpu": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "cpu_cores_usable": usable_cores(),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
    }


def software(device: torch.device) -> Dict[str, Any]:
    """Versions and code revision (environment_info's fields that a result file needs)."""
    env = measure.environment_info(device)
    import timm

    return {**{k: env[k] for k in ("torch", "python", "cuda", "git_sha", "git_dirty")}, "timm": timm.__version__}


def slug(name: str) -> str:
    """A file-name-safe lower-case form of a device name."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def spread(values: List[float]) -> Dict[str, float]:
    """Median, min, max and quartiles of per-round values."""
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else values * 3
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "q1": q1, "q3": q3}


def timed(fn: Callable[[], Any], device: torch.device) -> float:
    """Wall-clock seconds of fn(), the device synchronized before and after."""
    measure.synchronize(device)
    start = time.perf_counter()
    fn()
    measure.synchronize(device)
    return time.perf_counter() - start


DEVICES = "auto, cpu, cuda or cuda:N"  # what every benchmark's --device accepts


def resolve_device(name: str) -> torch.device:
    """--device as a torch.device: auto -> cuda when available, else cpu. A ConfigError (one line, exit 2 through
    script_main) for anything but auto, cpu, cuda[:N], and for cuda on a machine without a usable GPU, so that no
    benchmark fails with a driver traceback part-way."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(f"--device: {name!r} is not one of {DEVICES}") from None
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"--device: {name!r} is not one of {DEVICES}")
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if not count:
            raise ConfigError(f"--device: {name!r}, but this machine has no usable CUDA GPU; use --device cpu or auto")
        if device.index is not None and device.index >= count:
            raise ConfigError(f"--device: {name!r}, but this machine has {count} CUDA GPU(s) (cuda:0 to cuda:{count - 1})")
    return device


def header(device: torch.device, settings: Dict[str, Any], load_before: List[float]) -> Dict[str, Any]:
    """The fields every result file starts with."""
    return {
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "hardware": hardware(device),
        "software": software(device),
        "settings": {**settings, "threads": torch.get_num_threads()},
        "load_before": load_before,
        "load_after": list(os.getloadavg()),
    }


def provenance(result: Dict[str, Any]) -> str:
    """One Markdown paragraph: where, with what, under which load."""
    hw, sw, st = result["hardware"], result["software"], result["settings"]
    return (
        f"Measured {result['created']} on **{hw['gpu'] or hw['cpu']}** ({hw['cpu_cores_usable']} usable CPU cores, "
        f"{st['threads']} torch threads), torch {sw['torch']}, timm {sw['timm']}, Python {sw['python']}, "
        f"git {sw['git_sha'][:10]}{' (dirty)' if sw['git_dirty'] else ''}. Load average (1/5/15 min) before / after: "
        f"{' '.join(f'{x:.2f}' for x in result['load_before'])} / {' '.join(f'{x:.2f}' for x in result['load_after'])}."
    )


def script_main(main: Callable[[], Any]) -> None:
    """A benchmark's command-line entry: a user's mistake (a ReplError: a bad override, a model or ratio the method
    cannot take) ends in one `<script>: error: ...` line with exit status 2, as argparse's own errors and train.py do."""
    try:
        main()
    except ReplError as err:
        print(f"{Path(sys.argv[0]).name}: error: {err}", file=sys.stderr)
        sys.exit(2)


def train_config(overrides: Sequence[str]) -> Any:
    """The TrainConfig of configs/train.yaml composed with `overrides` and validated, as train.py makes it; Hydra's
    errors (an unknown option or key, a value of the wrong type) become its one-line ConfigError too."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from repl.config import check_boolean_overrides, compose, to_config
    from repl.hydra_errors import composition_error

    try:
        check_boolean_overrides(list(overrides))
        return to_config(compose(list(overrides)))
    except (HydraException, OmegaConfBaseException) as err:
        error = composition_error(err)
        if error is None:
            raise
        raise error from None


def check_training_configs(runs: Sequence[Sequence[str]]) -> List[Any]:
    """Every training configuration a benchmark or study will run, composed (train_config) and checked as a
    multirun's jobs are before the first starts (repl.sweep_check.BuildCheck: its data located, its model built
    without weights, its method planned on it), so that a ratio the model cannot take stops the script in one line
    instead of after the configurations before it ran. Returns the TrainConfigs, in order."""
    from repl.sweep_check import BuildCheck

    configs, check = [], BuildCheck()
    for overrides in runs:
        cfg = train_config(overrides)
        check.check(cfg)
        configs.append(cfg)
    return configs


def refuse_overrides(overrides: Sequence[str], owned: Dict[str, str]) -> None:
    """A ConfigError (one line) for an override of a key the study sets itself in its runs ({key: what to use
    instead}): the study's own value would silently win over it, and its table would claim the user's."""
    for override in overrides:
        key = override.lstrip("+~").split("=", 1)[0].strip()
        if key in owned:
            raise ConfigError(f"{override}: this study sets {key} itself in its runs; {owned[key]}")


def at_least(low: int) -> Callable[[str], int]:
    """An argparse type: an integer >= `low` (else one line naming what is accepted)."""
    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            number = low - 1
        if number < low:
            raise argparse.ArgumentTypeError(f"{value!r} is not an integer >= {low}")
        return number

    return parse


def name_list(parser: argparse.ArgumentParser, flag: str, value: str, allowed: Sequence[str] = ()) -> List[str]:
    """A comma-separated option's items (blanks dropped): a parser error (one line, exit 2) when none is left (an
    empty list would run nothing and write an empty result over a complete one) or, with `allowed`, for an item not
    in it."""
    items = [item.strip() for item in value.split(",") if item.strip()]
    if not items:
        parser.error(f"{flag}: {value!r} names nothing; give at least one" + (f" of {', '.join(allowed)}" if allowed else ""))
    unknown = [item for item in items if allowed and item not in allowed]
    if unknown:
        parser.error(f"{flag}: unknown {', '.join(unknown)}; choose from {', '.join(allowed)}")
    return items


def int_list(value: str) -> List[int]:
    """An argparse type: comma-separated integers (seeds, counts), at least one."""
    try:
        items = [int(item) for item in value.split(",") if item.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not comma-separated integers") from None
    if not items:
        raise argparse.ArgumentTypeError(f"{value!r} names no integer; give at least one")
    return items


def nonnegative_int_list(value: str) -> List[int]:
    """An argparse type: comma-separated integers >= 0 (seeds, batch counts), at least one."""
    items = int_list(value)
    if any(item < 0 for item in items):
        raise argparse.ArgumentTypeError(f"{value!r}: every item must be an integer >= 0")
    return items


def output_dir(value: str) -> Path:
    """The argparse type of every benchmark's --out-dir: the directory, made if missing and proven writable before
    any measuring, so that a run never measures for minutes and then fails to save (else one line, naming it)."""
    try:
        return writable_dir(Path(value))
    except OSError as err:
        raise argparse.ArgumentTypeError(f"cannot write to {value}: {err.strerror or err}") from None


def closing_lines(result: Dict[str, Any], what: str) -> List[str]:
    """A result table's last lines: its notes, if any, then where the JSON (`what` it holds) is."""
    notes = ["Notes:", *(f"- {note}" for note in result["notes"]), ""] if result["notes"] else []
    return [*notes, f"{what}: `{result['json_name']}`.", ""]


PARTIAL = ".partial"  # suffix of the files a benchmark writes while it runs (write_partial)


def _write_files(out_dir: Path, stem: str, result: Dict[str, Any], markdown: str) -> None:
    """`<stem>.json` and `<stem>.md` in out_dir, each whole or not at all (an interrupted write leaves the old one)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / f"{stem}.json", json.dumps(result, indent=2) + "\n")
    atomic_write_text(out_dir / f"{stem}.md", markdown)


def write_result(out_dir: Path, name: str, result: Dict[str, Any], markdown: str) -> None:
    """`<name>.json` (everything) and `<name>.md` (the tables) in out_dir; the tables are printed too. The run's
    partial files (`write_partial`), if any, are removed: these hold everything they held."""
    _write_files(out_dir, name, result, markdown)
    for suffix in (".json", ".md"):
        (out_dir / f"{name}{PARTIAL}{suffix}").unlink(missing_ok=True)
    print(markdown)


def json_name(name: str, pending: Sequence[str] = ()) -> str:
    """The JSON file a result of `name` is written to: `<name>.partial.json` while models are `pending`."""
    return f"{name}{PARTIAL if pending else ''}.json"


def partial_note(pending: Sequence[str]) -> str:
    """The note a partial result carries: which of its models are not in it yet."""
    return (f"partial: {', '.join(pending)} not measured yet (the run stopped, or is still running); the complete "
            f"result is written without '{PARTIAL}' and removes these files")


def write_partial(out_dir: Path, name: str, result: Dict[str, Any], markdown: str) -> None:
    """What a long run has measured so far, as `<name>.partial.json` and `.md` beside where its result will go:
    a run stopped part-way (a time limit, a lost machine) keeps what it measured, and a finished result of an
    earlier run under `<name>` is never replaced by less. `write_result` removes them when the run completes."""
    _write_files(out_dir, f"{name}{PARTIAL}", result, markdown)


def mib(n: float) -> str:
    """Bytes as MiB with one decimal."""
    return f"{n / 2**20:.1f}"


# glibc mallopt parameters (malloc.h) and the values `steady_allocator` sets.
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
STEADY_MALLOC = {M_MMAP_THRESHOLD: 32 * 2**20, M_TRIM_THRESHOLD: 2**31 - 1, M_TOP_PAD: 256 * 2**20}


def steady_allocator() -> bool:
    """Make glibc's malloc keep freed memory for reuse, as the CUDA caching allocator does; True where it took.

    By default glibc serves every block over 128 KiB-32 MiB (an activation, a gradient) with a fresh mmap and
    unmaps it on free, so each training step page-faults and zeroes its whole working set again: kernel time
    in proportion to the activation memory, which flattered configurations that store less (BP's CPU step was
    ~14% slower than with memory kept, a RepL `lite` step ~4%; ResNet-32, one thread, an ad-hoc 20-round run)
    and made rounds swing. Heap allocation up to 32 MiB, no trimming: the steady state a long run reaches with
    jemalloc or tcmalloc. A no-op (False) off glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        return all(libc.mallopt(key, value) == 1 for key, value in STEADY_MALLOC.items())
    except (OSError, AttributeError):
        return False


def set_threads(threads: int | None, device: torch.device) -> None:
    """torch.set_num_threads: `threads`, else 1 on CPU (on a shared machine, spare-core OpenMP threads spin and
    step times swing tenfold; one thread keeps interleaved ratios stable) and torch's choice elsewhere; 0 = torch's."""
    threads = threads if threads is not None else (1 if device.type == "cpu" else 0)
    if threads:
        torch.set_num_threads(threads)


def interleave(steps: List[Callable[[], Any]], rounds: int, per_round: int, device: torch.device) -> List[List[float]]:
    """Seconds per step of each callable, per round; every round runs each `per_round` times, the order
    reversing every round so that drift on a shared machine hits all alike."""
    seconds: List[List[float]] = [[] for _ in steps]
    for r in range(rounds):
        for i in round_order(len(steps), r):
            seconds[i].append(timed(lambda i=i: [steps[i]() for _ in range(per_round)], device) / per_round)
    return seconds


def round_order(n: int, r: int) -> List[int]:
    """The order of n configurations in round r: as listed in even rounds, reversed in odd ones."""
    order = list(range(n))
    return order if r % 2 == 0 else order[::-1]


def cuda_allocated(device: torch.device) -> int:
    """Bytes the CUDA allocator holds for tensors now; 0 off CUDA."""
    return int(torch.cuda.memory_allocated(device)) if device.type == "cuda" else 0


def step_peak(step: Callable[[], Any], device: torch.device, base: int) -> int | None:
    """CUDA allocator peak of one `step`, above `base` bytes (what was allocated before); None off CUDA."""
    measure.synchronize(device)
    measure.reset_peak_memory(device)
    step()
    measure.synchronize(device)
    return measure.peak_memory_bytes(device) - base if device.type == "cuda" else None
