"""Whether the optional openmmlab extra (mmengine, mmcv, mmdet, mmseg) is installed, and how to get it."""
from __future__ import annotations

from typing import Optional

from repl.errors import ConfigError

# mmcv 2.1 has only an sdist (its compiled ops must be built), so `pip install ...[openmmlab]` alone is not enough.
INSTALL_HINT = ("the openmmlab extra is not installed; mmcv must be built from source first: from a checkout run "
                "`make openmmlab` (builds mmcv once, then installs the extra), elsewhere follow docs/openmmlab.md, "
                "\"Building mmcv\"")

try:
    import mmdet.models  # noqa: F401  (registers mmdet's modules)
    import mmengine  # noqa: F401
    import mmseg.models  # noqa: F401
except ImportError as _err:  # the extra is optional: say how to get it, once, when it is needed
    IMPORT_ERROR: Optional[ImportError] = _err
else:
    IMPORT_ERROR = None


def available() -> bool:
    """True when mmdet, mmseg and mmengine import."""
    return IMPORT_ERROR is None


def require_openmmlab() -> None:
    """ConfigError with the install command when mmengine/mmcv/mmdet/mmseg cannot be imported."""
    if IMPORT_ERROR is not None:
        raise ConfigError(f"{INSTALL_HINT} ({IMPORT_ERROR})")
