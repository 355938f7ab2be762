"""RepL for OpenMMLab: the module mm configs name in `custom_imports = dict(imports=["repl.integrations.openmmlab"])`.

Importing it registers, as mm's plug-in convention expects (nothing of mm is patched):

- `ReplResNet` in mmdet's and mmseg's MODELS (and `ReplResNetV1c` in mmseg's): repl.integrations.mm_backbones;
- the `CityscapesLabelIdsToTrainIds` transform in mmseg's TRANSFORMS: repl.integrations.mm_transforms.

The other parts, by responsibility: `require_openmmlab` / `INSTALL_HINT` (repl.integrations.mm_extra);
`build_detector` / `build_segmentor`, the `model=` builders of train.py (repl.integrations.mm_models);
loading mm checkpoints with their metadata under torch >= 2.6 (repl.integrations.mm_checkpoints:
`full_checkpoint_loading()`, entered where RepL loads mm weights). They are importable from here too.
"""
from __future__ import annotations

from repl.integrations.mm_backbones import register_backbones
from repl.integrations.mm_extra import IMPORT_ERROR as _IMPORT_ERROR
from repl.integrations.mm_extra import INSTALL_HINT, require_openmmlab
from repl.integrations.mm_models import CONFIG_DIR, build_detector, build_segmentor, load_mm_config
from repl.integrations.mm_transforms import register_transforms

__all__ = ["CONFIG_DIR", "INSTALL_HINT", "build_detector", "build_segmentor", "load_mm_config", "require_openmmlab"]


def _register_modules() -> None:
    register_backbones()
    register_transforms()


if _IMPORT_ERROR is None:
    _register_modules()
