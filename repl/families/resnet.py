"""ResNet families: the project's CIFAR ResNets, torchvision and timm ResNets (and mm ResNets, families/openmmlab.py).

Their blocks live in `layer1..layerK` Sequentials. A block is `out_act(branch(x) + shortcut(x))`
(`Residual.BRANCH`), its tensors are all synthesizable in PyTorch's `[out, in, k, k]` layout, and its
`lite` sub-layer is one 3x3 conv (BasicBlock) or the two 1x1 convs (Bottleneck).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple, Type

from torch import nn

from repl.errors import UnsupportedModelError
from repl.families.contract import BlockInfo, FamilyAdapter, LiteOperator, param_shapes
from repl.models.lite import LiteBasicBlock, LiteBottleneck


def _lite_basic(block: nn.Module, info: BlockInfo) -> nn.Module:
    """A BasicBlock's lite sub-layer: conv1/bn1, the output activation and the shortcut (the block is consumed)."""
    shortcut = getattr(block, info.shortcut) if info.shortcut else None
    return LiteBasicBlock(block.conv1, block.bn1, getattr(block, info.out_act), shortcut)


def _lite_bottleneck(block: nn.Module, info: BlockInfo) -> nn.Module:
    """A Bottleneck's lite sub-layer: conv1/bn1/act/conv3/bn3 (the block is consumed); the stride of the
    dropped 3x3 conv2 moves onto conv1 (a strided 1x1 conv, as in the projection shortcut)."""
    shortcut = getattr(block, info.shortcut) if info.shortcut else None
    if info.stride_conv not in (None, "conv1"):
        block.conv1.stride = (info.stride, info.stride)
    inner_act = getattr(block, info.branch[info.branch.index("bn1") + 1])
    return LiteBottleneck(block.conv1, block.bn1, inner_act, block.conv3, block.bn3, getattr(block, info.out_act), shortcut)


# A branch module outside this set (se, drop_path, aa, drop_block in a ResNet) would be lost by lite.
_LITE_KNOWN = frozenset({"conv1", "bn1", "conv2", "bn2", "conv3", "bn3", "relu", "act1", "act2", "act3"})
LITE_BASIC = LiteOperator(_LITE_KNOWN, _lite_basic)
LITE_BOTTLENECK = LiteOperator(_LITE_KNOWN, _lite_bottleneck)


@dataclass(frozen=True)
class ResNetLayout:
    """Forward order of one ResNet block class: branch module names, the activation after the sum, its lite operator."""

    kind: str
    branch: Tuple[str, ...]  # candidates; absent, None and nn.Identity entries are left out per block
    out_act: str
    lite: LiteOperator


TV_BASIC = ResNetLayout("basic", ("conv1", "bn1", "relu", "conv2", "bn2"), "relu", LITE_BASIC)
TV_BOTTLENECK = ResNetLayout(
    "bottleneck", ("conv1", "bn1", "relu", "conv2", "bn2", "relu", "conv3", "bn3"), "relu", LITE_BOTTLENECK
)
TIMM_BASIC = ResNetLayout(
    "basic", ("conv1", "bn1", "drop_block", "act1", "aa", "conv2", "bn2", "se", "drop_path"), "act2", LITE_BASIC
)
TIMM_BOTTLENECK = ResNetLayout(
    "bottleneck",
    ("conv1", "bn1", "act1", "conv2", "bn2", "drop_block", "act2", "aa", "conv3", "bn3", "se", "drop_path"),
    "act3",
    LITE_BOTTLENECK,
)


def _stages(model: nn.Module) -> List[Tuple[str, nn.Module]]:
    """layer1, layer2, ... in order, as long as they exist."""
    stages = []
    while hasattr(model, f"layer{len(stages) + 1}"):
        name = f"layer{len(stages) + 1}"
        stages.append((name, getattr(model, name)))
    return stages


