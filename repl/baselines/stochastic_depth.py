"""`stochastic_depth` (Huang et al. 2016, "Deep Networks with Stochastic Depth").

Block l of L (l = 1..L, all blocks of the sequence) survives each training mini-batch with
p_l = 1 - l / L * (1 - survival_last), a linear decay to `repl.survival_last` (0.5 in the paper).
A block that does not survive is really not computed: its residual branch is skipped and only
its shortcut (projection if any) and output activation run. At test time the residual branch is
scaled by p_l. One draw per block per forward, from torch's default CPU generator (so runs are
reproducible under `torch.manual_seed`; DDP ranks must share the seed to drop the same blocks).

Each block becomes a `StochasticDepthBlock` that holds the block's own submodules under their
original names, and the parameters and buffers set on the block itself (ConvNeXt's `gamma`), so
state_dict keys are unchanged (`layer2.0.conv1.weight` stays as it is).
"""
from __future__ import annotations

from typing import Any, List, Sequence, Tuple

import torch
from torch import nn

from repl.baselines.residual import ResidualParts
from repl.families import BlockInfo, get_module, set_module
from repl.method.config import ReplConfig
from repl.method.plan import Plan, planned_blocks
from repl.method.registry import MethodRecord, Selection, always


def survival_probabilities(num_blocks: int, survival_last: float) -> List[float]:
    """p_l = 1 - l / L * (1 - survival_last) for l = 1..L (Huang et al. 2016, linear decay rule)."""
    return [1.0 - (l / num_blocks) * (1.0 - survival_last) for l in range(1, num_blocks + 1)]


class StochasticDepthBlock(ResidualParts):
    """A residual block whose branch runs with probability `survival` in training, scaled by it in eval."""

    def __init__(self, block: nn.Module, info: BlockInfo, survival: float) -> None:
        super().__init__(block, info, [name for name, _ in block.named_children()], whole=True)
        self.survival = survival

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        """Further arguments (a transformer block's attention mask) go to the block's own forward."""
        if not self.training:
            return self.scaled(x, self.survival, kwargs, args)
        if torch.rand(()).item() < self.survival:
            return self.full(x, *args, **kwargs)
        return self.skipped(x, kwargs)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, survival={self.survival:.4f}"


def wrap_blocks(model: nn.Module, infos: Sequence[BlockInfo], num_blocks: int, survival_last: float) -> None:
    """Make each block in `infos` a StochasticDepthBlock, in place, with the survival of its place among
    all `num_blocks` blocks of the sequence."""
    survival = survival_probabilities(num_blocks, survival_last)
    for info in infos:
        set_module(model, info.path, StochasticDepthBlock(get_module(model, info.path), info, survival[info.index]))


def apply_stochastic_depth(model: nn.Module, plan: Plan, blocks: Sequence[BlockInfo]) -> int:
    """Wrap every planned block (the whole sequence) in place; no parameter is removed, so returns 0."""
    wrap_blocks(model, planned_blocks(plan, blocks), plan.num_blocks, plan.settings["survival_last"])
    return 0


def _apply(model: nn.Module, plan: Plan, blocks: Sequence[BlockInfo], cfg: ReplConfig) -> Tuple[int, int]:
    return apply_stochastic_depth(model, plan, blocks), 0


def describe(plan: Plan) -> str:
    """The plan line: every block, and the survival at the last."""
    return (f"plan: method={plan.method} on all {plan.num_blocks} {plan.family} blocks, survival decaying linearly "
            f"to {plan.settings.get('survival_last')} at the last")


METHOD = MethodRecord(
    name="stochastic_depth",
    summary="stochastic depth (Huang et al. 2016) over the whole block sequence, survival decaying linearly",
    selection=Selection.ALL,
    apply=_apply,
    describe=describe,
    uses_ratio=False,
    switches=frozenset({"survival_last"}),
    skips_blocks=always,
)
