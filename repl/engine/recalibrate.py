"""BatchNorm recalibration (trainer.bn_recalibrate): running statistics recomputed for the current weights.

RepL's synthesized weights move with both neighbours, faster than a BatchNorm's running statistics
(an exponential average, momentum 0.1) follow, so a model evaluated with its running statistics
scores far below the same model with batch statistics (docs/method.md, "BatchNorm statistics").
`recalibrate_batchnorm` resets the statistics and re-estimates them as the plain average over N
training batches, run forward in train mode without gradient. Parameters are not touched, and the
RNG streams are restored afterwards, so training goes on bit for bit as without it.
"""
from __future__ import annotations

import itertools
from typing import Any, Callable, Iterable, Iterator, List

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from repl.engine.checkpoint import rng_state, set_rng_state


def batchnorm_modules(model: nn.Module) -> List[_BatchNorm]:
    """The BatchNorm-type modules of `model` that keep running statistics (any _BatchNorm subclass: BatchNorm1d/2d/3d,
    SyncBatchNorm, lazy ones), in module order."""
    return [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


def calibration_batches(data: Any, epoch: int) -> Iterator[Any]:
    """Training batches from the start of `epoch` on, continuing into the next epochs (and ending at an epoch that
    yields none): a fresh iterator of the data module's (seed, epoch) order, apart from the one training reads.
    Lazy: nothing is loaded until it is iterated."""
    for e in itertools.count(epoch):
        empty = True
        for batch in data.train_batches(e):
            empty = False
            yield batch
        if empty:
            return


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches: Iterable[Any], forward: Callable[[nn.Module, Any], Any],
                          steps: int) -> int:
    """Re-estimate the running statistics of every BatchNorm of `model` over `steps` batches; returns the batches used.

    Each BatchNorm that keeps running statistics and is in train mode once `model.train()` has run (a module
    whose train() keeps its norms frozen, as mmdet's norm_eval does, keeps them untouched) is reset and set to
    momentum=None (PyTorch's cumulative average), then `forward(model, batch)` runs on up to `steps` batches
    from `batches` in train mode without gradient: running_mean becomes the mean of the batch means and
    running_var the mean of the unbiased batch variances. Afterwards each module's momentum and every
    module's train/eval mode are restored, and so are the python, numpy and torch RNG states (a forward
    that draws, e.g. mixup, leaves training's streams as they were). A model without such a BatchNorm, or
    steps=0, returns 0 at once without touching `batches`; if `batches` yields nothing the old statistics are kept.
    """
    if steps <= 0:
        return 0
    modes = [(m, m.training) for m in model.modules()]
    model.train()
    norms = [m for m in batchnorm_modules(model) if m.training]
    if not norms:
        _restore_modes(modes)
        return 0
    saved = [(m, m.momentum, {k: b.clone() for k, b in m.named_buffers(recurse=False)}) for m in norms]
    rng = rng_state()
    used = 0
    try:
        for m in norms:
            m.reset_running_stats()
            m.momentum = None
        for batch in itertools.islice(batches, steps):
            forward(model, batch)
            used += 1
    finally:
        for m, momentum, buffers in saved:
            m.momentum = momentum
            if used == 0:  # nothing was seen: keep the statistics there were
                for name, value in buffers.items():
                    getattr(m, name).copy_(value)
        set_rng_state(rng)
        _restore_modes(modes)
    return used


def _restore_modes(modes: List[tuple]) -> None:
    for module, training in modes:
        module.training = training
