"""Block families (docs/families.md): what each supported model family says about its blocks.

The contract is in `contract.py`; the built-in families are registered here, in one visible
place and in the order they are tried. A user's family is registered with `register_family`.
"""
from repl.families.contract import (
    DEFAULT_LAYOUT,
    BlockInfo,
    CallConvention,
    FamilyAdapter,
    LiteOperator,
    Residual,
    TensorLayout,
    param_shapes,
)
from repl.families.convnext import TIMM_CONVNEXT
from repl.families.hf import HF_GPT2, HF_LLAMA
from repl.families.openmmlab import OPENMMLAB_RESNET
from repl.families.paths import get_module, set_module
from repl.families.registry import FAMILIES, discover_blocks, register_family
from repl.families.resnet import CIFAR_RESNET, TIMM_RESNET, TORCHVISION_RESNET
from repl.families.swin import TIMM_SWIN
from repl.families.transformer import GPT, TIMM_VIT

BUILTIN = (CIFAR_RESNET, TORCHVISION_RESNET, TIMM_RESNET, TIMM_VIT, TIMM_CONVNEXT, TIMM_SWIN, GPT, OPENMMLAB_RESNET, HF_GPT2,
           HF_LLAMA)
for _family in BUILTIN:
    register_family(_family)
del _family

__all__ = [
    "BUILTIN", "DEFAULT_LAYOUT", "FAMILIES", "BlockInfo", "CallConvention", "FamilyAdapter", "LiteOperator",
    "Residual", "TensorLayout", "discover_blocks", "get_module", "param_shapes", "register_family", "set_module",
]
