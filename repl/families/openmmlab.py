"""The `openmmlab_resnet` family: mmdet/mmseg `ResNet` backbones and the detectors/segmentors built on them.

Their blocks are listed as `backbone.layer2.1`, ... with the same layouts as torchvision's
BasicBlock/Bottleneck, so plan, fusion, lite, bake and the baselines treat them as any ResNet.
mm is never imported here: a model can only be an mm ResNet if mm's resnet modules are loaded
already, so detection reads the classes from those loaded modules.
"""
from __future__ import annotations

import dataclasses
import sys
from typing import Dict, List, Optional, Tuple, Type

from torch import nn

from repl.errors import UnsupportedModelError
from repl.families.contract import BlockInfo, FamilyAdapter
from repl.families.resnet import TV_BASIC, TV_BOTTLENECK, ResNetLayout, enumerate_resnet

NAME = "openmmlab_resnet"
_MODULES = ("mmdet.models.backbones.resnet", "mmseg.models.backbones.resnet")


def _loaded() -> List[object]:
    """mm's resnet modules that are already imported (none: no mm model can exist)."""
    return [sys.modules[m] for m in _MODULES if m in sys.modules]


def _resnet_classes() -> Tuple[type, ...]:
    return tuple(module.ResNet for module in _loaded())


def _layouts() -> Dict[Type, ResNetLayout]:
    layouts: Dict[Type, ResNetLayout] = {}
    for module in _loaded():
        layouts.update({module.BasicBlock: TV_BASIC, module.Bottleneck: TV_BOTTLENECK})
    return layouts


def _mm_backbone(model: nn.Module) -> Tuple[Optional[nn.Module], str]:
    """(the mm ResNet, its path prefix) of a backbone, detector or segmentor; (None, "") otherwise."""
    classes = _resnet_classes()
    if not classes:
        return None, ""
    if isinstance(model, classes):
        return model, ""
    backbone = getattr(model, "backbone", None)
    if isinstance(backbone, nn.Module) and isinstance(backbone, classes):
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


def _enumerate(model: nn.Module) -> List[BlockInfo]:
    backbone, prefix = _mm_backbone(model)
    infos = enumerate_resnet(backbone, NAME, _layouts())
    for info in infos:
        _check_block(prefix + info.path, backbone.get_submodule(info.path))
    return [dataclasses.replace(info, path=prefix + info.path) for info in infos]


OPENMMLAB_RESNET = FamilyAdapter(
    NAME,
    "mmdet/mmseg ResNet backbones and the detectors/segmentors built on them (repl.integrations.openmmlab)",
    lambda model: _mm_backbone(model)[0] is not None,
    _enumerate,
)
