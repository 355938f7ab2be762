"""timm Swin Transformer: the `SwinTransformerBlock`s of every stage, `layers.K.blocks.i`, as one sequence.

A block takes and returns NHWC `[B, H, W, C]` tensors: `x + drop_path1(attn(norm1(x)))` over shifted or
unshifted windows, then `+ drop_path2(mlp(norm2(x)))` (`Residual.FORWARD`). Patch merging (width x2,
resolution /2) is the next stage's `downsample`, between blocks. Every tensor is synthesizable in the
default layout except `attn.relative_position_bias_table` (`[(2W-1)^2, heads]`: indexed by relative
position and head, not by channel), which stays the block's own; the `attn_mask` buffer stays with
the block. The lite sub-layer is the MLP sub-layer, as in the ViT family: its norm, LayerNorm and
Linear act on the last dim, so on NHWC they compute what the block computes on `[B, H*W, C]`.
"""
from __future__ import annotations

from typing import List, Tuple

from torch import nn

from repl.errors import UnsupportedModelError
from repl.families.contract import BlockInfo, FamilyAdapter, Residual, is_instance_of_model, param_shapes
from repl.families.transformer import LITE_TRANSFORMER

NAME = "timm_swin"
KIND = "swin"
POSITION_TABLE = "attn.relative_position_bias_table"  # not channel-shaped: never synthesized


def _classes() -> Tuple[type, type]:
    from timm.models.swin_transformer import SwinTransformer, SwinTransformerBlock

    return SwinTransformer, SwinTransformerBlock


def detect(model: nn.Module) -> bool:
    """Whether `model` is a timm Swin Transformer (v1)."""
    return is_instance_of_model(model, _classes)


def block_info(index: int, path: str, block: nn.Module) -> BlockInfo:
    """Describe one SwinTransformerBlock (definition order of its modules is forward order)."""
    shapes = param_shapes(block)
    return BlockInfo(
        index=index, path=path, family=NAME, kind=KIND, in_channels=block.dim, out_channels=block.dim, stride=1,
        has_projection=False, param_shapes=shapes, branch=tuple(n for n, _ in block.named_children()),
        residual=Residual.FORWARD, synthesizable=frozenset(n for n, _ in shapes if n != POSITION_TABLE),
        lite=LITE_TRANSFORMER,
    )


def enumerate_blocks(model: nn.Module) -> List[BlockInfo]:
    """The blocks of `model.layers[K].blocks`, all stages in order; other block types are refused."""
    _, block_class = _classes()
    infos: List[BlockInfo] = []
    for k, stage in enumerate(model.layers):
        for i, block in stage.blocks.named_children():
            path = f"layers.{k}.blocks.{i}"
            if type(block) is not block_class:
                raise UnsupportedModelError(
                    f"{NAME} block {path} is a {type(block).__name__}; supported: {block_class.__module__}.{block_class.__name__}"
                )
            infos.append(block_info(len(infos), path, block))
    return infos


TIMM_SWIN = FamilyAdapter(NAME, "timm SwinTransformer (v1; stages of SwinTransformerBlocks)", detect, enumerate_blocks)
