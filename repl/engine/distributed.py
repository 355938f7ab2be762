"""Process-group set-up from torchrun's environment; a single process needs none of it."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterable, Tuple

import torch
import torch.distributed as dist

from repl.errors import ConfigError


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: rank, world size and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes the run directory and prints."""
        return self.rank == 0


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """trainer.device -> a torch.device; auto picks CUDA when there is one."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"trainer.device={name}: no CUDA device is available; use trainer.device=cpu or auto")
        return torch.device(name if ":" in name else f"cuda:{local_rank}")
    return torch.device("cpu")


def setup(device_name: str) -> DistInfo:
    """Join the process group when launched by torchrun (NCCL on GPUs, gloo on CPU)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over all ranks in place (no-op in a single process)."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def agree_any(flags: Iterable[Any], world_size: int, device: torch.device) -> Tuple[bool, ...]:
    """Each flag as every rank sees it: True where any rank raised it. One all-reduce of a tiny tensor carries all
    the flags (none in a single process), so decisions that lead to a collective (an FSDP checkpoint gathers the
    model) are taken at the same step by every rank. Every rank calls this at the same points, with as many flags."""
    flags = tuple(bool(f) for f in flags)
    if world_size == 1:
        return flags
    tensor = torch.tensor([1.0 if f else 0.0 for f in flags], device=device)
    return tuple(bool(v > 0) for v in all_reduce_sum(tensor).tolist())


def broadcast_buffers(module: torch.nn.Module) -> None:
    """Give every rank rank 0's buffers (e.g. BatchNorm statistics, which each rank updates on its own shard)."""
    if dist.is_available() and dist.is_initialized():
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


def cleanup() -> None:
    """Leave the process group if one was joined."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
