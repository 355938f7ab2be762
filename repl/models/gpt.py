"""A GPT-style decoder for language modelling: pre-norm blocks, causal attention, tied embeddings.

Plain PyTorch in the nanoGPT spirit. Block submodules carry timm's ViT names (norm1, attn.qkv,
attn.proj, norm2, mlp.fc1, mlp.fc2), so RepL treats ViT and LM blocks alike and the same-name rule
of fusion finds each tensor's sources.

    logits = GPT(...)(tokens)          # tokens [B, T] int64 -> logits [B, T, vocab]
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn
from torch.nn import functional as F

from repl.errors import ConfigError


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention where position t attends to positions <= t only."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).reshape(b, t, c))


class Mlp(nn.Module):
    """fc1 -> GELU -> fc2, the position-wise feed-forward sub-layer."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """x + attn(norm1(x)), then + mlp(norm2(x)): one pre-norm decoder layer."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = CausalSelfAttention(dim, heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.norm1(x)))
        return x + self.drop(self.mlp(self.norm2(x)))


class GPT(nn.Module):
    """Token + learned position embeddings, `layers` decoder blocks, final norm, head tied to the embedding."""

    def __init__(self, vocab_size: int, context: int, layers: int = 6, dim: int = 256, heads: int = 4,
                 mlp_ratio: float = 4.0, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % heads:
            raise ConfigError(f"model.kwargs.dim={dim} must be divisible by model.kwargs.heads={heads}")
        self.context = context
        self.tok_emb = nn.Embedding(vocab_size, dim)
        self.pos_emb = nn.Embedding(context, dim)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab_size, bias=False)
        self.head.weight = self.tok_emb.weight  # tied: one tensor, registered once
        self.apply(self._init)
        for block in self.blocks:  # GPT-2: residual projections scaled down with depth
            for proj in (block.attn.proj, block.mlp.fc2):
                nn.init.normal_(proj.weight, std=0.02 / math.sqrt(2 * layers))

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        t = tokens.shape[1]
        if t > self.context:
            raise ValueError(f"sequence of {t} tokens exceeds the model's context of {self.context}")
        x = self.drop(self.tok_emb(tokens) + self.pos_emb(torch.arange(t, device=tokens.device)))
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))


def build_lm(vocab_size: int, seq_len: int, pretrained: bool, context: Optional[int] = None, layers: int = 6,
             dim: int = 256, heads: int = 4, mlp_ratio: float = 4.0, dropout: float = 0.0) -> GPT:
    """The `lm` model of the registry, for a vocabulary of `vocab_size` ids; `context` (model.kwargs) bounds the
    sequence length, the data's `seq_len` when null."""
    context = seq_len if context is None else context
    if pretrained:
        raise ConfigError("model.pretrained=true: the lm model has no published weights; use model.weights=FILE")
    for key, value in {"context": context, "layers": layers, "dim": dim, "heads": heads}.items():
        if value < 1:
            raise ConfigError(f"model.kwargs.{key}={value} must be a positive integer")
    return GPT(vocab_size, context, layers, dim, heads, mlp_ratio, dropout)
