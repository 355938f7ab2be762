"""timm ConvNeXt: the `ConvNeXtBlock`s of every stage, `stages.K.blocks.i`, as one sequence in forward order.

A block is `x + drop_path(gamma * mlp(norm(conv_dw(x))))` (`Residual.FORWARD`); widths change in the
stage's `downsample`, between blocks, so a stage's first block fuses with a narrower previous block
through fusion's channel adapters. Every tensor is synthesizable in PyTorch's `[out, in, *kernel]`
layout: the depthwise `conv_dw.weight` is `[C, 1, k, k]` (one input channel per group) and `gamma`
(layer scale, `[C]`) sits on the block itself. The lite sub-layer drops the spatial mixer `conv_dw`.
"""
from __future__ import annotations

from typing import List, Tuple

from torch import nn

from repl.errors import UnsupportedModelError
from repl.families.contract import (
    BlockInfo, FamilyAdapter, LiteOperator, Residual, is_instance_of_model, param_shapes,
)
from repl.models.lite import LiteConvNeXtBlock

NAME = "timm_convnext"
KIND = "convnext"
FORWARD_ORDER = ("conv_dw", "norm", "mlp", "drop_path", "shortcut")  # the block's modules as its forward runs them


def _lite_convnext(block: nn.Module, info: BlockInfo) -> nn.Module:
    """The block without `conv_dw`: its norm, MLP, `gamma`, drop-path and shortcut (the block is consumed)."""
    return LiteConvNeXtBlock(block.norm, block.mlp, block.gamma, block.shortcut, block.drop_path, block.use_conv_mlp)


LITE_CONVNEXT = LiteOperator(frozenset(FORWARD_ORDER), _lite_convnext)


def _classes() -> Tuple[type, type]:
    from timm.models.convnext import ConvNeXt, ConvNeXtBlock

    return ConvNeXt, ConvNeXtBlock


def detect(model: nn.Module) -> bool:
    """Whether `model` is a timm ConvNeXt."""
    return is_instance_of_model(model, _classes)


def block_info(index: int, path: str, block: nn.Module) -> BlockInfo:
    """Describe one ConvNeXtBlock; a block that changes width or stride is not `x + f(x)` and is refused."""
    conv = block.conv_dw
    if conv.in_channels != conv.out_channels or conv.stride != (1, 1):
        raise UnsupportedModelError(
            f"{NAME} block {path} changes shape ({conv.in_channels} -> {conv.out_channels} channels, stride "
            f"{conv.stride[0]}); only blocks of the form x + f(x) are supported (timm changes shape in the stage's downsample)"
        )
    names = dict(block.named_children())
    return BlockInfo(
        index=index, path=path, family=NAME, kind=KIND, in_channels=conv.in_channels, out_channels=conv.out_channels,
        stride=1, has_projection=False, param_shapes=param_shapes(block),
        branch=tuple(n for n in FORWARD_ORDER if n in names) + tuple(n for n in names if n not in FORWARD_ORDER),
        residual=Residual.FORWARD, lite=LITE_CONVNEXT,
    )


def enumerate_blocks(model: nn.Module) -> List[BlockInfo]:
    """The blocks of `model.stages[K].blocks`, all stages in order; other block types are refused."""
    _, block_class = _classes()
    infos: List[BlockInfo] = []
    for k, stage in enumerate(model.stages):
        for i, block in stage.blocks.named_children():
            path = f"stages.{k}.blocks.{i}"
            if type(block) is not block_class:
                raise UnsupportedModelError(
                    f"{NAME} block {path} is a {type(block).__name__}; supported: {block_class.__module__}.{block_class.__name__}"
                )
            infos.append(block_info(len(infos), path, block))
    return infos


TIMM_CONVNEXT = FamilyAdapter(NAME, "timm ConvNeXt (stages of ConvNeXtBlocks)", detect, enumerate_blocks)
