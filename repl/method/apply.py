"""apply_replacement: plan which blocks to replace and do the surgery, in place (README.md, "Python API").

What the surgery is belongs to the method's record (repl/method/registry.py): RepL's is in
repl/method/replacement.py, each baseline's in its file under repl/baselines/.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

from torch import nn

from repl.errors import ConfigError, UnsupportedModelError
from repl.families import BlockInfo, discover_blocks
from repl.method.config import ReplConfig
from repl.method.plan import Plan, make_plan
from repl.method.registry import PLAIN_BACKPROP, Selection
from repl.method.similarity import block_scores
from repl.method.surrogates import Surrogate


def resolve_config(cfg: Optional[ReplConfig], overrides: Dict[str, Any]) -> ReplConfig:
    """`cfg` (default ReplConfig()) with keyword overrides applied, validated."""
    cfg = cfg if cfg is not None else ReplConfig()
    keys = {f.name for f in dataclasses.fields(ReplConfig)}
    unknown = sorted(set(overrides) - keys)
    if unknown:
        raise ConfigError(f"repl.{unknown[0]} is not a config key; known keys: {', '.join(sorted(keys))}")
    return dataclasses.replace(cfg, **overrides).validate()


Inputs = Union[Sequence[Any], Callable[[], Sequence[Any]]]


def apply_replacement(model: nn.Module, cfg: Optional[ReplConfig] = None, *, inputs: Optional[Inputs] = None,
                      **overrides: Any) -> Plan:
    """Apply RepL (or a baseline, per `cfg.method`) to `model` in place and return the plan.

    Call it before `.to(device)`, compile, DDP and optimizer creation (a model already on a device
    also works: new parameters are created beside the block's). Plain backprop (`method=bp` or
    ratio 0) leaves the model untouched. `inputs`: with `select=similarity similarity=cka`, a few
    batches of model inputs the blocks are scored on (repl.method.similarity.block_scores), or a
    function returning them, called only once the config and the ratio are validated.
    """
    cfg = resolve_config(cfg, overrides)
    plan = plan_replacement(model, cfg, inputs=inputs)
    apply_plan(model, plan, cfg)
    return plan


def plan_replacement(model: nn.Module, cfg: ReplConfig, *, inputs: Optional[Inputs] = None) -> Plan:
    """The plan `apply_replacement` would carry out on `model`, checked as it would be, with no surgery
    (repl.start: the Trainer replaces the planned blocks later, `apply_plan`, on their trained weights).
    `inputs` as for apply_replacement."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"apply_replacement takes the torch.nn.Module to change in place, not a {type(model).__name__}; "
                        "build the model first (repl.models.build_model, timm.create_model, ...)")
    cfg.validate()
    scoring = cfg.select == "similarity" and not cfg.is_plain_backprop and cfg.record.selection is Selection.CHOSEN
    if scoring and cfg.similarity == "cka" and inputs is None:
        raise ConfigError("repl.similarity=cka scores blocks on data: pass apply_replacement(..., inputs=[batch, ...]) "
                          "or use repl.similarity=weight")
    if any(isinstance(m, Surrogate) for m in model.modules()):
        raise ConfigError("repl: apply_replacement was already applied to this model; build a fresh one")
    blocks = _blocks(model, cfg)

    def scorer() -> Dict[int, float]:
        batches = inputs() if callable(inputs) else inputs
        return block_scores(model, blocks, cfg.similarity, batches)

    plan = make_plan(blocks, cfg, scorer if scoring else None)
    if cfg.is_plain_backprop:
        plan.method = PLAIN_BACKPROP.name  # ratio 0 of any method is plain backprop, and is reported as such
    elif cfg.record.check is not None:
        cfg.record.check(plan, blocks, cfg)
    return plan


def apply_plan(model: nn.Module, plan: Plan, cfg: ReplConfig) -> None:
    """Do the surgery of `plan` (made by `plan_replacement` for this model's block sequence) in place, and record
    the parameters it replaced and the fusion parameters it added on the plan."""
    if cfg.is_plain_backprop:
        return
    apply = cfg.record.apply
    if apply is not None:  # a record without one leaves the model as built
        plan.params_replaced, plan.params_fusion = apply(model, plan, _blocks(model, cfg), cfg)


def _blocks(model: nn.Module, cfg: ReplConfig) -> List[BlockInfo]:
    """The model's block sequence; none for plain backprop on a model without one (any model trains)."""
    try:
        return discover_blocks(model)
    except UnsupportedModelError:
        if not cfg.is_plain_backprop:
            raise
        return []
