"""Training FLOPs of one step, counted by torch's FLOP counter."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch.utils.flop_counter import FlopCounterMode


def train_flops(step_fn: Callable[[], Any]) -> int:
    """FLOPs of everything `step_fn` runs (a forward plus backward), matmul/conv/attention only.

    Elementwise ops, norms and the optimizer update are not counted (FlopCounterMode's rules).
    This runs the step for real; use `probe_step` to measure without disturbing training.
    """
    with FlopCounterMode(display=False) as counter:
        step_fn()
    return int(counter.get_total_flops())
