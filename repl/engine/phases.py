"""What the training loop rebuilds when the model changes phase (repl/method/schedule.py): optimizer and LR schedule.

A transition adds and removes parameters, so the optimizer is built again over the parameters that now
exist. Its per-parameter state (momentum, Adam moments and step) follows each parameter that survives, by
identity; a new parameter (fusion coefficients, baked weights) starts with none, as at step 0. The LR
schedule continues at the same optimizer step: the lr is a pure function of the step count.
"""
from __future__ import annotations

import torch
from torch.optim.lr_scheduler import LambdaLR


def carry_state(old: torch.optim.Optimizer, new: torch.optim.Optimizer) -> int:
    """Give each parameter of `new` the state `old` kept for the same tensor object; returns how many carried."""
    carried = 0
    for group in new.param_groups:
        for param in group["params"]:
            if param in old.state:
                new.state[param] = old.state[param]
                carried += 1
    return carried


def continue_schedule(fresh: LambdaLR, step: int) -> LambdaLR:
    """`fresh` (a LambdaLR just built over a new optimizer, at step 0) as it stands after `step` optimizer steps:
    same lr functions and base lrs, the optimizer's lrs set to their value at `step` (what stepping would give)."""
    if step == 0:
        return fresh
    return LambdaLR(fresh.optimizer, fresh.lr_lambdas, last_epoch=step - 1)  # its first step brings it to `step`
