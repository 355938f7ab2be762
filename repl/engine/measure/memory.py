"""Device-independent training-memory estimate.

estimate = activations (bytes of tensors saved for backward during one forward, each storage
once, model parameters and buffers excluded) + params + grads (one per trainable parameter,
same dtype) + optimizer state. Buffers are reported separately and are not in the total.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Hashable
from types import TracebackType
from typing import Any

import torch
from torch import nn

from repl.engine.measure.storage import distinct_storage_bytes, storage_key, storage_nbytes
from repl.engine.measure.params import distinct_parameters, unwrap_model


class SavedTensorMeter:
    """Context manager summing the storages autograd saves for backward while it is open.

    Storages of `model`'s parameters and buffers are not counted (they are model state). The
    meter holds a reference to each counted storage until it closes, so a freed address cannot
    be reused and mistaken for an alias, and counts each storage's size when it closes: memory
    freed before then (a surrogate's synthesized weights, repl.recompute) is not counted. Regions under non-reentrant activation checkpointing
    install their own hooks and are (correctly) not counted.
    """

    def __init__(self, model: nn.Module | None = None) -> None:
        module = unwrap_model(model) if model is not None else nn.Module()
        self._excluded = {storage_key(t) for t in [*module.parameters(), *module.buffers()]}
        self._saved: dict[Hashable, torch.Tensor] = {}
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self.bytes = 0

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        key = storage_key(t)
        if key in self._excluded:
            return t
        held = self._saved.get(key)
        # A held storage that no longer has this address was freed since (a surrogate's synthesized weight,
        # rebuilt in backward): the address now belongs to a new storage.
        if held is None or storage_key(held) != key:
            self._saved[key] = t
        return t

    def __enter__(self) -> SavedTensorMeter:
        self._saved.clear()
        self._hooks.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._hooks.__exit__(exc_type, exc, tb)
        # Sizes are read at close: a storage freed during the forward (resized to 0) is not kept for backward.
        self.bytes = sum(storage_nbytes(t) for t in self._saved.values())
        self._saved.clear()


def _meta_copy(
    optimizer: torch.optim.Optimizer,
) -> tuple[torch.optim.Optimizer, list[nn.Parameter]]:
    """Same optimizer class and hyper-parameters over meta clones of the parameters."""
    groups, clones = [], []
    for group in optimizer.param_groups:
        metas = [
            nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad)
            for p in group["params"]
        ]
        clones.extend(metas)
        settings = {k: v for k, v in group.items() if k != "params"}
        # Device-specific kernels do not run on meta; state shapes and dtypes are the same.
        settings.update({k: False for k in ("foreach", "fused", "capturable") if k in settings})
        groups.append({"params": metas, **settings})
    return type(optimizer)(groups), clones


def optimizer_state_bytes(optimizer: torch.optim.Optimizer | None) -> int:
    """Bytes of tensors in optimizer.state, each storage once.

    Before the first step (state empty) the state is derived by stepping a copy of the optimizer
    over meta tensors: no memory, no compute, and it never touches the real parameters. Only
    trainable parameters get a gradient there, as in a real step. An optimizer that cannot step
    that way (e.g. one needing a closure) gives 0 with a warning: measure after a real step.
    """
    if optimizer is None:
        return 0
    if not optimizer.state:
        try:
            optimizer, clones = _meta_copy(optimizer)
            for p in clones:
                if p.requires_grad:
                    p.grad = torch.empty_like(p)
            optimizer.step()
        except Exception as err:  # any optimizer class may be passed in; measuring must not fail
            warnings.warn(
                f"optimizer state of {type(optimizer).__name__} unknown before its first step "
                f"({err}); counted as 0 bytes",
                stacklevel=2,
            )
            return 0
    states = optimizer.state.values()
    tensors = [v for s in states for v in s.values() if isinstance(v, torch.Tensor)]
    return distinct_storage_bytes(tensors)


def memory_breakdown(
    model: nn.Module, activation_bytes: int, optimizer: torch.optim.Optimizer | None = None
) -> dict[str, int]:
    """{activations, params, grads, optimizer, buffers, total} in bytes for measured activations."""
    params = distinct_parameters(model)
    out = {
        "activations": int(activation_bytes),
        "params": sum(p.numel() * p.element_size() for p in params),
        "grads": sum(p.numel() * p.element_size() for p in params if p.requires_grad),
        "optimizer": optimizer_state_bytes(optimizer),
    }
    out["total"] = sum(out.values())
    out["buffers"] = distinct_storage_bytes(unwrap_model(model).buffers())
    return out


def memory_estimate(
    model: nn.Module, step_fn: Callable[[], Any], optimizer: torch.optim.Optimizer | None = None
) -> dict[str, int]:
    """Run `step_fn` (a forward, optionally with backward) once and return the memory breakdown.

    This runs the step for real; use `probe_step` to measure without disturbing training.
    """
    with SavedTensorMeter(model) as meter:
        step_fn()
    return memory_breakdown(model, meter.bytes, optimizer)
