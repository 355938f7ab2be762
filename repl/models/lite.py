"""Plain modules for RepL's `lite` operator (docs/method.md, "The operator"): one residual sub-layer of a block.

A trained `lite` surrogate bakes into one of these; they depend on torch.nn only. Submodule names are
the original block's (conv1/bn1, conv3/bn3, downsample; ConvNeXt's norm, mlp, gamma), so weights keep their names.
"""
from __future__ import annotations

from typing import Dict, Optional

import torch
from torch import nn


class LiteBasicBlock(nn.Module):
    """act(bn1(conv1(x)) + shortcut(x)): a BasicBlock with one 3x3 conv instead of two."""

    def __init__(self, conv1: nn.Module, bn1: nn.Module, act: nn.Module, downsample: Optional[nn.Module] = None) -> None:
        super().__init__()
        self.conv1 = conv1
        self.bn1 = bn1
        self.act = act
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.act(self.bn1(self.conv1(x)) + shortcut)


class LiteBottleneck(nn.Module):
    """act(bn3(conv3(act1(bn1(conv1(x))))) + shortcut(x)): a Bottleneck without its 3x3 conv.

    The block's stride sits on conv1 (a strided 1x1 conv, like the projection shortcut).
    """

    def __init__(self, conv1: nn.Module, bn1: nn.Module, act1: nn.Module, conv3: nn.Module, bn3: nn.Module,
                 act: nn.Module, downsample: Optional[nn.Module] = None) -> None:
        super().__init__()
        self.conv1 = conv1
        self.bn1 = bn1
        self.act1 = act1
        self.conv3 = conv3
        self.bn3 = bn3
        self.act = act
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.bn3(self.conv3(self.act1(self.bn1(self.conv1(x)))))
        return self.act(out + shortcut)


class LiteTransformerBlock(nn.Module):
    """x + post(mlp(norm2(x))): a pre-norm transformer block without its attention sub-layer.

    `post` are the block's own modules applied to the MLP output (LayerScale, drop-path, dropout),
    kept under their original names so that weights (e.g. `ls2.gamma`) keep theirs. The attention
    arguments timm passes to every block (`blk(x, attn_mask=..., is_causal=...)`) are accepted and
    ignored: there is no attention here.
    """

    def __init__(self, norm2: nn.Module, mlp: nn.Module, post: Dict[str, nn.Module]) -> None:
        super().__init__()
        self.norm2 = norm2
        self.mlp = mlp
        self.post = tuple(post)
        for name, module in post.items():
            self.add_module(name, module)

    def forward(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None, is_causal: bool = False) -> torch.Tensor:
        y = self.mlp(self.norm2(x))
        for name in self.post:
            y = getattr(self, name)(y)
        return x + y


class LiteConvNeXtBlock(nn.Module):
    """drop_path(gamma * mlp(norm(x))) + shortcut(x): a ConvNeXt block without its depthwise conv (`conv_dw`).

    NCHW in and out. With `conv_mlp` the norm and MLP work channels first (LayerNorm2d, 1x1 convs);
    else the tensor is permuted to NHWC around them (LayerNorm, Linear), as the block does. `gamma`
    (layer scale, or None) is this module's own parameter, as it was the block's, so its name is kept.
    """

    def __init__(self, norm: nn.Module, mlp: nn.Module, gamma: Optional[nn.Parameter], shortcut: nn.Module,
                 drop_path: nn.Module, conv_mlp: bool) -> None:
        super().__init__()
        self.use_conv_mlp = conv_mlp
        self.norm = norm
        self.mlp = mlp
        self.register_parameter("gamma", gamma)
        self.shortcut = shortcut
        self.drop_path = drop_path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.use_conv_mlp:
            y = self.mlp(self.norm(y))
        else:
            y = self.mlp(self.norm(y.permute(0, 2, 3, 1))).permute(0, 3, 1, 2)
        if self.gamma is not None:
            y = y.mul(self.gamma.reshape(1, -1, 1, 1))
        return self.drop_path(y) + self.shortcut(x)


class LitePreNormMLP(nn.Module):
    """x + mlp(norm(x)): a Hugging Face decoder layer without its attention sub-layer.

    The norm keeps the layer's own name (`ln_2` for GPT-2, `post_attention_layernorm` for Llama), so
    weights keep theirs. The attention arguments the HF model passes to every layer (cache, mask,
    `position_embeddings`, positionally or by keyword) are accepted and ignored: there is no attention here.
    """

    def __init__(self, norm_name: str, norm: nn.Module, mlp: nn.Module) -> None:
        super().__init__()
        self.norm_name = norm_name
        self.add_module(norm_name, norm)
        self.mlp = mlp

    def forward(self, x: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        return x + self.mlp(getattr(self, self.norm_name)(x))
