"""trainer.precision: its values and what each means for a training step (autocast dtype, fp16 loss scaling).

A module of its own that imports nothing of repl, so that the task registry (which repl.engine.config imports)
can ask it too; the Trainer and benchmarks/trainer_overhead.py's bare loop both take their autocast context and
GradScaler from here.
"""
from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from enum import Enum
from typing import Any, Dict, Optional

import torch


class Precision(str, Enum):
    """trainer.precision: 32 (float32 throughout), bf16 or 16 (mixed precision through autocast)."""

    FP32 = "32"
    BF16 = "bf16"
    FP16 = "16"

    @property
    def autocast_dtype(self) -> Optional[torch.dtype]:
        """The dtype autocast runs a step's eligible ops in; None at 32 (no autocast)."""
        return AUTOCAST_DTYPES.get(self)

    @property
    def autocasts(self) -> bool:
        """Whether a step runs under autocast (bf16, 16), so that its ops need kernels for that dtype."""
        return self.autocast_dtype is not None

    @property
    def needs_grad_scaler(self) -> bool:
        """Whether the loss is scaled (torch.amp.GradScaler): float16's narrow range underflows small gradients;
        bfloat16 has float32's range and needs none."""
        return self is Precision.FP16


PRECISIONS = tuple(p.value for p in Precision)  # ("32", "bf16", "16")
AUTOCAST_DTYPES: Dict[Precision, torch.dtype] = {Precision.BF16: torch.bfloat16, Precision.FP16: torch.float16}


def autocast(precision: str, device_type: str) -> AbstractContextManager[Any]:
    """The mixed-precision context a step runs in at trainer.precision=`precision` (a no-op at 32)."""
    dtype = Precision(precision).autocast_dtype
    return torch.autocast(device_type, dtype=dtype) if dtype is not None else nullcontext()


def grad_scaler(precision: str, device_type: str) -> Optional[torch.amp.GradScaler]:
    """The loss scaler a step at trainer.precision=`precision` needs (16), else None."""
    return torch.amp.GradScaler(device_type) if Precision(precision).needs_grad_scaler else None
