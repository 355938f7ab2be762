"""The block sequence of a model (docs/method.md, "Terms"): which residual blocks exist, in forward order.

Each supported model family is a `FamilyAdapter` (detect + enumerate) in the `FAMILIES` registry;
a new family (ViT, LM) registers its own adapter with `register_family` without touching this core.

Besides shapes, a `BlockInfo` describes how the block computes, so that the method and its
baselines never hard-code a family's attribute names:

    out = block.<out_act>( run(block.<branch[0]>, block.<branch[1]>, ...)(x) + shortcut(x) )

where `shortcut` is `block.<shortcut>` (the projection) or the identity.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple, Type

from torch import nn

from repl.errors import UnsupportedModelError

ParamShapes = Tuple[Tuple[str, Tuple[int, ...]], ...]


@dataclass(frozen=True)
class BlockInfo:
    """One block of the sequence: where it is, its shapes, and how its forward is composed."""

    index: int  # position in the block sequence
    path: str  # dotted module path, e.g. "layer2.0"
    family: str  # "cifar_resnet" | "torchvision_resnet" | "timm_resnet"
    kind: str  # "basic" | "bottleneck"
    in_channels: int
    out_channels: int
    stride: int
    has_projection: bool  # owns a shortcut projection (downsample)
    param_shapes: ParamShapes  # (relative name, shape) of the block's own parameters, sorted
    branch: Tuple[str, ...] = ()  # relative names of the residual branch's modules, in forward order
    shortcut: Optional[str] = None  # relative name of the projection shortcut, None for identity
    out_act: Optional[str] = None  # relative name of the activation applied after the residual sum
    stride_conv: Optional[str] = None  # the branch conv that carries the stride (None: stride 1, or an anti-aliasing `aa`)


@dataclass(frozen=True)
class FamilyAdapter:
    """How to recognise a model family and list its blocks."""

    name: str
    description: str  # what the user should pass, named in the unsupported-model error
    detect: Callable[[nn.Module], bool]
    enumerate: Callable[[nn.Module], List[BlockInfo]]


FAMILIES: List[FamilyAdapter] = []


def register_family(adapter: FamilyAdapter) -> None:
    """Add a model family; later adapters are tried after earlier ones."""
    if any(a.name == adapter.name for a in FAMILIES):
        raise ValueError(f"model family {adapter.name!r} is already registered")
    FAMILIES.append(adapter)


def discover_blocks(model: nn.Module) -> List[BlockInfo]:
    """The model's ordered block sequence; UnsupportedModelError if no registered family matches."""
    for adapter in FAMILIES:
        if adapter.detect(model):
            return adapter.enumerate(model)
    supported = "; ".join(f"{a.name} ({a.description})" for a in FAMILIES)
    raise UnsupportedModelError(
        f"cannot find the block sequence of a {type(model).__name__}; supported model families: {supported}"
    )


def get_module(model: nn.Module, path: str) -> nn.Module:
    """The submodule at a dotted path ("layer2.0")."""
    return model.get_submodule(path)


def set_module(model: nn.Module, path: str, new: nn.Module) -> None:
    """Register `new` at a dotted path in place of what is there (the root itself cannot be replaced)."""
    if not path:
        raise ValueError("set_module needs a non-empty dotted path")
    parent_path, _, name = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    if name not in parent._modules:
        raise AttributeError(f"{type(parent).__name__} at {parent_path or '<root>'!r} has no submodule {name!r}")
    setattr(parent, name, new)


# ----------------------------------------------------------------------------- ResNet families

@dataclass(frozen=True)
class ResNetLayout:
    """Forward order of one ResNet block class: branch module names and the activation after the sum."""

    kind: str
    branch: Tuple[str, ...]  # candidates; absent, None and nn.Identity entries are left out per block
    out_act: str


TV_BASIC = ResNetLayout("basic", ("conv1", "bn1", "relu", "conv2", "bn2"), "relu")
TV_BOTTLENECK = ResNetLayout("bottleneck", ("conv1", "bn1", "relu", "conv2", "bn2", "relu", "conv3", "bn3"), "relu")
TIMM_BASIC = ResNetLayout(
    "basic", ("conv1", "bn1", "drop_block", "act1", "aa", "conv2", "bn2", "se", "drop_path"), "act2"
)
TIMM_BOTTLENECK = ResNetLayout(
    "bottleneck",
    ("conv1", "bn1", "act1", "conv2", "bn2", "drop_block", "act2", "aa", "conv3", "bn3", "se", "drop_path"),
    "act3",
)


def _stages(model: nn.Module) -> List[Tuple[str, nn.Module]]:
    """layer1, layer2, ... in order, as long as they exist."""
    stages = []
    while hasattr(model, f"layer{len(stages) + 1}"):
        name = f"layer{len(stages) + 1}"
        stages.append((name, getattr(model, name)))
    return stages


def _resnet_block_info(index: int, path: str, family: str, block: nn.Module, layout: ResNetLayout) -> BlockInfo:
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
        param_shapes=tuple(sorted((n, tuple(p.shape)) for n, p in block.named_parameters())),
        branch=branch,
        shortcut="downsample" if downsample is not None else None,
        out_act=layout.out_act,
        stride_conv=strided[0][0] if strided else None,
    )


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

    def enumerate_blocks(model: nn.Module) -> List[BlockInfo]:
        known = layouts()
        infos: List[BlockInfo] = []
        for stage_name, stage in _stages(model):
            for child_name, block in stage.named_children():
                path = f"{stage_name}.{child_name}"
                layout = known.get(type(block))
                if layout is None:
                    kinds = ", ".join(c.__name__ for c in known)
                    raise UnsupportedModelError(
                        f"{name} block {path} is a {type(block).__name__}; supported block types: {kinds}"
                    )
                infos.append(_resnet_block_info(len(infos), path, name, block, layout))
        return infos

    return FamilyAdapter(name, description, detect, enumerate_blocks)


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


register_family(
    resnet_adapter("cifar_resnet", "repl.models CifarResNet: resnet20/32/56/110", _project_resnet, _project_layouts)
)
register_family(
    resnet_adapter(
        "torchvision_resnet",
        "torchvision.models.ResNet with BasicBlock/Bottleneck",
        lambda: _import_or_none(_torchvision_resnet),
        _torchvision_layouts,
    )
)
register_family(
    resnet_adapter(
        "timm_resnet",
        "timm.models.resnet.ResNet with BasicBlock/Bottleneck",
        lambda: _import_or_none(_timm_resnet),
        _timm_layouts,
    )
)

