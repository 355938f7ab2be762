"""Synthesized weights that are not kept for backward (`repl.recompute=true`).

A surrogate's body saves its weights for backward like any layer (a conv or linear needs W to
compute the input gradient). For an ordinary layer that W is the parameter, already in memory;
for a surrogate it is a fresh tensor made by the fusion, so keeping it costs one weight-sized
tensor per synthesized tensor per step, which dominates the activations at small batches.

Under `recomputed(...)` the autograd saved-tensor hooks swap each saved tensor that *is* a
synthesized weight (or a view of it, or autocast's low-precision copy of it, or a view of that
copy) for a small marker, and rebuild it from the neighbours when backward reads it. The rebuild
runs the same fusion ops on the same (not yet stepped) parameters, so it is bitwise the tensor
that was dropped and gradients are unchanged. Every other saved tensor goes to the hooks that
were active before (activation checkpointing, the memory meter), so both keep working.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, Optional, Tuple

import torch

from repl.errors import ConfigError

Rebuild = Callable[[str], torch.Tensor]
# The hooks active outside ours, so that ours can pass them every tensor that is not a weight. A private
# torch function (torch.utils.checkpoint uses it); releases before 2.8 lack it or take no argument.
_TOP_HOOKS = getattr(torch._C._autograd, "_top_saved_tensors_default_hooks", None)


def check_available() -> None:
    """ConfigError naming the key when this torch cannot tell which saved-tensor hooks are active."""
    if _TOP_HOOKS is None:
        raise ConfigError(f"repl.recompute=true needs torch>=2.8 (saved-tensor hook stack); this is torch "
                          f"{torch.__version__}: upgrade torch or set repl.recompute=false")


def _outer_hooks() -> Optional[Tuple[Callable, Callable]]:
    try:
        return _TOP_HOOKS(False)
    except TypeError:  # the older signature: no ignore_is_tracing argument
        return _TOP_HOOKS()


@dataclass(frozen=True)
class _Dropped:
    """What is kept of a saved synthesized weight: which one, and how the saved tensor sat in memory."""

    name: str
    dtype: torch.dtype
    size: Tuple[int, ...]
    stride: Tuple[int, ...]
    offset: int


@dataclass(frozen=True)
class _Outer:
    """A tensor handed to the hooks that were active before ours, with their packed form."""

    packed: object


def _base(t: torch.Tensor) -> torch.Tensor:
    return t._base if t._base is not None else t


@contextmanager
def recomputed(weights: Dict[str, torch.Tensor], rebuild: Rebuild) -> Iterator[None]:
    """Within this block, autograd keeps none of `weights` (name -> tensor) for backward; `rebuild(name)` remakes one."""
    # Only ints, dtypes, shapes and graph nodes here: the hooks live as long as the graph, and must not keep the weights.
    by_storage = {w.untyped_storage().data_ptr(): (name, w.dtype) for name, w in weights.items()}
    by_node = {w.grad_fn: (name, w.shape) for name, w in weights.items() if w.grad_fn is not None}
    outer = _outer_hooks()

    def match(t: torch.Tensor) -> Optional[str]:
        """The synthesized weight `t` is, is a view of, or is autocast's dtype copy (or a view of it) of."""
        base = _base(t)
        name, dtype = by_storage.get(base.untyped_storage().data_ptr(), (None, None))
        if name is not None:
            return name if base.dtype == dtype else None
        node = base.grad_fn
        if node is None or type(node).__name__ != "ToCopyBackward0":
            return None
        name, shape = by_node.get(node.next_functions[0][0], (None, None))
        return name if name is not None and base.is_contiguous() and base.shape == shape else None

    def pack(t: torch.Tensor) -> object:
        name = match(t)
        if name is not None:
            return _Dropped(name, t.dtype, tuple(t.size()), tuple(t.stride()), t.storage_offset())
        return t if outer is None else _Outer(outer[0](t))

    def unpack(packed: object) -> torch.Tensor:
        if isinstance(packed, _Dropped):
            with torch.no_grad():
                w = rebuild(packed.name).to(packed.dtype)
            return w.as_strided(packed.size, packed.stride, packed.offset)
        if isinstance(packed, _Outer):
            return outer[1](packed.packed)
        return packed

    with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
        yield
