"""`drop`: the planned blocks removed outright ("directly skipping or removing layers").

A dropped block becomes a `ShortcutOnly`: with a projection shortcut it keeps only the projection
(and the block's output activation), so shapes still match; otherwise it is the identity (a
tuple-returning block returns its hidden state in the tuple its family declares). Its state_dict
holds only `<path>.downsample.*` (same keys as in the original block), or nothing.
"""
from __future__ import annotations

from typing import Any, Sequence, Tuple

import torch
from torch import nn

from repl.baselines.residual import ResidualParts
from repl.families import BlockInfo, get_module, set_module
from repl.method.config import ReplConfig
from repl.method.plan import Plan, planned_blocks
from repl.method.registry import MethodRecord, Selection


class ShortcutOnly(ResidualParts):
    """What is left of a residual block without its residual branch."""

    def __init__(self, block: nn.Module, info: BlockInfo) -> None:
        kept = [info.shortcut, info.out_act] if info.shortcut is not None else []
        super().__init__(block, info, kept)

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        """The shortcut alone; further arguments (a transformer block's attention mask) have nothing to act on."""
        return self.skipped(x, kwargs)


def apply_drop(model: nn.Module, plan: Plan, blocks: Sequence[BlockInfo]) -> int:
    """Replace each planned block by its ShortcutOnly, in place; returns the number of parameters removed."""
    removed = 0
    for info in planned_blocks(plan, blocks):
        block = get_module(model, info.path)
        kept = ShortcutOnly(block, info)
        removed += sum(p.numel() for p in block.parameters()) - sum(p.numel() for p in kept.parameters())
        set_module(model, info.path, kept)
    return removed


def _apply(model: nn.Module, plan: Plan, blocks: Sequence[BlockInfo], cfg: ReplConfig) -> Tuple[int, int]:
    return apply_drop(model, plan, blocks), 0


METHOD = MethodRecord(
    name="drop",
    summary="the blocks RepL would replace are removed outright (shortcut only)",
    selection=Selection.CHOSEN,
    apply=_apply,
    verb="dropped",
    switches=frozenset({"select", "blocks", "boundary", "seed", "similarity"}),
)
