"""The device the `cuda`-marked tests run on: the GPU, or the CPU in benchmarks/gpu.sh's dry mode."""
import pytest
import torch


@pytest.fixture
def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.fixture
def gpu(device) -> torch.device:
    """For checks that only mean something on a GPU (allocator peaks, fp16, NCCL): skipped in the dry mode."""
    if device.type != "cuda":
        pytest.skip("a CUDA-only check (dry mode runs on the CPU)")
    return device
