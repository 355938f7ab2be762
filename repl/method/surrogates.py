"""Surrogates: what stands in a replaced block's place (docs/method.md, "The operator").

A `Surrogate` owns a `body` (the block's computation, `full`, or its lite sub-layer) from which the
synthesized weights have been removed, and a `Fusion` that makes those weights from the neighbours
at every forward. The neighbour modules are held in a plain (unregistered) attribute and their
parameters are looked up by name at call time, so every parameter is registered exactly once and
`.to()`, `deepcopy` (one memo for the whole model), `load_state_dict` and DDP keep them tied.
"""
from __future__ import annotations

from typing import Any, Dict, Sequence

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from repl.errors import ConfigError
from repl.families.contract import BlockInfo
from repl.method.config import Init, ReplConfig, SurrogateKind
from repl.method.fusion import Fusion
from repl.method import recompute as rebuilt


class Surrogate(nn.Module):
    """A replaced block: `body` run with weights synthesized from the neighbours (i-1, i+1)."""

    def __init__(self, body: nn.Module, fusion: Fusion, neighbours: Sequence[nn.Module], operator: str,
                 release: rebuilt.Release = rebuilt.Release.NEVER) -> None:
        super().__init__()
        self.body = body
        self.fusion = fusion
        self.operator = operator
        self.release = release  # when the synthesized weights are freed after the forward and rebuilt in backward
        self._neighbours = tuple(neighbours)  # references only: a tuple is not registered as submodules
        # name -> (owner path in body, leaf): the parameter slots (None between calls) filled at each forward
        self._slots = {name: name.rpartition(".")[::2] for name in fusion.sources}

    def synthesized(self) -> Dict[str, torch.Tensor]:
        """The body's missing weights, computed from the live neighbour parameters."""
        return self.fusion(self._neighbours)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The body run with the synthesized weights placed in its empty parameter slots for this call.

        Same result as `torch.func.functional_call(body, synthesized, args)`, without its per-call
        bookkeeping (tie detection, accessor objects): the slots are plain `_parameters` entries that
        are None between calls, so any body module that reads `self.<name>` works, and the slots are
        emptied again even if the body raises, so parameters(), state_dict() and deepcopy never see them.
        """
        dropping = (self.release is not rebuilt.Release.NEVER and torch.is_grad_enabled()
                    and not torch.compiler.is_compiling())
        if dropping and self.release is rebuilt.Release.BY_SIZE:
            dropping = rebuilt.outweighs(self.fusion.elements, args, kwargs)
        if dropping and self.fusion.keeps_copies and rebuilt.hooks_allowed():
            # gathered copies are weight-sized too: recompute them (not under torch.func.grad, which refuses the
            # checkpoint's hooks: that call keeps its gathered copies)
            weights = checkpoint(self.synthesized, use_reentrant=False)
        else:
            weights = self.synthesized()
        owners = []
        for name, w in weights.items():
            module, leaf = self.body.get_submodule(self._slots[name][0]), self._slots[name][1]
            owners.append((name, module, leaf, rebuilt.cast_for_consumer(module, leaf, w) if dropping else w))
        try:
            for _, module, leaf, w in owners:
                module._parameters[leaf] = w
            out = self.body(*args, **kwargs)
        finally:
            for _, module, leaf, _ in owners:
                module._parameters[leaf] = None
        if dropping and not rebuilt.in_backward():  # (in backward: checkpointing recomputes, and keeps what it gets)
            rebuilt.release({name: w for name, _, _, w in owners}, out,
                            lambda name, into: self.fusion.weight(self._neighbours, name, out=into))
        return out

    def extra_repr(self) -> str:
        return f"operator={self.operator}, release={self.release.value}"


def check_operator(info: BlockInfo, cfg: ReplConfig) -> None:
    """ConfigError if the configured operator cannot stand in for this block (checked before any surgery)."""
    if cfg.surrogate != SurrogateKind.LITE:
        return
    if info.lite is None:
        raise ConfigError(f"repl.surrogate=lite has no operator for {info.kind} blocks ({info.path}); use repl.surrogate=full")
    unknown = [name for name in info.branch if name not in info.lite.known]
    if unknown:
        raise ConfigError(
            f"repl.surrogate=lite cannot carry {', '.join(unknown)} of block {info.path}; use repl.surrogate=full"
        )


def lite_body(block: nn.Module, info: BlockInfo) -> nn.Module:
    """The block's lite sub-layer, built from its own modules by its family's lite operator."""
    return info.lite.build(block, info)


def make_surrogate(block: nn.Module, info: BlockInfo, neighbours: Sequence[nn.Module], cfg: ReplConfig) -> Surrogate:
    """Replace `block` by a surrogate: its synthesizable tensors (BlockInfo.synthesizable) that a neighbour has
    become synthesized, the rest stay its own. With `repl.init=lstsq` the coefficients are fitted to the body's
    own tensors (the block's, for the parts `lite` keeps) before those are removed."""
    lite = cfg.surrogate == SurrogateKind.LITE
    body = lite_body(block, info) if lite else block
    params = {name: p for name, p in body.named_parameters() if info.may_synthesize(name)}
    fusion = Fusion(params, neighbours, cfg, layouts={name: info.layout(name) for name in params}, block=info.path)
    if cfg.init == Init.LSTSQ:
        fusion.fit(params, neighbours)
    for name in fusion.sources:
        owner, _, leaf = name.rpartition(".")
        body.get_submodule(owner).register_parameter(leaf, None)  # a slot that Surrogate.forward fills per call
    return Surrogate(body, fusion, neighbours, cfg.surrogate, release=rebuilt.policy(cfg.recompute, whole_block=not lite))
