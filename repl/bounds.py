"""Numeric ranges declared next to the schema fields, and the one walk that checks them all.

A field declares its range with `field(default=..., metadata=bounds(gt=0))`. `check_numbers` walks a
config's dataclasses and refuses, naming the key, every number outside its declared range and every
float that is not finite (nan, inf): a float field must be finite unless it says `finite=False`.
List items are checked against their field's range; numbers in free dicts (model.kwargs) must be finite.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields, is_dataclass
from typing import Any, Dict, Iterator, Optional, Tuple, get_args, get_type_hints

from repl.errors import ConfigError

BOUNDS = "bounds"  # the metadata key of a field's range


@dataclass(frozen=True)
class Bounds:
    """A numeric range: each side optional, open (gt/lt) or closed (ge/le)."""

    ge: Optional[float] = None
    gt: Optional[float] = None
    le: Optional[float] = None
    lt: Optional[float] = None
    finite: bool = True

    def contains(self, value: float) -> bool:
        """True if `value` is in the range (nan never is when finite is required)."""
        if self.finite and not math.isfinite(value):
            return False
        return ((self.ge is None or value >= self.ge) and (self.gt is None or value > self.gt)
                and (self.le is None or value <= self.le) and (self.lt is None or value < self.lt))

    def describe(self, integer: bool = False) -> str:
        """The range in words, e.g. 'a finite number in (0, 1)' or 'an integer >= 1'."""
        low = f"[{_fmt(self.ge)}" if self.ge is not None else f"({_fmt(self.gt)}" if self.gt is not None else None
        high = f"{_fmt(self.le)}]" if self.le is not None else f"{_fmt(self.lt)})" if self.lt is not None else None
        what = "an integer" if integer else "a finite number" if self.finite else "a number"
        if low and high:
            return f"{what} in {low}, {high}"
        if low:
            return f"{what} {'>=' if self.ge is not None else '>'} {low[1:]}"
        if high:
            return f"{what} {'<=' if self.le is not None else '<'} {high[:-1]}"
        return what


def _fmt(limit: float) -> str:
    """A range limit as written: 4294967295, not 4.29497e+09."""
    return str(int(limit)) if float(limit).is_integer() else f"{limit:g}"


FINITE = Bounds()  # what a float field without a declared range must be


def bounds(*, ge: Optional[float] = None, gt: Optional[float] = None, le: Optional[float] = None,
           lt: Optional[float] = None, finite: bool = True) -> Dict[str, Bounds]:
    """Field metadata declaring the range of a numeric field (None, where the type allows it, is always accepted)."""
    return {BOUNDS: Bounds(ge=ge, gt=gt, le=le, lt=lt, finite=finite)}


SEED = bounds(ge=0, le=2**32 - 1)  # every seed: numpy's generator accepts no other


def check_numbers(config: Any, prefix: str = "") -> None:
    """ConfigError naming the first number of `config` (a dataclass, walked recursively) outside its range."""
    hints = get_type_hints(type(config))
    for f in fields(config):
        value = getattr(config, f.name)
        key = f"{prefix}{f.name}"
        if is_dataclass(value):
            check_numbers(value, f"{key}.")
            continue
        declared = f.metadata.get(BOUNDS)
        for item_key, number in _numbers(key, value):
            rule = declared or FINITE
            if (declared is not None or isinstance(number, float)) and not rule.contains(number):
                integer = isinstance(number, int) and _integral(hints.get(f.name))  # (ratio=2 is still a float key)
                raise ConfigError(f"{item_key}={number} must be {rule.describe(integer=integer)}")


def _integral(hint: Any) -> bool:
    """Whether a field's declared type holds integers: int, or int inside Optional/List/Tuple (not float)."""
    if hint is int:
        return True
    return any(_integral(arg) for arg in get_args(hint) if arg is not type(None)) and float not in get_args(hint)


def _numbers(key: str, value: Any) -> Iterator[Tuple[str, float]]:
    """Every int or float in a value (bools excluded), with the key it is set by."""
    if isinstance(value, bool):
        return
    if isinstance(value, (int, float)):
        yield key, value
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _numbers(f"{key}[{i}]", item)
    elif isinstance(value, dict):
        for name, item in value.items():
            yield from _numbers(f"{key}.{name}", item)
