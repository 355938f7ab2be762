"""The method registry: one record per method saying everything the rest of the code asks about it.

A method is `repl` (repl/method/replacement.py), plain backprop (`bp`, below) or a baseline: every
module of the `repl.baselines` package that defines a module-level `METHOD = MethodRecord(...)`
is found on the first lookup, so a new baseline is one file there plus one yaml in configs/repl/
(docs/extending.md#adding-a-method). Code outside a record asks the record; it never compares a method's name.

This module imports no other part of repl at import time (the records' modules are imported on the
first lookup), so method/config.py and method/plan.py can ask it without an import cycle.
"""
from __future__ import annotations

import enum
import importlib
import pkgutil
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Dict, FrozenSet, List, Mapping, Optional, Sequence, Tuple

from repl.errors import ConfigError, RegistrationError

if TYPE_CHECKING:
    from torch import nn

    from repl.families import BlockInfo
    from repl.method.config import ReplConfig
    from repl.method.plan import Plan


class Selection(enum.Enum):
    """Which blocks of the sequence a method's plan holds."""

    NONE = "none"  # no block: the model is left as built
    CHOSEN = "chosen"  # k = round(ratio * N) blocks by repl.select / boundary / blocks (the same for every such method)
    ALL = "all"  # the whole block sequence


Applier = Callable[["nn.Module", "Plan", Sequence["BlockInfo"], "ReplConfig"], Tuple[int, int]]


def never(settings: Mapping[str, Any]) -> bool:
    """`skips_blocks` of a method that computes every block on every batch."""
    return False


def always(settings: Mapping[str, Any]) -> bool:
    """`skips_blocks` of a method that skips some blocks on some batches whatever its switches."""
    return True


@dataclass(frozen=True)
class MethodRecord:
    """Everything the code asks about one method (docs/extending.md#adding-a-method lists the fields with an example)."""

    name: str  # the value of repl.method and the name of its yaml in configs/repl/
    summary: str  # one line: what the method does (docs, error messages)
    selection: Selection  # which blocks its plan holds
    apply: Optional[Applier] = None  # (model, plan, blocks, cfg) -> (params replaced/removed/frozen, fusion params); in place
    check: Optional[Callable[["Plan", Sequence["BlockInfo"], "ReplConfig"], None]] = None  # checks `apply` would make
    # before any surgery (ConfigError), run when the plan is made, also when repl.start defers the surgery to a later epoch
    verb: str = "replaced"  # Plan.describe: "k of N blocks <verb>" (selection CHOSEN)
    describe: Optional[Callable[["Plan"], str]] = None  # Plan.describe's text when the default line does not fit
    uses_ratio: bool = True  # repl.ratio is this method's knob, and ratio 0 (without explicit blocks) is plain backprop
    switches: FrozenSet[str] = frozenset()  # ReplConfig keys it reads besides method and ratio; others must stay default
    skips_blocks: Callable[[Mapping[str, Any]], bool] = never  # with these switches, are some blocks skipped on some
    # training batches (their parameters then get no gradient: DDP find_unused_parameters, trainer.accumulate)?
    validate: Optional[Callable[["ReplConfig"], None]] = None  # method-specific checks; raises ConfigError


PLAIN_BACKPROP = MethodRecord(
    name="bp",
    summary="plain end-to-end backprop: the model is trained as built (also what ratio 0 of any method is)",
    selection=Selection.NONE,
    uses_ratio=False,
)

BUILTIN_MODULES = ("repl.method.replacement",)  # records that are not baselines (RepL itself)
BASELINES_PACKAGE = "repl.baselines"
_REGISTRY: Dict[str, MethodRecord] = {}
_discovered = False


def register_method(record: MethodRecord) -> MethodRecord:
    """Add a method (for code outside repl.baselines); the same record again is a no-op (a notebook cell rerun),
    RegistrationError if another record has its name."""
    existing = _REGISTRY.get(record.name)
    if existing is not None and existing is not record:
        raise RegistrationError(f"method {record.name!r} is already registered ({existing.summary})")
    _REGISTRY[record.name] = record
    return record


def _discover() -> None:
    """Register bp, RepL and the METHOD of every module of repl.baselines, once."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    try:
        for module_name in BUILTIN_MODULES:
            _register_from(module_name)
        register_method(PLAIN_BACKPROP)
        package = importlib.import_module(BASELINES_PACKAGE)
        for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda info: info.name):
            _register_from(f"{BASELINES_PACKAGE}.{info.name}")
    except BaseException:
        _discovered = False  # a failed import is raised again on the next lookup, not hidden behind a partial registry
        raise


def _register_from(module_name: str) -> None:
    """Register the module's METHOD, if it defines one (a helper module such as residual.py does not)."""
    record = getattr(importlib.import_module(module_name), "METHOD", None)
    if isinstance(record, MethodRecord):
        register_method(record)


def method_names() -> List[str]:
    """Every registered method, RepL and bp first, then the baselines by name."""
    _discover()
    return list(_REGISTRY)


def get_method(name: str) -> MethodRecord:
    """The record of `name`; ConfigError naming repl.method and the accepted values if there is none."""
    _discover()
    record = _REGISTRY.get(name)
    if record is None:
        raise ConfigError(f"repl.method={name!r} is not supported; choose one of {', '.join(_REGISTRY)}")
    return record


def methods_reading(switch: str) -> List[str]:
    """The methods whose record accepts the ReplConfig key `switch` (for error messages)."""
    _discover()
    return [name for name, record in _REGISTRY.items() if switch in record.switches]
