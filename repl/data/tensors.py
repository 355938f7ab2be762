"""TensorSplit: one split of an image-classification dataset held as two tensors."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class TensorSplit:
    """uint8 NCHW images and their int64 class labels, on one device."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: torch.Tensor) -> "TensorSplit":
        """The samples at `indices`, in that order."""
        return TensorSplit(self.images[indices], self.labels[indices])

    def to(self, device: torch.device) -> "TensorSplit":
        """The same split on `device`."""
        return TensorSplit(self.images.to(device), self.labels.to(device))
