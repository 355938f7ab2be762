"""Mixup (Zhang et al. 2018) and CutMix (Yun et al. 2019) of training batches, as DeiT trains ViTs.

Each training batch is mixed with a permutation of itself: mixup blends whole images with weight
`lam ~ Beta(alpha, alpha)`, CutMix pastes a box of the partner image whose area is a `1 - lam`
share (lam is then recomputed from the box as clipped to the image). The loss is
`lam * CE(logits, y) + (1 - lam) * CE(logits, y[perm])`, which by linearity equals the
cross-entropy against the mixed (and label-smoothed) soft targets that timm's Mixup builds.
With both on, each batch uses CutMix with probability `switch`, as in DeiT.

Draws come from torch's global CPU generator (seeded, and saved in checkpoints), so a run and its
resumed continuation mix the same way on any device. The input batch is never written to: with
`dataset.resident` it is a slice of the stored dataset.
"""
from __future__ import annotations

from typing import Tuple

import torch


class BatchMixer:
    """Mixes a batch of images with a permutation of itself; returns the images, the partner order and lam."""

    def __init__(self, mixup: float, cutmix: float, switch: float) -> None:
        self.mixup, self.cutmix, self.switch = mixup, cutmix, switch

    @property
    def active(self) -> bool:
        """Whether mixup or cutmix is on at all."""
        return self.mixup > 0 or self.cutmix > 0

    def __call__(self, images: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, float]:
        """(mixed images, permutation, lam): sample i is lam of image i and 1 - lam of image perm[i]."""
        use_cutmix = self.cutmix > 0 and (self.mixup == 0 or float(torch.rand(())) < self.switch)
        alpha = self.cutmix if use_cutmix else self.mixup
        lam = float(torch.distributions.Beta(alpha, alpha).sample())
        perm = torch.randperm(images.shape[0]).to(images.device, non_blocking=True)
        if not use_cutmix:
            return images.mul(lam).add_(images[perm], alpha=1.0 - lam), perm, lam
        (top, bottom), (left, right) = (_cut(images.shape[d], lam) for d in (-2, -1))
        mixed = images.clone()
        mixed[..., top:bottom, left:right] = images[perm][..., top:bottom, left:right]
        area = (bottom - top) * (right - left) / (images.shape[-2] * images.shape[-1])
        return mixed, perm, 1.0 - area


def _cut(side: int, lam: float) -> Tuple[int, int]:
    """One side of a CutMix box: length side * sqrt(1 - lam), uniform centre, clipped to the image."""
    length = int(side * (1.0 - lam) ** 0.5)
    centre = int(torch.randint(side, ()))
    return max(centre - length // 2, 0), min(centre + length // 2, side)
