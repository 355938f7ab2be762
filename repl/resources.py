"""Where the files shipped beside the code are: the one place that decides, for a checkout and a wheel.

configs/, scripts/ and results/paper.csv sit at the top of a checkout; a built wheel carries them inside
the package as repl/configs, repl/scripts and repl/reference/paper.csv (setup.py).
"""
from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
CHECKOUT_NAMES = {"configs": "configs", "scripts": "scripts", "reference": "results"}  # in the package -> in a checkout


def shipped_dir(name: str) -> Path:
    """repl/<name> in an installed wheel, else the checkout's top-level directory (configs, scripts, results)."""
    packaged = PACKAGE / name
    if packaged.is_dir():
        return packaged
    return PACKAGE.parent / CHECKOUT_NAMES[name]


def paper_csv() -> Path:
    """The paper's reported numbers (results/paper.csv in a checkout)."""
    return shipped_dir("reference") / "paper.csv"
