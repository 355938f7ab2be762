"""A residual block rebuilt from its BlockInfo, so a baseline can skip or scale the residual branch.

    out = out_act(scale * branch(x) + shortcut(x))      branch computed
    out = out_act(shortcut(x))                          branch skipped, projection shortcut
    out = x                                             branch skipped, identity shortcut

The last line leaves out `out_act`: the block's input is already the output of a ReLU (previous
block or stem), so ReLU(x) = x, and an in-place ReLU on x would corrupt the previous block's
saved activation. For blocks whose output activation is not a ReLU this is an approximation.

Transformer blocks (pre-norm, two residual sub-layers, no output activation) have no single
branch: their residual is `block(x) - x`, computed by the block class's own forward over the
same submodules, and without it the block is the identity.
"""
from __future__ import annotations

from typing import Any, Iterable, Optional

import torch
from torch import nn

from repl.errors import UnsupportedModelError
from repl.method.blocks import BlockInfo


class ResidualParts(nn.Module):
    """Holds some of a block's own submodules under their original names (so state_dict keys keep theirs)."""

    def __init__(self, block: nn.Module, info: BlockInfo, names: Iterable[str]) -> None:
        super().__init__()
        # Transformer blocks run their class's own forward on these same submodules.
        self._block_forward = type(block).forward if info.kind == "transformer" else None
        if self._block_forward is None and (not info.branch or info.out_act is None):
            raise UnsupportedModelError(
                f"{info.family} block {info.path} ({info.kind}) is not a described residual block"
            )
        if next(block.parameters(recurse=False), None) is not None:
            raise UnsupportedModelError(f"{info.family} block {info.path} has parameters outside its submodules")
        self.info = info
        for name in dict.fromkeys(names):
            self.add_module(name, getattr(block, name))

    def full(self, x: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        """The block's output with its residual computed, exactly as the original block.

        Keyword arguments (timm's `attn_mask=`, `is_causal=`) go to a transformer block's own forward.
        """
        if self._block_forward is not None:
            return self._block_forward(self, x, **kwargs)
        return self.merge(x, self.residual(x))

    def residual(self, x: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        """The residual branch, module by module in forward order (transformers: block(x) - x)."""
        if self._block_forward is not None:
            return self._block_forward(self, x, **kwargs) - x
        for name in self.info.branch:
            x = getattr(self, name)(x)
        return x

    def merge(self, x: torch.Tensor, residual: Optional[torch.Tensor]) -> torch.Tensor:
        """Block output from its input and its (possibly skipped, possibly scaled) residual."""
        if residual is None and self.info.shortcut is None:
            return x
        shortcut = x if self.info.shortcut is None else getattr(self, self.info.shortcut)(x)
        out = shortcut if residual is None else residual + shortcut
        return out if self.info.out_act is None else getattr(self, self.info.out_act)(out)

    def extra_repr(self) -> str:
        return f"path={self.info.path!r}"