def resnet_block_info(index: int, path: str, family: str, block: nn.Module, layout: ResNetLayout) -> BlockInfo:
    """Describe one ResNet block from its modules (stride from its convs or the block, shapes from its parameters)."""
    branch = tuple(
        name for name in layout.branch if not isinstance(getattr(block, name, None), (type(None), nn.Identity))
    )
    convs = [(name, getattr(block, name)) for name in branch if isinstance(getattr(block, name), nn.Conv2d)]
    strided = [(name, conv.stride[0]) for name, conv in convs if conv.stride[0] != 1]
    if len(strided) > 1:
        raise UnsupportedModelError(f"{family} block {path} strides in more than one conv; one is supported")
    # Anti-aliased blocks (timm aa_layer) downsample in their `aa` module, not in a conv: the stride is
    # the block's, with no stride conv. `full` runs the block's own forward; `lite` refuses `aa`.
    stride = strided[0][1] if strided else getattr(block, "stride", 1)
    downsample = getattr(block, "downsample", None)
    return BlockInfo(
        index=index,
        path=path,
        family=family,
        kind=layout.kind,
        in_channels=convs[0][1].in_channels,
        out_channels=convs[-1][1].out_channels,
        stride=stride,
        has_projection=downsample is not None,
        param_shapes=param_shapes(block),
        branch=branch,
        shortcut="downsample" if downsample is not None else None,
        out_act=layout.out_act,
        stride_conv=strided[0][0] if strided else None,
        lite=layout.lite,
    )


def enumerate_resnet(model: nn.Module, family: str, layouts: Dict[Type, ResNetLayout]) -> List[BlockInfo]:
    """The blocks of `model.layer1..layerK`, each described by its class's layout; other block types are refused."""
    infos: List[BlockInfo] = []
    for stage_name, stage in _stages(model):
        for child_name, block in stage.named_children():
            path = f"{stage_name}.{child_name}"
            layout = layouts.get(type(block))
            if layout is None:
                kinds = ", ".join(c.__name__ for c in layouts)
                raise UnsupportedModelError(
                    f"{family} block {path} is a {type(block).__name__}; supported block types: {kinds}"
                )
            infos.append(resnet_block_info(len(infos), path, family, block, layout))
    return infos


def resnet_adapter(
    name: str,
    description: str,
    model_class: Callable[[], Optional[type]],
    layouts: Callable[[], Dict[Type, ResNetLayout]],
) -> FamilyAdapter:
    """A family whose blocks live in `layer1..layerK` Sequentials (project, torchvision and timm ResNets)."""

    def detect(model: nn.Module) -> bool:
        cls = model_class()
        return cls is not None and isinstance(model, cls)

    return FamilyAdapter(name, description, detect, lambda model: enumerate_resnet(model, name, layouts()))


def _import_or_none(loader: Callable[[], type]) -> Optional[type]:
    try:
        return loader()
    except ImportError:
        return None


def _project_layouts() -> Dict[Type, ResNetLayout]:
    from repl.models.cifar_resnet import BasicBlock

    return {BasicBlock: TV_BASIC}


def _torchvision_layouts() -> Dict[Type, ResNetLayout]:
    from torchvision.models.resnet import BasicBlock, Bottleneck

    return {BasicBlock: TV_BASIC, Bottleneck: TV_BOTTLENECK}


def _timm_layouts() -> Dict[Type, ResNetLayout]:
    from timm.models.resnet import BasicBlock, Bottleneck

    return {BasicBlock: TIMM_BASIC, Bottleneck: TIMM_BOTTLENECK}


def _project_resnet() -> type:
    from repl.models.cifar_resnet import CifarResNet

    return CifarResNet


def _torchvision_resnet() -> type:
    from torchvision.models.resnet import ResNet

    return ResNet


def _timm_resnet() -> type:
    from timm.models.resnet import ResNet

    return ResNet


CIFAR_RESNET = resnet_adapter(
    "cifar_resnet", "repl.models CifarResNet: resnet20/32/56/110", _project_resnet, _project_layouts
)
TORCHVISION_RESNET = resnet_adapter(
    "torchvision_resnet",
    "torchvision.models.ResNet with BasicBlock/Bottleneck",
    lambda: _import_or_none(_torchvision_resnet),
    _torchvision_layouts,
)
TIMM_RESNET = resnet_adapter(
    "timm_resnet",
    "timm.models.resnet.ResNet with BasicBlock/Bottleneck",
    lambda: _import_or_none(_timm_resnet),
    _timm_layouts,
)
