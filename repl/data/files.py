"""Generated datasets on disk: written once, atomically, so concurrent runs never see half a folder."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable


def write_once(folder: Path, write: Callable[[Path], None]) -> Path:
    """`folder`, filled by `write(tmp)` in a temporary sibling and renamed into place unless it exists."""
    if folder.is_dir():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=folder.parent))
    try:
        write(tmp)
        os.rename(tmp, folder)
    except OSError:
        if not folder.is_dir():  # not a lost race with an identical writer
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder
