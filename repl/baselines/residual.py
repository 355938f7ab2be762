"""A residual block rebuilt from its BlockInfo, so a baseline can skip or scale its residual.

The block family says how (`BlockInfo.residual`, repl/families/contract.py):

`Residual.BRANCH` (a ResNet block):

    out = out_act(scale * branch(x) + shortcut(x))      branch computed
    out = out_act(shortcut(x))                          branch skipped, projection shortcut
    out = x                                             branch skipped, identity shortcut

The last line leaves out `out_act`: the block's input is already the output of a ReLU (previous
block or stem), so ReLU(x) = x, and an in-place ReLU on x would corrupt the previous block's
saved activation. For blocks whose output activation is not a ReLU this is an approximation.

`Residual.FORWARD` (pre-norm transformer, ConvNeXt): the residual is `block(x) - x`, computed by the
block class's own forward over the same submodules, parameters and buffers; without it the block is
the identity. The arguments after the hidden state (keywords, and the positional ones HF GPT2Model
passes: cache, mask, encoder states) are passed to that forward, and a tuple-returning block keeps
returning its tuple (`BlockInfo.call`).
"""
from __future__ import annotations

import inspect
import types
from typing import Any, Iterable, Mapping, Optional, Sequence

import torch
from torch import nn

from repl.errors import UnsupportedModelError
from repl.families.contract import BlockInfo, Residual


class ResidualParts(nn.Module):
    """Holds some of a block's own submodules under their original names (so state_dict keys keep theirs).

    With `whole=True` it also holds the parameters and buffers set on the block itself (ConvNeXt's
    `gamma`) and, for `Residual.FORWARD`, the block's plain attributes and methods its forward reads
    (Swin's `shift_size`, `_attn`).
    """

    def __init__(self, block: nn.Module, info: BlockInfo, names: Iterable[str], whole: bool = False) -> None:
        super().__init__()
        forward_rule = info.residual is Residual.FORWARD
        if not forward_rule and (not info.branch or info.out_act is None):
            raise UnsupportedModelError(
                f"{info.family} block {info.path} ({info.kind}) is not a described residual block"
            )
        own = dict(block.named_parameters(recurse=False))
        if own and not forward_rule:
            raise UnsupportedModelError(
                f"{info.family} block {info.path} has parameters outside its submodules ({', '.join(own)}); "
                "its family must declare Residual.FORWARD"
            )
        # FORWARD blocks run their class's own forward on these same submodules.
        self._block_class = type(block) if forward_rule else None
        self._block_forward = type(block).forward if forward_rule else None
        self.info = info
        for name in dict.fromkeys(names):
            self.add_module(name, getattr(block, name))
        if whole:
            self._hold_own_state(block, own)

    def _hold_own_state(self, block: nn.Module, own: Mapping[str, nn.Parameter]) -> None:
        """The block's own parameters, buffers (persistent as they were) and public plain attributes."""
        for name, param in own.items():
            self.register_parameter(name, param)
        keys = set(block.state_dict(keep_vars=True))
        # torch.nn.Module's own registry of the block's buffers: named_buffers skips a buffer set to None, which the
        # forward reads all the same (Swin's attn_mask where the window covers the whole map and nothing shifts)
        for name, buf in block._buffers.items():
            self.register_buffer(name, buf, persistent=buf is not None and name in keys)
        if self._block_forward is not None:
            for name, value in vars(block).items():
                if not name.startswith("_") and not hasattr(self, name):
                    setattr(self, name, value)

    def __getattr__(self, name: str) -> Any:
        """Submodules, parameters and buffers as any module; else a method of a FORWARD block's class, bound here,
        or a plain class-level setting of it."""
        try:
            return super().__getattr__(name)
        except AttributeError:
            cls = self.__dict__.get("_block_class")
            found = inspect.getattr_static(cls, name, None) if cls is not None else None
            if isinstance(found, types.FunctionType):
                return types.MethodType(found, self)
            if isinstance(found, (bool, int, float, str)):  # a class-level setting (HF's gradient_checkpointing = False)
                return found
            raise

    def full(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        """What the original block returns, with its residual computed.

        Further arguments (timm's `attn_mask=`, `is_causal=`; HF's cache and mask) go to a FORWARD block's own forward.
        """
        if self._block_forward is not None:
            return self._block_forward(self, x, *args, **kwargs)
        return self.merge(x, self.residual(x))

    def residual(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        """The residual branch, module by module in forward order (FORWARD blocks: block(x) - x)."""
        if self._block_forward is not None:
            return self.info.call.hidden(self._block_forward(self, x, *args, **kwargs)) - x
        for name in self.info.branch:
            x = getattr(self, name)(x)
        return x

    def merge(self, x: torch.Tensor, residual: Optional[torch.Tensor]) -> torch.Tensor:
        """Block output (hidden state) from its input and its (possibly skipped, possibly scaled) residual."""
        if residual is None and self.info.shortcut is None:
            return x
        shortcut = x if self.info.shortcut is None else getattr(self, self.info.shortcut)(x)
        out = shortcut if residual is None else residual + shortcut
        return out if self.info.out_act is None else getattr(self, self.info.out_act)(out)

    def skipped(self, x: torch.Tensor, kwargs: Mapping[str, Any]) -> Any:
        """What the block returns with its residual skipped (a tuple for tuple-returning blocks)."""
        return self.info.call.skipped(self.merge(x, None), kwargs)

    def scaled(self, x: torch.Tensor, scale: float, kwargs: Mapping[str, Any], args: Sequence[Any] = ()) -> Any:
        """What the block returns with its residual multiplied by `scale` (`args`: positional arguments after x)."""
        if self._block_forward is None:
            return self.merge(x, self.residual(x) * scale)
        out = self._block_forward(self, x, *args, **kwargs)
        hidden = self.info.call.hidden(out)
        return self.info.call.with_hidden(out, self.merge(x, (hidden - x) * scale))

    def extra_repr(self) -> str:
        return f"path={self.info.path!r}"
