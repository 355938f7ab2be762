"""A stop request (a signal such as SIGTERM from a preempting scheduler) that every DDP rank agrees on."""
from __future__ import annotations

import signal
from typing import Optional

import torch

from repl.engine.distributed import all_reduce_sum


class StopRequest:
    """Holds the signal that asked the run to stop; `agreed` makes all ranks stop at the same step."""

    def __init__(self) -> None:
        self.signum: Optional[int] = None

    @property
    def requested(self) -> bool:
        """Whether this process was asked to stop (or learnt at the last `agreed` that another rank was)."""
        return self.signum is not None

    def request(self, signum: int) -> None:
        """Ask for a stop after the current step; what a signal handler calls."""
        self.signum = signum

    def agreed(self, world_size: int, device: torch.device) -> bool:
        """Stop after this step? Under DDP a request at any rank stops every rank at the same step (else a hang);
        a rank stopped by another one's request stops as preempted (SIGTERM). Every rank calls this at every step."""
        if world_size == 1:
            return self.requested
        flag = torch.tensor([1.0 if self.requested else 0.0], device=device)
        if all_reduce_sum(flag).item() > 0 and not self.requested:
            self.signum = signal.SIGTERM
        return self.requested
