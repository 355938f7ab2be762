"""RepL for OpenMMLab: mm ResNet backbones in the block registry, a `ReplResNet` backbone, model builders.

Importing this module (directly, or from an mm config through
`custom_imports = dict(imports=["repl.integrations.openmmlab"])`) does two things:

- registers `ReplResNet` in mmdet's and mmseg's MODELS (and `ReplResNetV1c` in mmseg's): the stock
  ResNet, initialised, then `apply_replacement(self, **repl)`, for plain mm configs and tools;
- loads mm checkpoints with `weights_only=False` (torch >= 2.6 refuses their metadata otherwise).

`build_detector` / `build_segmentor` are the `model=` builders of `train.py`; they return the
stock model and `repl.run` applies the plan to it like to any other network.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np
import torch
from torch import nn

from repl.errors import ConfigError
from repl.resources import shipped_dir

INSTALL_HINT = "the openmmlab extra is not installed; run `make openmmlab` (builds mmcv once, then pip install -e .[openmmlab])"
CONFIG_DIR = shipped_dir("configs") / "mm"

try:
    import mmdet.models  # noqa: F401  (registers mmdet's modules)
    import mmseg.models  # noqa: F401
    from mmdet.models.backbones import resnet as mmdet_resnet
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmengine.runner import CheckpointLoader
    from mmseg.models.backbones import resnet as mmseg_resnet
except ImportError as _err:  # the extra is optional: say how to get it, once, when it is needed
    _IMPORT_ERROR: Optional[ImportError] = _err
else:
    _IMPORT_ERROR = None


def require_openmmlab() -> None:
    """ConfigError with the install command when mmengine/mmcv/mmdet/mmseg cannot be imported."""
    if _IMPORT_ERROR is not None:
        raise ConfigError(f"{INSTALL_HINT} ({_IMPORT_ERROR})")


# ----------------------------------------------------------------------------- the mm backbone

def _repl_backbone(base: type, name: str) -> type:
    """`base` (an mm ResNet class) initialised at construction, then with RepL applied per `repl=dict(...)`."""

    def __init__(self, *args: Any, repl: Optional[Dict[str, Any]] = None, **kwargs: Any) -> None:
        from repl.method.apply import apply_replacement

        base.__init__(self, *args, **kwargs)
        # Initialise (or load the pretrained weights) before surgery: init_weights cannot run on
        # surrogates, whose synthesized weights are empty slots, and a replaced block's own tensors
        # (norm statistics, projection) should start from the intact network's.
        self.init_weights()
        self.repl_plan = apply_replacement(self, None, **dict(repl or {}))

    doc = f"mm {base.__name__} with RepL applied to its own blocks; `repl` holds ReplConfig keys (ratio, fusion...)."
    return type(name, (base,), {"__init__": __init__, "__doc__": doc, "__module__": __name__})


def _register_modules() -> None:
    from mmdet.registry import MODELS as MMDET_MODELS
    from mmseg.registry import MODELS as MMSEG_MODELS

    MMDET_MODELS.register_module("ReplResNet", module=_repl_backbone(mmdet_resnet.ResNet, "ReplResNet"))
    MMSEG_MODELS.register_module("ReplResNet", module=_repl_backbone(mmseg_resnet.ResNet, "ReplResNet"))
    MMSEG_MODELS.register_module("ReplResNetV1c", module=_repl_backbone(mmseg_resnet.ResNetV1c, "ReplResNetV1c"))
    from mmseg.registry import TRANSFORMS

    TRANSFORMS.register_module("CityscapesLabelIdsToTrainIds", module=CityscapesLabelIdsToTrainIds)


# ----------------------------------------------------------------------------- CityScapes labels

# CityScapes labelIds -> the 19 trainIds of the benchmark (cityscapesscripts' table); everything else is 255 (ignored).
CITYSCAPES_TRAIN_IDS = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12,
                        26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}


class CityscapesLabelIdsToTrainIds:
    """mm transform after LoadAnnotations: maps the `*_gtFine_labelIds.png` of the official download to trainIds,
    so CityScapes is read as distributed (no conversion step with cityscapesscripts first)."""

    def __init__(self) -> None:
        self.lut = np.full(256, 255, dtype=np.uint8)
        for label_id, train_id in CITYSCAPES_TRAIN_IDS.items():
            self.lut[label_id] = train_id

    def __call__(self, results: Dict[str, Any]) -> Dict[str, Any]:
        results["gt_seg_map"] = self.lut[results["gt_seg_map"]]
        return results


# ----------------------------------------------------------------------------- checkpoints

def _load_local(filename: str, map_location: Any = None) -> Any:
    """mmengine's local checkpoint loader, with the pre-2.6 torch.load default (mm checkpoints carry metadata objects)."""
    path = Path(filename).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{filename} can not be found.")
    return torch.load(path, map_location=map_location, weights_only=False)


def _load_http(filename: str, map_location: Any = None) -> Any:
    """mmengine's URL checkpoint loader (cached in torch hub's dir), likewise not weights-only."""
    return torch.hub.load_state_dict_from_url(filename, map_location=map_location, weights_only=False)


def _register_checkpoint_loaders() -> None:
    CheckpointLoader.register_scheme(prefixes="", loader=_load_local, force=True)
    CheckpointLoader.register_scheme(prefixes=("http://", "https://"), loader=_load_http, force=True)


# ----------------------------------------------------------------------------- builders for train.py

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
    path = Path(config) if config else CONFIG_DIR / f"{name}.py"
    if not path.is_file():
        raise ConfigError(f"model.kwargs.config={str(path)!r}: no such mm config file")
    cfg = Config.fromfile(str(path))
    if options:
        cfg.merge_from_dict(dict(options))
    return cfg


def _build(scope: str, name: str, *, num_classes: int, in_chans: int, pretrained: bool,
           config: Optional[str], options: Optional[Dict[str, Any]], edit) -> nn.Module:
    require_openmmlab()
    if in_chans != 3:
        raise ConfigError(f"model.name={name} takes 3-channel images; dataset.in_chans={in_chans}")
    cfg = load_mm_config(name, config, options)
    if _set_key(cfg.model, "num_classes", num_classes) == 0:
        raise ConfigError(f"model.kwargs.config for {name}: the mm config's model has no num_classes key to set")
    backbone = cfg.model.backbone
    if backbone.get("type") in ("ReplResNet", "ReplResNetV1c"):
        raise ConfigError(f"{name}: train.py applies repl.* itself; use the stock ResNet backbone type in its mm config")
    if not pretrained:  # from scratch: nothing frozen, BN statistics train, no download
        backbone.update(init_cfg=None, frozen_stages=-1, norm_eval=False)
    edit(cfg)
    init_default_scope(scope)
    from mmengine.registry import MODELS

    model = MODELS.build(cfg.model)
    model.init_weights()  # mm's initialisers (or the pretrained backbone) before any surgery
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


if _IMPORT_ERROR is None:
    _register_modules()
    _register_checkpoint_loaders()
