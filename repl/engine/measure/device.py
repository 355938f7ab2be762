"""Peak-memory and device-name helpers that are no-ops off CUDA."""
from __future__ import annotations

import torch

DeviceLike = torch.device | str | int | None


def _cuda(device: DeviceLike) -> torch.device | None:
    """The CUDA device meant by `device` (None = current CUDA device if any), else None."""
    if device is None:
        if not torch.cuda.is_available():
            return None
        return torch.device("cuda", torch.cuda.current_device())
    device = torch.device("cuda", device) if isinstance(device, int) else torch.device(device)
    return device if device.type == "cuda" else None


def reset_peak_memory(device: DeviceLike = None) -> None:
    """Start a new peak-memory window on a CUDA device; nothing elsewhere."""
    cuda = _cuda(device)
    if cuda is not None:
        torch.cuda.reset_peak_memory_stats(cuda)


def peak_memory_bytes(device: DeviceLike = None) -> int:
    """Most bytes allocated by tensors on a CUDA device since the last reset; 0 elsewhere."""
    cuda = _cuda(device)
    return int(torch.cuda.max_memory_allocated(cuda)) if cuda is not None else 0


def synchronize(device: DeviceLike = None) -> None:
    """Wait for queued CUDA work on `device`; nothing elsewhere."""
    cuda = _cuda(device)
    if cuda is not None:
        torch.cuda.synchronize(cuda)


def device_name(device: DeviceLike = None) -> str:
    """The GPU's name for a CUDA device, else the device type ("cpu", "mps", ...)."""
    cuda = _cuda(device)
    if cuda is not None:
        return torch.cuda.get_device_name(cuda)
    return "cpu" if device is None else torch.device(device).type
