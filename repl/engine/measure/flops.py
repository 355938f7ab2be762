"""Training FLOPs of one step, counted by torch's FLOP counter with grouped-convolution backward counted right."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, Sequence

import torch
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count


def conv_backward_flops(grad_out_shape: Sequence[int], x_shape: Sequence[int], w_shape: Sequence[int], _bias: Any,
                        _stride: Any, _padding: Any, _dilation: Any, transposed: bool, _output_padding: Any,
                        _groups: int, output_mask: Sequence[bool], out_shape: Any = None, **_: Any) -> int:
    """FLOPs of `aten.convolution_backward`: each gradient asked for (input, weight) costs the forward's MACs.

    grad_input is the transposed convolution of grad_out with the same weight, grad_weight the correlation of
    the input with grad_out: every multiply-add of the forward appears once in each. The forward's count
    (`conv_flop_count` with the weight's [C_out, C_in / groups, *k] shape) already accounts for groups. torch's
    own rule (2.14) rebuilds both from transposed shapes that drop `groups`, which counts a depthwise conv's
    backward C times too high (a ConvNeXt 7x7 depthwise conv at 96 channels: 5.7 GFLOP instead of 0.12).
    For groups = 1 the two rules agree.
    """
    forward = conv_flop_count(list(x_shape), list(w_shape), list(grad_out_shape), transposed=transposed)
    return forward * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


def flop_counter() -> FlopCounterMode:
    """A silent FlopCounterMode with the project's corrections (conv_backward_flops)."""
    return FlopCounterMode(display=False, custom_mapping={torch.ops.aten.convolution_backward: conv_backward_flops})


def train_flops(step_fn: Callable[[], Any]) -> int:
    """FLOPs of everything `step_fn` runs (a forward plus backward), matmul/conv/attention only.

    Elementwise ops, norms and the optimizer update are not counted (FlopCounterMode's rules).
    This runs the step for real; use `probe_step` to measure without disturbing training.
    """
    with flop_counter() as counter:
        step_fn()
    return int(counter.get_total_flops())
