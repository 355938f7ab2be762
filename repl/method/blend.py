"""`blend(p, a, n, b) = a * p + b * n` as one autograd node, for a synthesized tensor with scalar coefficients.

The fusion's common case (docs/method.md, "Fusion"): both neighbours have the tensor at the target's shape and
each coefficient is a single number (`repl.fusion=scalar` or `tensor`). Written as `mul` and `addcmul`, autograd
computes each coefficient's gradient as `(g * p).sum()`: a weight-sized product written to memory only to be
summed to one number. This node computes it as `dot(g, p)` instead, which reads `g` and `p` once and writes
nothing, and it leaves the neighbours' gradients (`a * g`, `b * g`) as they were.

A Python autograd node costs ~15 us more per call than the two built-in ones, so it pays only on large tensors
(`pays`). Forward and backward of one synthesized tensor, against `mul`/`addcmul` (one CPU thread, interleaved):
1.41x the time at 4k elements, 1.10x at 37k (a 64-channel 3x3 conv), 0.99x at 64k, 0.73x at 262k, 0.54x at 1M.
With it, RepL's own cost at batch 2 of ViT-B `lite` (23.6M synthesized elements a step) fell from 1.063x to
1.022x of its baked network; on the CIFAR ResNets (every tensor below 64k) it cost ~2% (ResNet-32 1.042x -> 1.059x,
ResNet-110 1.049x -> 1.074x of the baked networks; results/bench/cost_cpu_cifar_old.md, cost_cpu_cifar_blend.md).

The forward runs the same kernels as the `mul`/`addcmul` it replaces (and as the no-grad rebuild in
`Fusion.weight`), so the weights are the same bits; the coefficients' gradients are the same sums in another
order (a dot product's), equal to float rounding.
"""
from __future__ import annotations

from typing import Any, Optional, Tuple

import torch


class Blend(torch.autograd.Function):
    """`a * p + b * n` with 0-dim `a` and `b`; backward: `a * g`, `dot(g, p)`, `b * g`, `dot(g, n)`."""

    @staticmethod
    def forward(p: torch.Tensor, a: torch.Tensor, n: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        out = torch.mul(p, a)
        return out.addcmul_(n, b)

    @staticmethod
    def setup_context(ctx: Any, inputs: Tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        ctx.save_for_backward(*inputs)  # p and n are the neighbours' parameters: in memory anyway

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> Tuple[Optional[torch.Tensor], ...]:
        p, a, n, b = ctx.saved_tensors
        need_p, need_a, need_n, need_b = ctx.needs_input_grad
        flat = g.reshape(-1)
        return (g * a if need_p else None,
                torch.dot(flat, p.reshape(-1)) if need_a else None,
                g * b if need_n else None,
                torch.dot(flat, n.reshape(-1)) if need_b else None)


MIN_ELEMENTS = 1 << 16  # `pays`: below this many elements the node's Python overhead outweighs what it saves


def pays(elements: int) -> bool:
    """Whether a synthesized tensor of `elements` elements is worth a `Blend` node (the module docstring)."""
    return elements >= MIN_ELEMENTS


def blendable(p: torch.Tensor, a: torch.Tensor, n: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether `blend` computes this term pair: the same shape and dtype for both sources and both coefficients
    0-dim of that dtype (`torch.dot` takes one dtype)."""
    return (p.shape == n.shape and a.dim() == 0 and b.dim() == 0
            and p.dtype == n.dtype == a.dtype == b.dtype)


def blend(p: torch.Tensor, a: torch.Tensor, n: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """`a * p + b * n` (a new tensor) through `Blend`: see the module docstring."""
    return Blend.apply(p, a, n, b)
