"""Language modelling: next-token cross-entropy; perplexity on the valid and test splits.

Training batches are `(inputs, targets)` and evaluation batches `(inputs, targets, split)`, token
ids of shape [B, T] (targets are the inputs shifted by one; -100 marks a padded position). The
perplexity of a split is exp of the mean loss over all of its scored tokens, on every rank.
"""
from __future__ import annotations

import math
from contextlib import AbstractContextManager
from typing import Dict, Iterable, List, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from repl.data.text import IGNORE_INDEX
from repl.engine.config import TaskConfig
from repl.engine.distributed import all_reduce_sum
from repl.errors import ConfigError
from repl.tasks.micro import MicroLoss, micro_loss, row_chunks
from repl.tasks.registry import Scored

SPLITS = ("valid", "test")


def token_loss(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of [B, T, V] logits against [B, T] targets, padded positions ignored."""
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE_INDEX,
                           reduction=reduction)


class LanguageModelTask(Scored):
    """Loss and evaluation for causal language models; the primary metric is test perplexity."""

    name = "lm"

    def __init__(self, cfg: TaskConfig) -> None:
        if cfg.label_smoothing:
            raise ConfigError(f"task.label_smoothing={cfg.label_smoothing} does not apply to task=lm; use 0")

    def loss(self, model: nn.Module, batch: Tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Mean next-token loss of one batch."""
        inputs, targets = batch
        return token_loss(model(inputs), targets)

    def micro_losses(self, batch: Tuple[torch.Tensor, torch.Tensor], parts: int) -> List[MicroLoss]:
        """`loss` of the batch as `parts` micro-batch losses that sum to it: each is its token-loss sum over
        the batch's scored tokens (not its own mean, since padding makes micro-batches score unequal counts)."""
        inputs, targets = batch
        scored = (targets != IGNORE_INDEX).sum()  # a tensor: no host sync
        return [micro_loss(self._summed_loss, 1.0 / scored, x, y) for x, y in row_chunks(parts, inputs, targets)]

    @staticmethod
    def _summed_loss(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return token_loss(model(inputs), targets, reduction="sum")

    @staticmethod
    def batch_size(batch: Tuple[torch.Tensor, ...]) -> int:
        """Tokens in the batch: throughput is reported in tokens per second."""
        return batch[0].numel()

    @torch.no_grad()
    def evaluate(self, model: nn.Module, batches: Iterable[Tuple[torch.Tensor, torch.Tensor, str]],
                 autocast: AbstractContextManager) -> Dict[str, float]:
        """Mean token loss and perplexity of each split, over every scored token of every rank."""
        device = next(model.parameters()).device
        totals = torch.zeros(len(SPLITS), 2, dtype=torch.float64, device=device)  # per split: loss sum, tokens
        for inputs, targets, split in batches:
            with autocast:
                logits = model(inputs)
            row = totals[SPLITS.index(split)]
            row[0] += token_loss(logits, targets, reduction="sum")
            row[1] += (targets != IGNORE_INDEX).sum()
        totals = all_reduce_sum(totals).tolist()
        metrics: Dict[str, float] = {}
        for split, (loss_sum, count) in zip(SPLITS, totals):
            if count:
                metrics[f"{split}_loss"] = loss_sum / count
                metrics[f"{split}_ppl"] = math.exp(min(loss_sum / count, 700.0))  # exp overflows a float past ~709
        return metrics
