"""A stop request (a signal such as SIGTERM from a preempting scheduler) that every DDP rank agrees on."""
from __future__ import annotations

import signal
from typing import Optional

import torch

from repl.engine.distributed import agree_any


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
        return self.agreed_with(world_size, device)[0]

    def agreed_with(self, world_size: int, device: torch.device, *flags: bool) -> tuple:
        """`agreed` and, in the same all-reduce, further per-rank flags made common (True where any rank's is):
        (stop, *flags). What lets the trainer agree on a time-based checkpoint at no extra communication."""
        stop, *agreed = agree_any((self.requested, *flags), world_size, device)
        if stop and not self.requested:
            self.signum = signal.SIGTERM
        return (self.requested, *agreed)
