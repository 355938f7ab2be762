"""`layerdrop` (Fan et al. 2019, "Reducing Transformer Depth on Demand with Structured Dropout").

In training, every block of the sequence is skipped on each mini-batch with the same probability
p = `repl.ratio` (the expected fraction of blocks dropped per batch, so ratio 0 is plain
backprop): a skipped block's residual branch is not computed, only its shortcut runs (projection
and output activation, if any). At eval every block runs, unscaled, as fairseq's LayerDrop does.
One draw per block per forward, from torch's default CPU generator (reproducible under
`torch.manual_seed`; DDP ranks must share the seed to skip the same blocks).

Each block becomes a `LayerDropBlock` holding the block's own submodules under their original
names, so parameters and state_dict keys are unchanged. This file and configs/repl/layerdrop.yaml
are the whole baseline: the method registry finds `METHOD` below (docs/extending.md#adding-a-method).
"""
from __future__ import annotations

from typing import Any, Sequence, Tuple

import torch
from torch import nn

from repl.baselines.residual import ResidualParts
from repl.families import BlockInfo, get_module, set_module
from repl.method.config import ReplConfig
from repl.method.plan import Plan, planned_blocks
from repl.method.registry import MethodRecord, Selection, always


class LayerDropBlock(ResidualParts):
    """A residual block skipped with probability `p` per training forward; always computed in eval."""

    def __init__(self, block: nn.Module, info: BlockInfo, p: float) -> None:
        super().__init__(block, info, [name for name, _ in block.named_children()], whole=True)
        self.p = p

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        """Further arguments (a transformer block's attention mask) go to the block's own forward."""
        if self.training and torch.rand(()).item() < self.p:
            return self.skipped(x, kwargs)
        return self.full(x, *args, **kwargs)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, p={self.p:g}"


def apply_layerdrop(model: nn.Module, plan: Plan, blocks: Sequence[BlockInfo], cfg: ReplConfig) -> Tuple[int, int]:
    """Wrap every planned block (the whole sequence) in place with drop probability plan.ratio; removes nothing."""
    for info in planned_blocks(plan, blocks):
        set_module(model, info.path, LayerDropBlock(get_module(model, info.path), info, plan.ratio))
    return 0, 0


def describe(plan: Plan) -> str:
    """The plan line: every block, and the drop probability."""
    return (f"plan: method={plan.method} on all {plan.num_blocks} {plan.family} blocks, each skipped with probability "
            f"{plan.ratio:g} per training batch (repl.ratio); every block runs at eval")


METHOD = MethodRecord(
    name="layerdrop",
    summary="LayerDrop (Fan et al. 2019): each block skipped with probability repl.ratio per training batch",
    selection=Selection.ALL,
    apply=apply_layerdrop,
    describe=describe,
    skips_blocks=always,
)
