"""Vision Transformers from timm at the model's input size (`model=vit_t|vit_s|vit_b|vit_l`).

The patch size follows the image size unless `model.kwargs.patch_size` says otherwise: 4 px at
CIFAR/SVHN's 32x32 (64 tokens), 8 px at STL-10's 96x96 (144 tokens), 16 px at ImageNet's 224
(196 tokens, the published ViT/DeiT setting; `dataset.resize=224` upsamples smaller images to it).
`model.kwargs.arch` picks any other timm VisionTransformer architecture (e.g. `deit_small_patch16_224`);
other kwargs go to timm.
"""
from __future__ import annotations

from typing import Any

from torch import nn

from repl.errors import ConfigError
from repl.models.zoo import pretrained_download

ARCHS = {  # ViT-T/S/B/L (DeiT-Ti is ViT-T)
    "vit_t": "vit_tiny_patch16_224",
    "vit_s": "vit_small_patch16_224",
    "vit_b": "vit_base_patch16_224",
    "vit_l": "vit_large_patch16_224",
}


def default_patch_size(image_size: int) -> int:
    """Patch side for an image side: 4 up to 32 px, 8 up to 96 px, 16 above."""
    return 4 if image_size <= 32 else 8 if image_size <= 96 else 16


def build_vit(variant: str, num_classes: int, in_chans: int, image_size: int, pretrained: bool,
              arch: str | None = None, patch_size: int | None = None, **kwargs: Any) -> nn.Module:
    """A timm VisionTransformer for `variant` (vit_t/s/b/l) sized for the dataset."""
    import timm
    from timm.models.vision_transformer import VisionTransformer

    patch = patch_size or default_patch_size(image_size)
    if image_size % patch:
        raise ConfigError(f"model.kwargs.patch_size={patch} must divide the input side {image_size} "
                          "(dataset.resize, or dataset.image_size when resize is unset)")
    name = arch or ARCHS[variant]
    try:
        with pretrained_download("timm", name, pretrained):
            model = timm.create_model(name, pretrained=pretrained, num_classes=num_classes, in_chans=in_chans,
                                      img_size=image_size, patch_size=patch, **kwargs)
    except RuntimeError as err:  # unknown timm name
        raise ConfigError(f"model.kwargs.arch={name!r}: {err}") from None
    if not isinstance(model, VisionTransformer):
        raise ConfigError(f"model.kwargs.arch={name!r} is a {type(model).__name__}, not a timm VisionTransformer")
    return model
