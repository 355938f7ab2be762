"""Byte counting over tensors that may alias one another."""
from __future__ import annotations

from collections.abc import Hashable, Iterable

import torch


def storage_key(t: torch.Tensor) -> Hashable:
    """Identify the memory a tensor lives in, so views and aliases are counted once."""
    if t.device.type == "meta":  # meta storages all report address 0
        return ("meta", id(t))
    try:
        return (t.device, t.untyped_storage().data_ptr())
    except (RuntimeError, NotImplementedError):  # sparse / nested: no single storage
        return ("tensor", id(t))


def storage_nbytes(t: torch.Tensor) -> int:
    """Bytes a tensor keeps alive: its whole storage, or its own data when it has none."""
    try:
        return t.untyped_storage().nbytes()
    except (RuntimeError, NotImplementedError):
        return t.numel() * t.element_size()


def distinct_storage_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Sum of storage bytes with each storage counted once."""
    sizes: dict[Hashable, int] = {}
    for t in tensors:
        sizes.setdefault(storage_key(t), storage_nbytes(t))
    return sum(sizes.values())
