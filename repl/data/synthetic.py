"""The embedded default dataset: images with real class structure, generated from the seed (no files).

Each class is a random smooth periodic colour texture (a sum of low-frequency sinusoids per channel).
A sample is its class texture circularly shifted to a random position, with random contrast and
brightness, overlaid by a random texture of the same kind (`clutter`) and pixel noise (`noise`).
Recognising the class needs translation-invariant features, which convolutional networks learn.
"""
from __future__ import annotations

import torch

from repl.data.augment import shifted_windows
from repl.data.config import ImageDataConfig
from repl.data.order import generator
from repl.data.tensors import TensorSplit

DEFAULT_NUM_TRAIN = 5000
DEFAULT_NUM_EVAL = 1000
MAX_FREQUENCY = 3  # highest spatial frequency (cycles per image) of the textures
PIXEL_SCALE = 48.0  # uint8 grey levels per unit of texture amplitude, around mid-grey 128


def periodic_textures(n: int, channels: int, size: int, gen: torch.Generator) -> torch.Tensor:
    """`n` random smooth periodic textures (n, channels, size, size) with zero mean and unit std each."""
    f = min(MAX_FREQUENCY, size // 2 - 1)
    rows = list(range(f + 1)) + list(range(size - f, size))  # frequencies 0..f and -f..-1
    coeffs = torch.zeros(n, channels, size, size // 2 + 1, dtype=torch.complex64)
    re, im = torch.randn(2, n, channels, len(rows), f + 1, generator=gen)
    coeffs[:, :, rows, : f + 1] = torch.complex(re, im)
    textures = torch.fft.irfft2(coeffs, s=(size, size))
    flat = textures.flatten(1)
    return ((flat - flat.mean(1, keepdim=True)) / flat.std(1, keepdim=True)).view_as(textures)


def synthetic_split(
    prototypes: torch.Tensor, n: int, noise: float, clutter: float, gen: torch.Generator
) -> TensorSplit:
    """`n` class-balanced samples drawn around `prototypes` (one texture per class)."""
    k, c, size, _ = prototypes.shape
    labels = torch.randperm(n, generator=gen) % k
    shifts = torch.randint(0, size, (2, n), generator=gen)
    images = shifted_windows(prototypes[labels], shifts[0], shifts[1], size, size)
    contrast = torch.empty(n, 1, 1, 1).uniform_(0.6, 1.4, generator=gen)
    brightness = 0.3 * torch.randn(n, 1, 1, 1, generator=gen)
    images = contrast * images + brightness + clutter * periodic_textures(n, c, size, gen)
    images = images + noise * torch.randn(images.shape, generator=gen)
    pixels = (128 + PIXEL_SCALE * images).round_().clamp_(0, 255).to(torch.uint8)
    return TensorSplit(pixels, labels)


def make_synthetic(cfg: ImageDataConfig, seed: int) -> tuple[TensorSplit, TensorSplit]:
    """The (train, eval) splits for `cfg` and `seed`: shared class textures, disjoint random samples."""
    size, channels = cfg.image_size, cfg.in_chans
    prototypes = periodic_textures(cfg.num_classes, channels, size, generator(seed, "synthetic/classes"))
    num_train = cfg.num_train or DEFAULT_NUM_TRAIN
    num_eval = cfg.num_eval or DEFAULT_NUM_EVAL
    train = synthetic_split(prototypes, num_train, cfg.noise, cfg.clutter, generator(seed, "synthetic/train"))
    evaluation = synthetic_split(prototypes, num_eval, cfg.noise, cfg.clutter, generator(seed, "synthetic/eval"))
    return train, evaluation
