"""Micro-batches for gradient accumulation (trainer.accumulate): a batch's loss as weighted parts that sum to it."""
from __future__ import annotations

from typing import Any, Callable, List

import torch
from torch import nn

MicroLoss = Callable[[nn.Module], torch.Tensor]  # the model -> one micro-batch's share of the batch loss


def micro_loss(loss: Callable[..., torch.Tensor], weight: Any, *args: Any) -> MicroLoss:
    """`loss(model, *args) * weight` as a function of the model (weight: a float or a 0-d tensor)."""
    return lambda model: loss(model, *args) * weight


def row_chunks(parts: int, *tensors: torch.Tensor) -> List[tuple]:
    """The tensors split along dim 0 into `parts` near-equal chunks (torch.tensor_split), empty chunks left out."""
    chunks = zip(*(t.tensor_split(parts) for t in tensors))
    return [chunk for chunk in chunks if chunk[0].shape[0]]
