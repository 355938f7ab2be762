"""Measure FLOPs and memory on one real batch without disturbing training."""
from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn

from repl.engine.measure.flops import flop_counter
from repl.engine.measure.memory import SavedTensorMeter, memory_breakdown
from repl.engine.measure.params import unwrap_model

LossFn = Callable[[nn.Module, Any], torch.Tensor]


def _cuda_devices(module: nn.Module) -> list[int]:
    """CUDA device indices the module's tensors live on (whose RNG a forward may draw from)."""
    tensors = [*module.parameters(), *module.buffers()]
    return sorted({t.device.index or 0 for t in tensors if t.device.type == "cuda"})


@contextmanager
def preserved_training_state(module: nn.Module) -> Iterator[None]:
    """Undo what a forward+backward does to training state: buffers, .grad fields, RNG streams.

    Grads: each parameter's .grad is set aside (so backward cannot accumulate into it) and put
    back afterwards. Buffers (e.g. BatchNorm running stats, num_batches_tracked) are copied and
    restored in place. RNG: torch CPU and the module's CUDA devices, Python `random`, NumPy's
    global generator. Parameters are not copied: a forward+backward does not change them.
    """
    params = list(module.parameters())
    grads = [p.grad for p in params]
    buffers = [(b, b.clone()) for b in module.buffers()]
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=_cuda_devices(module)):
            for p in params:
                p.grad = None
            yield
    finally:
        with torch.no_grad():
            for b, saved in buffers:
                b.copy_(saved)
        for p, g in zip(params, grads):
            p.grad = g
        random.setstate(py_state)
        np.random.set_state(np_state)


def probe_step(
    model: nn.Module, loss_fn: LossFn, batch: Any, optimizer: torch.optim.Optimizer | None = None
) -> dict[str, Any]:
    """One forward+backward of `loss_fn(model, batch)` measured for {"flops", "memory"}.

    Runs on the unwrapped module (no DDP gradient sync, no torch.compile recompilation) in its
    current train/eval mode, then restores training state (see `preserved_training_state`), so
    a run with probes is bit-identical to one without. `memory` is `memory_breakdown`'s dict.
    """
    module = unwrap_model(model)
    with preserved_training_state(module):
        with flop_counter() as counter:
            with SavedTensorMeter(module) as meter:
                loss = loss_fn(module, batch)
            loss.backward()  # meter closed: its references do not keep activations alive here
    return {
        "flops": int(counter.get_total_flops()),
        "memory": memory_breakdown(module, meter.bytes, optimizer),
    }
