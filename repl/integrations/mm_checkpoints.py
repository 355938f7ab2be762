"""mmengine checkpoint loading that accepts mm checkpoints' metadata objects, switched on where it is needed.

torch >= 2.6 loads with `weights_only=True` by default, which refuses the numpy and mmengine objects
mm checkpoints carry in their `meta`; mmengine 0.10.7 calls torch.load without the argument. Inside
`full_checkpoint_loading()` mmengine's local-file and URL loaders load with `weights_only=False`;
on exit mmengine's own loaders are registered again. RepL enters it where it loads mm weights
(`ReplResNet` construction, `build_detector` / `build_segmentor`); nothing is changed at import.
Plain mm tools that load other checkpoints (`load_from`, resume) call `allow_full_checkpoints()`
once in their script, or set `TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1` (docs/openmmlab.md).
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch

LOCAL, HTTP = "", ("http://", "https://")  # the mmengine URL-scheme prefixes whose loaders are swapped
_depth = 0  # nesting of full_checkpoint_loading(): only the outermost exit restores mmengine's loaders


def load_local(filename: str, map_location: Any = None) -> Any:
    """mmengine's local checkpoint loader, with the pre-2.6 torch.load default (mm checkpoints carry metadata objects)."""
    path = Path(filename).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{filename} can not be found.")
    return torch.load(path, map_location=map_location, weights_only=False)


def load_http(filename: str, map_location: Any = None) -> Any:
    """mmengine's URL checkpoint loader (cached in torch hub's dir), likewise not weights-only."""
    return torch.hub.load_state_dict_from_url(filename, map_location=map_location, weights_only=False)


def allow_full_checkpoints() -> None:
    """From now on in this process, mmengine loads local and URL checkpoints with `weights_only=False`."""
    from mmengine.runner import CheckpointLoader

    CheckpointLoader.register_scheme(prefixes=LOCAL, loader=load_local, force=True)
    CheckpointLoader.register_scheme(prefixes=HTTP, loader=load_http, force=True)


def restore_mmengine_loaders() -> None:
    """mmengine's own local and URL loaders again (weights-only under torch >= 2.6)."""
    from mmengine.runner import CheckpointLoader
    from mmengine.runner import checkpoint as mm_checkpoint

    CheckpointLoader.register_scheme(prefixes=LOCAL, loader=mm_checkpoint.load_from_local, force=True)
    CheckpointLoader.register_scheme(prefixes=HTTP, loader=mm_checkpoint.load_from_http, force=True)


@contextmanager
def full_checkpoint_loading() -> Iterator[None]:
    """Inside: mmengine loads mm checkpoints with their metadata (weights_only=False). Re-entrant."""
    global _depth
    if _depth == 0:
        allow_full_checkpoints()
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if _depth == 0:
            restore_mmengine_loaders()
