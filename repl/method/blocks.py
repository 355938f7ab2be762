"""The block sequence of a model: moved to `repl.families` (docs/families.md).

This alias keeps `repl.method.blocks.<name>` importable for the modules that still import it from
here (method/apply.py, method/plan.py, engine/trainer.py, run.py); new code imports `repl.families`.
"""
from repl.families import BlockInfo, FamilyAdapter, discover_blocks, get_module, register_family, set_module

__all__ = ["BlockInfo", "FamilyAdapter", "discover_blocks", "get_module", "register_family", "set_module"]
