"""RepL composed with stochastic depth (METHOD.md, "Baselines": "RepL also composes with ... stochastic depth").

`apply_repl_with_stochastic_depth(model, cfg)`: RepL first (`cfg.ratio`, `cfg.surrogate`, ... as usual), then
every block that is still trained gets Huang et al.'s per-batch skipping, with the survival probability of
its position in the *whole* sequence (linear decay to `cfg.survival_last`), exactly as
`repl.baselines.stochastic_depth` gives it. Surrogates always run (decided: they are already the cheap
path and own almost no parameters, and skipping one would leave its neighbours' synthesized use without a
signal on that step).

The surrogates keep working after their neighbours are wrapped: they read the neighbours' tensors through
the original block objects, whose submodules the wrappers hold under the same names (same Parameter
objects), so nothing is copied and state_dict keys are unchanged.
"""
from __future__ import annotations

import dataclasses

from torch import nn

from repl.baselines.stochastic_depth import StochasticDepthBlock, survival_probabilities
from repl.method.apply import apply_replacement
from repl.method.blocks import discover_blocks, get_module, set_module
from repl.method.config import ReplConfig
from repl.method.plan import Plan


def apply_repl_with_stochastic_depth(model: nn.Module, cfg: ReplConfig) -> Plan:
    """RepL per `cfg` (method forced to repl), then stochastic depth on the blocks left trained; returns RepL's plan
    with `settings["stochastic_depth_blocks"]` listing the wrapped block indices."""
    cfg = dataclasses.replace(cfg, method="repl").validate()
    blocks = discover_blocks(model)
    plan = apply_replacement(model, cfg)
    survival = survival_probabilities(len(blocks), cfg.survival_last)
    wrapped = [info for info in blocks if info.index not in plan.blocks]
    for info in wrapped:
        set_module(model, info.path, StochasticDepthBlock(get_module(model, info.path), info, survival[info.index]))
    plan.settings["stochastic_depth_blocks"] = [info.index for info in wrapped]
    return plan
