"""Console scripts `repl-collect`, `repl-tables` and `repl-plots`: scripts/collect.py, make_tables.py and plots.py,
installed.

The scripts keep their code (and `python scripts/collect.py` keeps working); these entries load them
from wherever repl.resources finds them (the checkout's scripts/ or the wheel's repl/scripts). From
outside a checkout, `repl-tables` compares against the paper's numbers shipped with the package.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import List, Optional

from repl.errors import install_hint
from repl.resources import paper_csv, shipped_dir


def load_script(name: str) -> ModuleType:
    """The module of scripts/<name>.py (its siblings importable, as when it is run as a script)."""
    directory = shipped_dir("scripts")
    if str(directory) not in sys.path:
        sys.path.insert(0, str(directory))  # plots.py imports make_tables as its sibling
    module_name = f"repl_scripts_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, directory / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


def collect(argv: Optional[List[str]] = None) -> int:
    """repl-collect [dirs...] [--out FILE]: every run's summary.json into one CSV."""
    return load_script("collect").main(argv)


def make_tables(argv: Optional[List[str]] = None) -> int:
    """repl-tables [--runs CSV] [--paper CSV] [--out DIR]; --paper defaults to the shipped paper.csv
    when ./results/paper.csv does not exist."""
    module = load_script("make_tables")
    args = list(sys.argv[1:] if argv is None else argv)
    if not Path(module.DEFAULT_PAPER).is_file() and not any(a == "--paper" or a.startswith("--paper=") for a in args):
        args += ["--paper", str(paper_csv())]
    return module.main(args)


def plots(argv: Optional[List[str]] = None) -> int:
    """repl-plots [--runs CSV] [--out DIR]: the figures of the collected runs (needs the plots extra, matplotlib)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        sys.exit(f"error: repl-plots needs matplotlib: {install_hint('plots')}")
    return load_script("plots").main(argv)


COMMANDS = {"collect": collect, "tables": make_tables, "plots": plots}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.exit(f"usage: python -m repl.tools {{{'|'.join(COMMANDS)}}} [args...]")
    sys.exit(COMMANDS[sys.argv[1]](sys.argv[2:]))
