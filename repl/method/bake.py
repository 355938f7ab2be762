"""Bake: turn every surrogate into an ordinary module with materialized weights (docs/method.md, "Bake")."""
from __future__ import annotations

import copy

import torch
from torch import nn

from repl.families import set_module
from repl.method.surrogates import Surrogate


def materialize(surrogate: Surrogate) -> nn.Module:
    """The surrogate's body with its current synthesized weights as its own parameters.

    `full` gives the original block class, `lite` a repl.models.lite module; BatchNorm buffers and
    own tensors (projection shortcut) are the body's already. The body is taken over, not copied.
    """
    body = surrogate.body
    with torch.no_grad():
        weights = surrogate.synthesized()
    for name, tensor in weights.items():
        owner, _, leaf = name.rpartition(".")
        body.get_submodule(owner).register_parameter(leaf, nn.Parameter(tensor.detach().clone()))
    return body


def bake(model: nn.Module) -> nn.Module:
    """A deep copy of `model` in which every surrogate is a plain module; `model` is left as it is."""
    baked = copy.deepcopy(model)
    surrogates = [(path, module) for path, module in baked.named_modules() if isinstance(module, Surrogate)]
    for path, surrogate in surrogates:
        set_module(baked, path, materialize(surrogate))
    return baked
