"""Transformer families: the block sequence of timm Vision Transformers and of the project's GPT.

Both are pre-norm residual blocks, `x + attn(norm1(x))` then `+ mlp(norm2(x))`, with the same
submodule names (norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2), so fusion's same-name rule
pairs a block's tensors with its neighbours' and one lite operator serves both: the MLP
sub-layer with its norm, without attention (docs/method.md, "The operator"). A baseline computes
their residual with the block's own forward (`Residual.FORWARD`); timm's attention keywords
(`attn_mask=`, `is_causal=`) are passed through.
"""
from __future__ import annotations

from typing import Callable, List, Tuple

from torch import nn

from repl.errors import UnsupportedModelError
from repl.families.contract import BlockInfo, FamilyAdapter, LiteOperator, Residual, is_instance_of_model, param_shapes
from repl.models.lite import LiteTransformerBlock

KIND = "transformer"


def _lite_transformer(block: nn.Module, info: BlockInfo) -> nn.Module:
    """The block's MLP sub-layer with its norm and the modules after the MLP in forward order (LayerScale,
    drop-path, dropout); the block is consumed."""
    post = info.branch[info.branch.index("mlp") + 1:]
    return LiteTransformerBlock(block.norm2, block.mlp, {n: getattr(block, n) for n in post})


LITE_TRANSFORMER = LiteOperator(
    frozenset({"norm1", "attn", "ls1", "drop_path1", "norm2", "mlp", "ls2", "drop_path2", "drop"}), _lite_transformer
)


def _timm_vit() -> Tuple[type, Tuple[type, ...]]:
    from timm.models.vision_transformer import Block, VisionTransformer

    return VisionTransformer, (Block,)


def _project_gpt() -> Tuple[type, Tuple[type, ...]]:
    from repl.models.gpt import GPT, Block

    return GPT, (Block,)


def transformer_adapter(name: str, description: str,
                        classes: Callable[[], Tuple[type, Tuple[type, ...]]]) -> FamilyAdapter:
    """A family whose blocks are the children of `model.blocks`, in order."""

    def detect(model: nn.Module) -> bool:
        return is_instance_of_model(model, classes)

    def enumerate_blocks(model: nn.Module) -> List[BlockInfo]:
        _, block_classes = classes()
        infos = []
        for child, block in model.blocks.named_children():
            path = f"blocks.{child}"
            if type(block) not in block_classes:
                supported = ", ".join(c.__module__ + "." + c.__name__ for c in block_classes)
                raise UnsupportedModelError(f"{name} block {path} is a {type(block).__name__}; supported: {supported}")
            dim = block.norm1.weight.shape[0]
            infos.append(BlockInfo(
                index=len(infos), path=path, family=name, kind=KIND, in_channels=dim, out_channels=dim, stride=1,
                has_projection=False, param_shapes=param_shapes(block),
                branch=tuple(n for n, _ in block.named_children()),  # definition order is forward order here
                residual=Residual.FORWARD, lite=LITE_TRANSFORMER,
            ))
        return infos

    return FamilyAdapter(name, description, detect, enumerate_blocks)


TIMM_VIT = transformer_adapter("timm_vit", "timm VisionTransformer (ViT, DeiT) with standard Blocks", _timm_vit)
GPT = transformer_adapter("gpt", "repl.models.gpt.GPT (model=lm)", _project_gpt)
