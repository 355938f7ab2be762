"""Parameter counting that sees through wrappers and shared tensors."""
from __future__ import annotations

from collections.abc import Hashable

import torch
from torch import nn

from repl.engine.measure.storage import storage_key


def unwrap_model(model: nn.Module) -> nn.Module:
    """The user's module inside DDP / DataParallel / torch.compile wrappers."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):  # torch.compile
            model = model._orig_mod
        else:
            return model


def _region_key(p: torch.Tensor) -> Hashable:
    """Same key for distinct Parameter objects that view the same memory region."""
    return (storage_key(p), p.storage_offset(), tuple(p.shape), tuple(p.stride()), p.dtype)


def distinct_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Parameters of the model, each tensor once (tied, re-registered or aliased ones deduped)."""
    seen: set[Hashable] = set()
    out = []
    for p in unwrap_model(model).parameters():
        key = _region_key(p)
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Number of scalar parameters: {"total", "trainable"} (trainable = requires_grad)."""
    params = distinct_parameters(model)
    return {
        "total": sum(p.numel() for p in params),
        "trainable": sum(p.numel() for p in params if p.requires_grad),
    }
