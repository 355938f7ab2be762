"""apply_replacement: plan which blocks to replace and do the surgery, in place (README.md, "Python API").

What the surgery is belongs to the method's record (repl/method/registry.py): RepL's is in
repl/method/replacement.py, each baseline's in its file under repl/baselines/. What is common to every
method is here, in `apply_plan`: the modules a method puts into the model take the training flag of what
they replace, and carry the mark (`INSTALLED`) by which a second conversion of the same model is refused.
"""
from __future__ import annotations

import dataclasses
import sys
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

import torch
from torch import nn

from repl.errors import ConfigError, UnsupportedModelError
from repl.families import BlockInfo, discover_blocks
from repl.method.config import ReplConfig, Select, Similarity
from repl.method.plan import Plan, make_plan
from repl.method.registry import PLAIN_BACKPROP, Selection
from repl.method.similarity import block_scores

INSTALLED = "_repl_installed_by"  # attribute set on each module apply_plan put into a model: the method's name


def resolve_config(cfg: Optional[ReplConfig], overrides: Dict[str, Any]) -> ReplConfig:
    """`cfg` (default ReplConfig()) with keyword overrides applied, validated; ConfigError for anything else
    given in the place of a ReplConfig (a bare ratio, a dict)."""
    if cfg is not None and not isinstance(cfg, ReplConfig):
        number = isinstance(cfg, (int, float)) and not isinstance(cfg, bool)
        settings = f"ratio={cfg!r}" if number else "**settings" if isinstance(cfg, Mapping) else "ratio=0.25"
        raise ConfigError(f"apply_replacement's second argument is a repl.ReplConfig or None, not a {type(cfg).__name__}; "
                          f"pass ReplConfig({settings}) or keywords: apply_replacement(model, {settings})")
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
    also works: new parameters are created beside the block's), and once per model. Plain backprop
    (`method=bp` or ratio 0) leaves the model untouched. The modules the method puts in take the
    training flag of what they replace, so a model in eval mode stays deterministic. `inputs`: with
    `select=similarity similarity=cka`, a few batches of model inputs the blocks are scored on
    (repl.method.similarity.block_scores), as a list (or tuple) whose items are each a tensor (called
    as model(x)) or a mapping (model(**x)); or a function returning such a list, called only once the
    config and the ratio are validated.
    """
    cfg = resolve_config(cfg, overrides)
    plan = plan_replacement(model, cfg, inputs=inputs)
    apply_plan(model, plan, cfg)
    return plan


def plan_replacement(model: nn.Module, cfg: ReplConfig, *, inputs: Optional[Inputs] = None) -> Plan:
    """The plan `apply_replacement` would carry out on `model`, checked as it would be, with no surgery
    (repl.start: the Trainer replaces the planned blocks later, `apply_plan`, on their trained weights).
    `inputs` as for apply_replacement."""
    check_model(model)
    cfg.validate()
    scoring = cfg.select == Select.SIMILARITY and not cfg.is_plain_backprop and cfg.record.selection is Selection.CHOSEN
    if scoring and cfg.similarity == Similarity.CKA:
        if inputs is None:
            raise ConfigError("repl.similarity=cka scores blocks on data: pass apply_replacement(..., inputs=[batch, ...]) "
                              "or use repl.similarity=weight")
        if not callable(inputs):
            check_inputs(inputs)
    blocks = _blocks(model, cfg)

    def scorer() -> Dict[int, float]:
        batches = check_inputs(inputs()) if callable(inputs) else inputs
        return block_scores(model, blocks, cfg.similarity, batches)

    plan = make_plan(blocks, cfg, scorer if scoring else None)
    if cfg.is_plain_backprop:
        plan.method = PLAIN_BACKPROP.name  # ratio 0 of any method is plain backprop, and is reported as such
    elif cfg.record.check is not None:
        cfg.record.check(plan, blocks, cfg)
    return plan


def check_model(model: Any) -> None:
    """ConfigError unless `model` is an unwrapped torch.nn.Module no method has been applied to yet."""
    if not isinstance(model, nn.Module):
        raise ConfigError(f"apply_replacement takes the torch.nn.Module to change in place, not a {type(model).__name__}; "
                          "build the model first (repl.models.build_model, timm.create_model, ...)")
    wrapped = _wrapped_model_attribute(model)
    if wrapped is not None:
        raise ConfigError(f"apply_replacement takes the model itself, not a {type(model).__name__} wrapping it: pass "
                          f"model.{wrapped}, and convert before torch.compile, DataParallel or DistributedDataParallel")
    for path, module in model.named_modules():
        method = getattr(module, INSTALLED, None)
        if method is not None:
            raise ConfigError(f"repl: apply_replacement was already applied to this model ({path or 'the model'}: "
                              f"{type(module).__name__}, put there by repl.method={method}); build a fresh one")


def _wrapped_model_attribute(model: nn.Module) -> Optional[str]:
    """The attribute holding the model a torch.compile / DataParallel / DistributedDataParallel wrapper wraps."""
    if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        return "module"
    eval_frame = sys.modules.get("torch._dynamo.eval_frame")  # no compiled module exists before torch.compile loaded it
    if eval_frame is not None and isinstance(model, eval_frame.OptimizedModule):
        return "_orig_mod"
    return None


def check_inputs(inputs: Any) -> Sequence[Any]:
    """`inputs` for repl.similarity=cka, if it is a non-empty list or tuple of batches, each a tensor (model(x))
    or a mapping of keyword arguments (model(**x)); else ConfigError saying what is accepted."""
    accepted = "a list of batches, each a tensor (called as model(x)) or a mapping (model(**x)), or a function returning one"
    if not isinstance(inputs, (list, tuple)):
        extra = (": wrap a single batch in a list, inputs=[x]" if isinstance(inputs, (torch.Tensor, Mapping)) else "")
        raise ConfigError(f"apply_replacement(inputs=...) got a {type(inputs).__name__}; it takes {accepted}{extra}")
    if not inputs:
        raise ConfigError(f"apply_replacement(inputs=...) got an empty {type(inputs).__name__}; repl.similarity=cka "
                          f"needs at least one batch: {accepted}")
    for i, batch in enumerate(inputs):
        if not isinstance(batch, (torch.Tensor, Mapping)):
            extra = (": pass the model's input alone (x, not (x, y))"
                     if isinstance(batch, (list, tuple)) else "")
            raise ConfigError(f"apply_replacement(inputs=...): batch {i} is a {type(batch).__name__}; each batch is a "
                              f"tensor (called as model(x)) or a mapping (model(**x)){extra}")
    return inputs


def apply_plan(model: nn.Module, plan: Plan, cfg: ReplConfig) -> None:
    """Do the surgery of `plan` (made by `plan_replacement` for this model's block sequence) in place, and record
    the parameters it replaced and the fusion parameters it added on the plan.

    Every module the surgery puts into the model takes the training flag of the module that was at its path
    before or, at a path that is new, of its nearest ancestor that was there (a module's own `train` still has the
    last word: freeze's EvalBatchNorm2d stays in eval); the modules already there keep their flags. Each new module
    is marked (`INSTALLED`), so that a second conversion is refused by `check_model`; bake keeps the mark on what it
    keeps (a baked lite block), so a baked model whose block sequence the method changed is refused alike."""
    if cfg.is_plain_backprop:
        return
    apply = cfg.record.apply
    if apply is None:  # a record without one leaves the model as built
        return
    flags = {path: module.training for path, module in model.named_modules(remove_duplicate=False)}
    kept = {module: module.training for module in model.modules()}  # held, so no new module can reuse an id
    plan.params_replaced, plan.params_fusion = apply(model, plan, _blocks(model, cfg), cfg)
    _adopt_new_modules(model, flags, kept, plan.method)


def _adopt_new_modules(model: nn.Module, flags: Mapping[str, bool], kept: Mapping[nn.Module, bool], method: str) -> None:
    """Give each module not in `kept` the training flag at its path in `flags` (or its nearest listed ancestor's), and
    mark it as installed by `method`."""
    for path, module in model.named_modules(remove_duplicate=False):  # parents before their children
        if module in kept:
            continue
        module.train(_flag_at(path, flags))  # its own train(): EvalBatchNorm2d ignores the flag; children are set after
        setattr(module, INSTALLED, method)
    for module, flag in kept.items():  # train() above cascades into the modules a new one holds: theirs back as they were
        module.training = flag


def _flag_at(path: str, flags: Mapping[str, bool]) -> bool:
    """The flag of `path` in `flags`, else of its nearest ancestor there (the root, "", always is)."""
    while path not in flags:
        path = path.rpartition(".")[0]
    return flags[path]


def _blocks(model: nn.Module, cfg: ReplConfig) -> List[BlockInfo]:
    """The model's block sequence; none for plain backprop on a model without one (any model trains)."""
    try:
        return discover_blocks(model)
    except UnsupportedModelError:
        if not cfg.is_plain_backprop:
            raise
        return []
