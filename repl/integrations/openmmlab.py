"""RepL for OpenMMLab: the module mm configs name in `custom_imports = dict(imports=["repl.integrations.openmmlab"])`.

Importing it registers, as mm's plug-in convention expects (nothing of mm is patched):

- the `openmmlab_resnet` block family: an mmdet/mmseg `ResNet` (or any model whose `.backbone` is
  one, i.e. every detector and segmentor built on it) lists its blocks as `backbone.layer2.1`, ...
  so `apply_replacement` plans, fuses, bakes and counts them exactly as for torchvision or timm
  ResNets (same BlockInfo kinds, so the same lite operator);
- `ReplResNet` in mmdet's and mmseg's MODELS (and `ReplResNetV1c` in mmseg's): repl.integrations.mm_backbones;
- the `CityscapesLabelIdsToTrainIds` transform in mmseg's TRANSFORMS: repl.integrations.mm_transforms.

The other parts, by responsibility: `require_openmmlab` / `INSTALL_HINT` (repl.integrations.mm_extra);
`build_detector` / `build_segmentor`, the `model=` builders of train.py (repl.integrations.mm_models);
loading mm checkpoints with their metadata under torch >= 2.6 (repl.integrations.mm_checkpoints:
`full_checkpoint_loading()`, entered where RepL loads mm weights). They are importable from here too.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, List, Optional, Tuple

from torch import nn

from repl.errors import UnsupportedModelError
from repl.integrations.mm_backbones import register_backbones
from repl.integrations.mm_extra import IMPORT_ERROR as _IMPORT_ERROR
from repl.integrations.mm_extra import INSTALL_HINT, require_openmmlab
from repl.integrations.mm_models import CONFIG_DIR, build_detector, build_segmentor, load_mm_config
from repl.integrations.mm_transforms import register_transforms

if TYPE_CHECKING:
    from repl.method.blocks import BlockInfo

if _IMPORT_ERROR is None:
    from mmdet.models.backbones import resnet as mmdet_resnet
    from mmseg.models.backbones import resnet as mmseg_resnet

__all__ = ["CONFIG_DIR", "INSTALL_HINT", "build_detector", "build_segmentor", "load_mm_config", "require_openmmlab"]


# ----------------------------------------------------------------------------- the block family

def _mm_resnet_classes() -> Tuple[type, ...]:
    return (mmdet_resnet.ResNet, mmseg_resnet.ResNet)


def _mm_backbone(model: nn.Module) -> Tuple[Optional[nn.Module], str]:
    """(the mm ResNet, its path prefix) of a backbone, detector or segmentor; (None, "") otherwise."""
    if isinstance(model, _mm_resnet_classes()):
        return model, ""
    backbone = getattr(model, "backbone", None)
    if isinstance(backbone, nn.Module) and isinstance(backbone, _mm_resnet_classes()):
        return backbone, "backbone."
    return None, ""


def _check_block(path: str, block: nn.Module) -> None:
    """Refuse blocks whose extra parts the surrogate machinery would silently drop or break."""
    extras = [name for name in ("with_plugins", "with_dcn", "with_cp") if getattr(block, name, False)]
    if extras:
        raise UnsupportedModelError(
            f"openmmlab ResNet block {path} uses {', '.join(e[5:] for e in extras)}; RepL supports plain "
            "BasicBlock/Bottleneck blocks (set plugins=None, dcn=None, with_cp=False on the backbone)"
        )
    if getattr(block, "norm1_name", "bn1") != "bn1":
        raise UnsupportedModelError(
            f"openmmlab ResNet block {path} uses norm layer {block.norm1_name!r}; RepL supports BN/SyncBN backbones"
        )


def _enumerate(model: nn.Module) -> List["BlockInfo"]:
    from repl.method.blocks import TV_BASIC, TV_BOTTLENECK, resnet_adapter

    layouts = {
        mmdet_resnet.BasicBlock: TV_BASIC, mmdet_resnet.Bottleneck: TV_BOTTLENECK,
        mmseg_resnet.BasicBlock: TV_BASIC, mmseg_resnet.Bottleneck: TV_BOTTLENECK,
    }
    backbone, prefix = _mm_backbone(model)
    infos = resnet_adapter("openmmlab_resnet", "", lambda: None, lambda: layouts).enumerate(backbone)
    for info in infos:
        _check_block(prefix + info.path, backbone.get_submodule(info.path))
    return [dataclasses.replace(info, path=prefix + info.path) for info in infos]


def _register_family() -> None:
    from repl.method.blocks import FamilyAdapter, register_family

    register_family(FamilyAdapter(
        "openmmlab_resnet",
        "mmdet/mmseg ResNet backbones and the detectors/segmentors built on them (repl.integrations.openmmlab)",
        lambda model: _mm_backbone(model)[0] is not None,
        _enumerate,
    ))


def _register_modules() -> None:
    register_backbones()
    register_transforms()


if _IMPORT_ERROR is None:
    _register_family()
    _register_modules()
