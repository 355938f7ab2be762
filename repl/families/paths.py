"""Submodules by dotted path ("layer2.0"): where a block is read from and written back to."""
from __future__ import annotations

from torch import nn


def get_module(model: nn.Module, path: str) -> nn.Module:
    """The submodule at a dotted path ("layer2.0")."""
    return model.get_submodule(path)


def set_module(model: nn.Module, path: str, new: nn.Module) -> None:
    """Register `new` at a dotted path in place of what is there (the root itself cannot be replaced)."""
    if not path:
        raise ValueError("set_module needs a non-empty dotted path")
    parent_path, _, name = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    if name not in parent._modules:  # torch.nn.Module's own registry of children (named_children skips None and duplicates)
        raise AttributeError(f"{type(parent).__name__} at {parent_path or '<root>'!r} has no submodule {name!r}")
    setattr(parent, name, new)
