"""Optimizer over the trainable parameters, and a per-step learning-rate schedule.

OPTIMIZERS and SCHEDULES are the one place each optim.name / optim.schedule is defined: OptimConfig.validate
offers their keys, and building looks the name up here.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable, Dict, List, Optional

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from repl.method.fusion import fusion_parameters

if TYPE_CHECKING:  # repl.engine.config asks this module for the names
    from repl.engine.config import OptimConfig


def param_groups(model: nn.Module, weight_decay: float, decay_1d: bool, fusion_lr: Optional[float] = None) -> List[dict]:
    """Trainable parameters in up to three groups, in this order: decayed (>= 2-d), undecayed (biases, norms),
    and the method's fusion parameters (`repl.method.fusion.fusion_parameters`: coefficients, learned gains),
    undecayed whatever their shape, with their own lr `fusion_lr` when given (else the optimizer's lr)."""
    fusion_ids = {id(p) for p in fusion_parameters(model)}
    decay, no_decay, fusion = [], [], []
    for _, param in model.named_parameters():  # named_parameters yields each tensor once
        if not param.requires_grad:
            continue
        if id(param) in fusion_ids:
            fusion.append(param)
        else:
            (decay if param.ndim >= 2 or decay_1d else no_decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    if fusion:
        groups.append({"params": fusion, "weight_decay": 0.0, **({} if fusion_lr is None else {"lr": fusion_lr})})
    return groups


def _sgd(cfg: OptimConfig, groups: List[dict], fused: bool) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum (plain SGD when optim.momentum is 0)."""
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0,
                           fused=fused)


def _adamw(cfg: OptimConfig, groups: List[dict], fused: bool) -> torch.optim.Optimizer:
    """AdamW with optim.betas and optim.eps."""
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, fused=fused)


SGD, ADAMW = "sgd", "adamw"
# optim.name -> the optimizer over the parameter groups (fused: use the fused CUDA kernels)
OPTIMIZERS: Dict[str, Callable[[OptimConfig, List[dict], bool], torch.optim.Optimizer]] = {SGD: _sgd, ADAMW: _adamw}


def build_optimizer(cfg: OptimConfig, model: nn.Module, device: torch.device) -> torch.optim.Optimizer:
    """SGD (Nesterov) or AdamW; fused kernels on CUDA. The fusion parameters learn at lr * fusion_lr_scale."""
    groups = param_groups(model, cfg.weight_decay, cfg.decay_1d, fusion_lr=cfg.lr * cfg.fusion_lr_scale)
    return OPTIMIZERS[cfg.name](cfg, groups, device.type == "cuda")


def _cosine(cfg: OptimConfig, progress: float) -> float:
    """Half a cosine from 1 down to optim.min_lr_ratio."""
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def _step(cfg: OptimConfig, progress: float) -> float:
    """optim.gamma at each of optim.milestones (fractions of training) passed."""
    return cfg.gamma ** sum(progress >= m for m in cfg.milestones)


def _poly(cfg: OptimConfig, progress: float) -> float:
    """(1 - progress) ** optim.power from 1 down to optim.min_lr_ratio, as mmsegmentation's PolyLR."""
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * (1 - progress) ** cfg.power


def _constant(cfg: OptimConfig, progress: float) -> float:
    """The base lr throughout."""
    return 1.0


COSINE = "cosine"
# optim.schedule -> the lr multiplier at a fraction of training after warm-up (0 to 1)
SCHEDULES: Dict[str, Callable[[OptimConfig, float], float]] = {
    COSINE: _cosine, "step": _step, "poly": _poly, "constant": _constant}


def lr_factor(cfg: OptimConfig, step: int, total_steps: int, warmup_steps: int) -> float:
    """Multiplier of the base lr at optimizer step `step` (0-based): linear warm-up, then the schedule."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return SCHEDULES[cfg.schedule](cfg, progress)


def build_schedule(cfg: OptimConfig, optimizer: torch.optim.Optimizer, total_steps: int, steps_per_epoch: int) -> LambdaLR:
    """A LambdaLR stepped once per optimizer step; its state is part of every checkpoint. It multiplies each
    group's own initial lr by the factor, so the fusion group keeps its ratio lr * fusion_lr_scale throughout."""
    warmup = round(cfg.warmup_epochs * steps_per_epoch)
    return LambdaLR(optimizer, lambda step: lr_factor(cfg, step, total_steps, warmup))
