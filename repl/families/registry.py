"""The registered block families, tried in order, and the block sequence of a model."""
from __future__ import annotations

from typing import List

from torch import nn

from repl.errors import RegistrationError, UnsupportedModelError
from repl.families.contract import BlockInfo, FamilyAdapter

FAMILIES: List[FamilyAdapter] = []


def register_family(adapter: FamilyAdapter, *, replace: bool = False) -> None:
    """Add a model family; later adapters are tried after earlier ones.

    Registering the same adapter object again does nothing (re-running a notebook cell). Another adapter under a
    registered name is refused (RegistrationError) unless `replace=True`, which puts it in the old one's place in
    the order (a redefined family)."""
    for i, registered in enumerate(FAMILIES):
        if registered.name != adapter.name:
            continue
        if registered is adapter:
            return
        if not replace:
            raise RegistrationError(
                f"model family {adapter.name!r} is already registered ({registered.description}); give this one "
                "another name, or pass register_family(adapter, replace=True) to put it in the registered one's place")
        FAMILIES[i] = adapter
        return
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
