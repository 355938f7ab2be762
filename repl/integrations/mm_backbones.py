"""`ReplResNet`: mm's ResNet classes with RepL applied to their own blocks, for plain mm configs and tools.

Registered in mmdet's and mmseg's MODELS (and `ReplResNetV1c` in mmseg's) by `register_backbones()`,
which `repl.integrations.openmmlab` calls when an mm config imports it through `custom_imports`.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

from repl.integrations.mm_checkpoints import full_checkpoint_loading

REPL_RESNET, REPL_RESNET_V1C = "ReplResNet", "ReplResNetV1c"
BACKBONE_TYPES = (REPL_RESNET, REPL_RESNET_V1C)  # the `type=` names mm configs use


def repl_backbone(base: type, name: str) -> type:
    """`base` (an mm ResNet class) initialised at construction, then with RepL applied per `repl=dict(...)`."""

    def __init__(self, *args: Any, repl: Optional[Dict[str, Any]] = None, **kwargs: Any) -> None:
        from repl import apply_replacement

        base.__init__(self, *args, **kwargs)
        # Initialise (or load the pretrained weights) before surgery: init_weights cannot run on
        # surrogates, whose synthesized weights are empty slots, and a replaced block's own tensors
        # (norm statistics, projection) should start from the intact network's.
        with full_checkpoint_loading():
            self.init_weights()
        self.repl_plan = apply_replacement(self, None, **dict(repl or {}))

    doc = f"mm {base.__name__} with RepL applied to its own blocks; `repl` holds ReplConfig keys (ratio, fusion...)."
    return type(name, (base,), {"__init__": __init__, "__doc__": doc, "__module__": __name__})


def register_backbones() -> None:
    """ReplResNet in mmdet's and mmseg's MODELS, ReplResNetV1c in mmseg's (needs the extra)."""
    from mmdet.models.backbones import resnet as mmdet_resnet
    from mmdet.registry import MODELS as MMDET_MODELS
    from mmseg.models.backbones import resnet as mmseg_resnet
    from mmseg.registry import MODELS as MMSEG_MODELS

    MMDET_MODELS.register_module(REPL_RESNET, module=repl_backbone(mmdet_resnet.ResNet, REPL_RESNET))
    MMSEG_MODELS.register_module(REPL_RESNET, module=repl_backbone(mmseg_resnet.ResNet, REPL_RESNET))
    MMSEG_MODELS.register_module(REPL_RESNET_V1C, module=repl_backbone(mmseg_resnet.ResNetV1c, REPL_RESNET_V1C))
