"""RepL: Replacement Learning. The method is usable on any supported model without the trainer:

    from repl import ReplConfig, apply_replacement, bake
    plan = apply_replacement(model, ReplConfig(ratio=0.25))  # in place, returns the plan
    plain = bake(model)                                       # ordinary modules, same outputs
"""
from repl.method.apply import apply_replacement
from repl.method.bake import bake
from repl.method.config import ReplConfig

__all__ = ["ReplConfig", "apply_replacement", "bake"]
__version__ = "0.1.0"
