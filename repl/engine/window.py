"""Per-window training statistics beside the loss: the gradient norm and memory (metrics.jsonl keys)."""
from __future__ import annotations

import resource
import sys
from typing import Callable, Dict, List, Optional

import torch

from repl.engine import measure

# ru_maxrss is in KiB on Linux, in bytes on macOS.
_RSS_UNIT = 1 if sys.platform == "darwin" else 1024


class WindowStats:
    """`train/grad_norm`: the global L2 norm of the gradients the optimizer stepped with (after clipping,
    unscaled under fp16) at the last step of a logged window, measured by an optimizer step pre-hook on
    the steps `wanted()` names only; `memory/...`: peak memory so far."""

    def __init__(self, optimizer: torch.optim.Optimizer, device: torch.device,
                 wanted: Callable[[], bool] = lambda: True) -> None:
        self.device = device
        self.wanted = wanted
        self._grad_norm: Optional[torch.Tensor] = None  # on the device: read only when logged (no extra sync)
        optimizer.register_step_pre_hook(self._before_step)

    def _before_step(self, optimizer: torch.optim.Optimizer, _args, _kwargs) -> None:
        if not self.wanted():
            return
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if grads:
            self._grad_norm = total_norm(grads)

    def record(self) -> Dict[str, float]:
        """The window's keys for metrics.jsonl; the gradient norm once per measurement."""
        out: Dict[str, float] = {}
        if self._grad_norm is not None:
            out["train/grad_norm"] = float(self._grad_norm.item())
            self._grad_norm = None
        if self.device.type == "cuda":
            out["memory/cuda_peak_allocated(bytes)"] = measure.peak_memory_bytes(self.device)
        out["memory/host_peak_rss(bytes)"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * _RSS_UNIT
        return out


def total_norm(grads: List[torch.Tensor]) -> torch.Tensor:
    """The L2 norm of all tensors together, on their device (torch < 2.6 lacks nn.utils.get_total_norm)."""
    with torch.no_grad():
        if hasattr(torch.nn.utils, "get_total_norm"):
            return torch.nn.utils.get_total_norm(grads).detach()
        return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads]))
