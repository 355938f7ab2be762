"""apply_replacement: plan which blocks to replace and do the surgery, in place (CONTRACT.md, "Python API")."""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional, Sequence, Tuple

from torch import nn

from repl.baselines import apply_drop, apply_freeze, apply_stochastic_depth, wrap_blocks
from repl.errors import ConfigError, UnsupportedModelError
from repl.method.blocks import BlockInfo, discover_blocks, get_module, set_module
from repl.method.config import ReplConfig
from repl.method.plan import Plan, make_plan, planned_blocks
from repl.method.recompute import check_available
from repl.method.surrogates import Surrogate, check_operator, make_surrogate

BASELINES = {"drop": apply_drop, "freeze": apply_freeze, "stochastic_depth": apply_stochastic_depth}


def _numel(params) -> int:
    return sum(p.numel() for p in params)


def resolve_config(cfg: Optional[ReplConfig], overrides: Dict[str, Any]) -> ReplConfig:
    """`cfg` (default ReplConfig()) with keyword overrides applied, validated."""
    cfg = cfg if cfg is not None else ReplConfig()
    keys = {f.name for f in dataclasses.fields(ReplConfig)}
    unknown = sorted(set(overrides) - keys)
    if unknown:
        raise ConfigError(f"repl.{unknown[0]} is not a config key; known keys: {', '.join(sorted(keys))}")
    return dataclasses.replace(cfg, **overrides).validate()


def replace_blocks(model: nn.Module, plan: Plan, blocks: Sequence[BlockInfo], cfg: ReplConfig) -> Tuple[int, int]:
    """Swap each planned block for a surrogate; returns (params replaced, fusion params) in elements."""
    modules = [get_module(model, info.path) for info in blocks]
    planned = planned_blocks(plan, blocks)
    for info in planned:
        check_operator(info, cfg)
    replaced = fusion = 0
    for info in planned:
        i = info.index
        block_params = _numel(modules[i].parameters())
        surrogate = make_surrogate(modules[i], info, (modules[i - 1], modules[i + 1]), cfg)
        set_module(model, info.path, surrogate)
        replaced += block_params - _numel(surrogate.body.parameters())
        fusion += _numel(surrogate.fusion.parameters())
    return replaced, fusion


def apply_replacement(model: nn.Module, cfg: Optional[ReplConfig] = None, **overrides: Any) -> Plan:
    """Apply RepL (or a baseline, per `cfg.method`) to `model` in place and return the plan.

    Call it before `.to(device)`, compile, DDP and optimizer creation (a model already on a device
    also works: new parameters are created beside the block's). Plain backprop (`method=bp` or
    ratio 0) leaves the model untouched.
    """
    cfg = resolve_config(cfg, overrides)
    if any(isinstance(m, Surrogate) for m in model.modules()):
        raise ConfigError("repl: apply_replacement was already applied to this model; build a fresh one")
    try:
        blocks: List[BlockInfo] = discover_blocks(model)
    except UnsupportedModelError:
        if not cfg.is_plain_backprop:
            raise
        blocks = []  # plain backprop needs no block sequence: any model trains
    plan = make_plan(blocks, cfg)
    if cfg.is_plain_backprop:
        plan.method = "bp"  # ratio 0 of any method is plain backprop, and is reported as such
        return plan
    if cfg.method == "repl":
        if cfg.recompute:
            check_available()
        plan.params_replaced, plan.params_fusion = replace_blocks(model, plan, blocks, cfg)
        if cfg.stochastic_depth:  # surrogates always run: they are the cheap path already; the rest skip per batch
            wrap_blocks(model, [b for b in blocks if b.index not in plan.blocks], len(blocks), cfg.survival_last)
    else:
        plan.params_replaced = BASELINES[cfg.method](model, plan, blocks)
    return plan
