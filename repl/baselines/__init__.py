"""Baselines run on the same plan as RepL (docs/method.md, "Baselines in the same harness").

Each module here that defines `METHOD` (a `repl.method.registry.MethodRecord`) is found by the
method registry on its first lookup: a new baseline is one file here plus one configs/repl/ yaml,
and needs no line in this file (the names below are re-exported for convenience only).
"""
from repl.baselines.drop import ShortcutOnly, apply_drop
from repl.baselines.freeze import EvalBatchNorm2d, apply_freeze
from repl.baselines.stochastic_depth import StochasticDepthBlock, apply_stochastic_depth, survival_probabilities, wrap_blocks

__all__ = [
    "EvalBatchNorm2d",
    "ShortcutOnly",
    "StochasticDepthBlock",
    "apply_drop",
    "apply_freeze",
    "apply_stochastic_depth",
    "survival_probabilities",
    "wrap_blocks",
]
