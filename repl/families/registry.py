"""The registered block families, tried in order, and the block sequence of a model."""
from __future__ import annotations

from typing import List

from torch import nn

from repl.errors import UnsupportedModelError
from repl.families.contract import BlockInfo, FamilyAdapter

FAMILIES: List[FamilyAdapter] = []


def register_family(adapter: FamilyAdapter) -> None:
    """Add a model family; later adapters are tried after earlier ones."""
    if any(a.name == adapter.name for a in FAMILIES):
        raise ValueError(f"model family {adapter.name!r} is already registered")
    FAMILIES.append(adapter)


def discover_blocks(model: nn.Module) -> List[BlockInfo]:
    """The model's ordered block sequence; UnsupportedModelError if no registered family matches."""
    for adapter in FAMILIES:
        if adapter.detect(model):
            return adapter.enumerate(model)
    cls = type(model)
    supported = "; ".join(f"{a.name} ({a.description})" for a in FAMILIES)
    raise UnsupportedModelError(
        f"RepL and the baselines cannot find the block sequence of a {cls.__module__}.{cls.__qualname__}: "
        f"no supported block family (repl=none trains it with plain backprop); supported: {supported}"
    )
