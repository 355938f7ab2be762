"""`repl`: the planned blocks become surrogates whose weights are synthesized from their neighbours' (docs/method.md).

The weight itself is synthesized in repl/method/fusion.py (`Fusion.weight`); the surrogate module
that uses it is repl/method/surrogates.py. This module is RepL's record in the method registry:
what it reads, how it validates, and how it is applied to a model.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence, Tuple

from torch import nn

from repl.baselines.stochastic_depth import wrap_blocks
from repl.errors import ConfigError
from repl.families import BlockInfo, get_module, set_module
from repl.method.config import ReplConfig
from repl.method.plan import Plan, planned_blocks
from repl.method.registry import MethodRecord, Selection
from repl.method.surrogates import check_operator, make_surrogate


def _numel(params) -> int:
    return sum(p.numel() for p in params)


def check_repl(plan: Plan, blocks: Sequence[BlockInfo], cfg: ReplConfig) -> None:
    """What must hold before any block is swapped: each planned block has the configured operator. Run when the
    plan is made, so a deferred replacement (repl.start) cannot fail epochs later."""
    for info in planned_blocks(plan, blocks):
        check_operator(info, cfg)


def replace_blocks(model: nn.Module, plan: Plan, blocks: Sequence[BlockInfo], cfg: ReplConfig) -> Tuple[int, int]:
    """Swap each planned block for a surrogate; returns (params replaced, fusion params) in elements."""
    modules = [get_module(model, info.path) for info in blocks]
    planned = planned_blocks(plan, blocks)
    replaced = fusion = 0
    for info in planned:
        i = info.index
        block_params = _numel(modules[i].parameters())
        surrogate = make_surrogate(modules[i], info, (modules[i - 1], modules[i + 1]), cfg)
        set_module(model, info.path, surrogate)
        replaced += block_params - _numel(surrogate.body.parameters())
        fusion += _numel(surrogate.fusion.parameters())
    return replaced, fusion


def apply_repl(model: nn.Module, plan: Plan, blocks: Sequence[BlockInfo], cfg: ReplConfig) -> Tuple[int, int]:
    """Replace the planned blocks; with repl.stochastic_depth the blocks left trained also skip per batch."""
    check_repl(plan, blocks, cfg)
    replaced, fusion = replace_blocks(model, plan, blocks, cfg)
    if cfg.stochastic_depth:  # surrogates always run: they are the cheap path already; the rest skip per batch
        wrap_blocks(model, [b for b in blocks if b.index not in plan.blocks], len(blocks), cfg.survival_last)
    return replaced, fusion


def skips_blocks(settings: Mapping[str, Any]) -> bool:
    """Only with repl.stochastic_depth are blocks (the ones left trained) skipped per batch."""
    return bool(settings.get("stochastic_depth"))


def validate(cfg: ReplConfig) -> None:
    """repl.stochastic_depth, repl.start and repl.restore need replaced blocks to act on."""
    if cfg.stochastic_depth and cfg.is_plain_backprop:
        raise ConfigError("repl.stochastic_depth=true composes with replaced blocks, and repl.ratio=0 replaces none; "
                          "set repl.ratio > 0, or use repl=stochastic_depth for stochastic depth alone")
    for key in ("start", "restore"):
        if getattr(cfg, key) and cfg.is_plain_backprop:
            raise ConfigError(f"repl.{key}={getattr(cfg, key)} schedules replaced blocks, and repl.ratio=0 replaces none; "
                              f"set repl.ratio > 0 or repl.{key}=0")


METHOD = MethodRecord(
    name="repl",
    summary="Replacement Learning: the planned blocks become surrogates synthesized from their neighbours' weights",
    selection=Selection.CHOSEN,
    apply=apply_repl,
    check=check_repl,
    verb="replaced",
    switches=frozenset({"select", "blocks", "boundary", "seed", "fusion", "adapt", "surrogate", "neighbor_grad",
                        "init", "init_a", "init_b", "similarity", "recompute", "stochastic_depth", "survival_last",
                        "start", "restore"}),
    skips_blocks=skips_blocks,
    validate=validate,
)
