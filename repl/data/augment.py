"""Batched image operations on the training device: windows, random crop or shift, flip, normalisation, resize.

An augmentation draws its random parameters for a whole global batch on the CPU from an explicit
generator (`draw`), then applies a rank's slice of them on the device (`apply`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import torch
import torch.nn.functional as F


def shifted_windows(
    images: torch.Tensor, top: torch.Tensor, left: torch.Tensor, height: int, width: int
) -> torch.Tensor:
    """Per-sample windows images[n, :, top[n]:top[n]+height, left[n]:left[n]+width], wrapping around the edges.

    One gather for the whole batch: a random crop when `images` are padded, a circular shift when not.
    """
    n, _, h, w = images.shape
    device = images.device
    rows = (top.to(device)[:, None] + torch.arange(height, device=device)) % h
    cols = (left.to(device)[:, None] + torch.arange(width, device=device)) % w
    batch = torch.arange(n, device=device)[:, None, None]
    return images[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


class Augmentation(Protocol):
    """A random label-preserving image transform applied to a batch with pre-drawn parameters."""

    def draw(self, n: int, gen: torch.Generator) -> torch.Tensor: ...

    def apply(self, images: torch.Tensor, params: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class RandomShift:
    """Random circular translation: label- and distribution-preserving for periodic (synthetic) images."""

    size: int

    def draw(self, n: int, gen: torch.Generator) -> torch.Tensor:
        """Top and left offsets of `n` samples as an (n, 2) tensor."""
        return torch.randint(0, self.size, (n, 2), generator=gen)

    def apply(self, images: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        params = params.to(images.device, non_blocking=True)
        return shifted_windows(images, params[:, 0], params[:, 1], *images.shape[-2:])


@dataclass(frozen=True)
class CropFlip:
    """Random crop from a zero-padded image (torchvision RandomCrop(size, padding=pad)) and optional h-flip."""

    pad: int
    flip: bool

    def draw(self, n: int, gen: torch.Generator) -> torch.Tensor:
        """The random parameters of `n` samples as an (n, 3) tensor: top, left, flip."""
        offsets = torch.randint(0, 2 * self.pad + 1, (n, 2), generator=gen)
        flips = torch.randint(0, 2, (n, 1), generator=gen) if self.flip else torch.zeros(n, 1, dtype=torch.long)
        return torch.cat([offsets, flips], dim=1)

    def apply(self, images: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """Augment a batch of NCHW images with parameters from `draw` (on the images' device)."""
        h, w = images.shape[-2:]
        params = params.to(images.device, non_blocking=True)
        out = shifted_windows(F.pad(images, [self.pad] * 4), params[:, 0], params[:, 1], h, w)
        flipped = params[:, 2].bool()[:, None, None, None]
        return torch.where(flipped, out.flip(3), out)


class Normalize:
    """uint8 NCHW images -> float32 (x/255 - mean) / std, contiguous, like ToTensor + Normalize."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], device: torch.device) -> None:
        self.mean = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return images.float().div_(255).sub_(self.mean).div_(self.std).contiguous()


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Float NCHW images resized to `size` x `size` (bilinear), as ViT fine-tuning upsamples small images."""
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
