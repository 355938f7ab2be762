"""The `model=` builders of train.py for OpenMMLab: mmdet detectors and mmseg segmentors from their own configs.

They return the stock model (mm's initialisers, or the pretrained backbone, already run); the run builder
applies the configured method to it like to any other network.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional

from torch import nn

from repl.errors import ConfigError
from repl.integrations.mm_backbones import BACKBONE_TYPES
from repl.integrations.mm_checkpoints import full_checkpoint_loading
from repl.integrations.mm_extra import require_openmmlab
from repl.models.zoo import pretrained_download
from repl.resources import shipped_dir

if TYPE_CHECKING:
    from mmengine.config import Config

CONFIG_DIR = shipped_dir("configs") / "mm"


def _set_key(tree: Any, key: str, value: Any) -> int:
    """Set `key` to `value` in every dict of a nested config; returns how many were set."""
    count = 0
    if isinstance(tree, dict):
        for k in tree:
            if k == key:
                tree[k] = value
                count += 1
            else:
                count += _set_key(tree[k], key, value)
    elif isinstance(tree, (list, tuple)):
        count = sum(_set_key(item, key, value) for item in tree)
    return count


def load_mm_config(name: str, config: Optional[str] = None, options: Optional[Dict[str, Any]] = None) -> "Config":
    """An mm config: `config` (a path) or configs/mm/<name>.py, with mm-style dotted `options` merged in."""
    from mmengine.config import Config

    path = Path(config) if config else CONFIG_DIR / f"{name}.py"
    if not path.is_file():
        raise ConfigError(f"model.kwargs.config={str(path)!r}: no such mm config file")
    cfg = Config.fromfile(str(path))
    if options:
        cfg.merge_from_dict(dict(options))
    return cfg


def _build(scope: str, name: str, *, num_classes: int, in_chans: int, pretrained: bool,
           config: Optional[str], options: Optional[Dict[str, Any]], edit: Callable[["Config"], None]) -> nn.Module:
    require_openmmlab()
    if in_chans != 3:
        raise ConfigError(f"model.name={name} takes 3-channel images; dataset.in_chans={in_chans}")
    cfg = load_mm_config(name, config, options)
    if _set_key(cfg.model, "num_classes", num_classes) == 0:
        raise ConfigError(f"model.kwargs.config for {name}: the mm config's model has no num_classes key to set")
    backbone = cfg.model.backbone
    if backbone.get("type") in BACKBONE_TYPES:  # train.py applies repl.* itself
        raise ConfigError(f"{name}: train.py applies repl.* itself; use the stock ResNet backbone type in its mm config")
    if not pretrained:  # from scratch: nothing frozen, BN statistics train, no download
        backbone.update(init_cfg=None, frozen_stages=-1, norm_eval=False)
    edit(cfg)
    from mmengine.registry import MODELS, init_default_scope

    init_default_scope(scope)
    model = MODELS.build(cfg.model)
    with full_checkpoint_loading(), pretrained_download("torchvision", f"{name}'s backbone", pretrained):
        model.init_weights()  # mm's initialisers (or the pretrained backbone: torchvision://) before any surgery
    return model


def build_detector(name: str, *, num_classes: int, in_chans: int = 3, image_size: int = 512, pretrained: bool = False,
                   config: Optional[str] = None, options: Optional[Dict[str, Any]] = None) -> nn.Module:
    """An mmdet detector from configs/mm/<name>.py (or `config`), `num_classes` set in every head.

    `pretrained`: keep the config's pretrained backbone (ImageNet weights; needs the download or
    torch hub's cache) with its frozen stem and norm_eval; otherwise train from scratch.
    """
    return _build("mmdet", name, num_classes=num_classes, in_chans=in_chans, pretrained=pretrained,
                  config=config, options=options, edit=lambda cfg: None)


def build_segmentor(name: str, *, num_classes: int, in_chans: int = 3, image_size: int = 512, pretrained: bool = False,
                    config: Optional[str] = None, options: Optional[Dict[str, Any]] = None) -> nn.Module:
    """An mmseg segmentor from configs/mm/<name>.py (or `config`); batches are padded to image_size squares."""

    def edit(cfg: "Config") -> None:
        cfg.model.data_preprocessor.size = (image_size, image_size)
        if not pretrained:
            cfg.model.pretrained = None

    return _build("mmseg", name, num_classes=num_classes, in_chans=in_chans, pretrained=pretrained,
                  config=config, options=options, edit=edit)
