"""ReplConfig: every switch of the method and of its baselines (docs/method.md), validated before any compute."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

from repl.errors import ConfigError

METHODS = ("repl", "bp", "drop", "freeze", "stochastic_depth")
CHOICES = {
    "select": ("uniform", "random", "explicit"),
    "boundary": ("avoid", "allow"),
    "fusion": ("scalar", "tensor", "channel"),
    "adapt": ("tile", "learned"),
    "surrogate": ("lite", "full"),
}


@dataclass
class ReplConfig:
    """How blocks are chosen and what replaces them. Also the schema of the Hydra `repl` group."""

    method: str = "repl"  # repl | bp (plain backprop) | drop | freeze | stochastic_depth
    ratio: float = 0.25  # fraction of the block sequence to replace; 0 = plain backprop
    select: str = "uniform"  # uniform | random | explicit
    blocks: Optional[List[int]] = None  # block indices, with select=explicit
    boundary: str = "avoid"  # avoid | allow stage-boundary blocks
    fusion: str = "scalar"  # scalar | tensor | channel
    adapt: str = "tile"  # tile | learned: channel mismatch at stage boundaries
    surrogate: str = "lite"  # lite | full
    neighbor_grad: bool = True  # neighbours receive gradient through the surrogate's use of their weights
    init_a: float = 0.5  # initial coefficient of the preceding block
    init_b: float = 0.5  # initial coefficient of the succeeding block
    seed: int = 0  # for select=random
    survival_last: float = 0.5  # stochastic_depth: survival probability of the last block (Huang et al.: 0.5)
    recompute: bool = False  # surrogates keep no synthesized weight for backward; it is rebuilt there (same gradients)
    stochastic_depth: bool = False  # repl: also skip the blocks left trained per batch (Huang et al.); surrogates always run

    def validate(self) -> "ReplConfig":
        """Raise ConfigError naming the key if any value is outside what is accepted."""
        if self.method not in METHODS:
            raise ConfigError(f"repl.method={self.method!r} is not supported; choose one of {', '.join(METHODS)}")
        for key, allowed in CHOICES.items():
            value = getattr(self, key)
            if value not in allowed:
                raise ConfigError(f"repl.{key}={value!r} is not supported; choose one of {', '.join(allowed)}")
        if not 0.0 <= float(self.ratio) < 1.0:
            raise ConfigError(f"repl.ratio={self.ratio} must be in [0, 1)")
        if self.select == "explicit" and not self.blocks:
            raise ConfigError("repl.select=explicit needs repl.blocks=[i,j,...] (block indices)")
        if self.blocks is not None and self.select != "explicit":
            raise ConfigError("repl.blocks is only used with repl.select=explicit")
        if self.stochastic_depth and self.method != "repl":
            raise ConfigError(f"repl.stochastic_depth=true composes with repl.method=repl only, not {self.method}; "
                              "stochastic depth alone is repl=stochastic_depth")
        if self.stochastic_depth and self.is_plain_backprop:
            raise ConfigError("repl.stochastic_depth=true composes with replaced blocks, and repl.ratio=0 replaces none; "
                              "set repl.ratio > 0, or use repl=stochastic_depth for stochastic depth alone")
        if self.recompute and self.method != "repl":
            raise ConfigError(f"repl.recompute=true applies to repl.method=repl (surrogates), not {self.method}")
        if not 0.0 < float(self.survival_last) <= 1.0:
            raise ConfigError(f"repl.survival_last={self.survival_last} must be in (0, 1]")
        return self

    @property
    def is_plain_backprop(self) -> bool:
        """True when the run is plain end-to-end training (method bp or nothing to replace)."""
        if self.method == "bp":
            return True
        if self.method == "stochastic_depth":
            return False
        return self.select != "explicit" and float(self.ratio) == 0.0
