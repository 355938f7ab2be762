"""`freeze`: the planned blocks stay in the network, frozen at their initial values (2024 "frozen layers").

Every parameter of a planned block gets requires_grad=False. Its BatchNorm layers become
`EvalBatchNorm2d`s (same state_dict keys) that stay in eval mode even under `model.train()`: they
normalise with their running statistics, which never change, so the block is a fixed function
from start to end, as "frozen at init" says. (At init the running statistics are mean 0 and
variance 1, so those norms are the identity affine map until a pretrained checkpoint says
otherwise.) Gradients still flow through a frozen block to the blocks before it.
"""
from __future__ import annotations

from typing import Sequence, Tuple

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from repl.errors import UnsupportedModelError
from repl.families import BlockInfo, get_module, set_module
from repl.method.config import ReplConfig
from repl.method.plan import Plan, planned_blocks
from repl.method.registry import MethodRecord, Selection


class EvalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d that ignores train(): always normalises with its running statistics and never updates them."""

    @classmethod
    def from_batchnorm(cls, bn: nn.BatchNorm2d) -> "EvalBatchNorm2d":
        """A copy of `bn` holding the same tensors (same device and dtype), in eval mode."""
        new = cls(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
        new.load_state_dict(bn.state_dict(), assign=True)
        return new.eval()

    def train(self, mode: bool = True) -> "EvalBatchNorm2d":
        return super().train(False)


def apply_freeze(model: nn.Module, plan: Plan, blocks: Sequence[BlockInfo]) -> int:
    """Freeze the planned blocks in place; returns the number of frozen parameters."""
    frozen = 0
    for info in planned_blocks(plan, blocks):
        block = get_module(model, info.path)
        for name, module in list(block.named_modules()):
            if type(module) is nn.BatchNorm2d:
                set_module(block, name, EvalBatchNorm2d.from_batchnorm(module))
            elif isinstance(module, _BatchNorm):
                raise UnsupportedModelError(
                    f"repl.method=freeze keeps BatchNorm2d in eval mode; "
                    f"{info.path}.{name} is a {type(module).__name__}"
                )
        for p in block.parameters():
            p.requires_grad_(False)
            frozen += p.numel()
    return frozen


def _apply(model: nn.Module, plan: Plan, blocks: Sequence[BlockInfo], cfg: ReplConfig) -> Tuple[int, int]:
    return apply_freeze(model, plan, blocks), 0


METHOD = MethodRecord(
    name="freeze",
    summary="the blocks RepL would replace stay in place, frozen at their initial values",
    selection=Selection.CHOSEN,
    apply=_apply,
    verb="frozen",
    switches=frozenset({"select", "blocks", "boundary", "seed", "similarity"}),
)
