"""Shared test settings: offline, single-threaded math per worker, small and fast."""
import os

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items) -> None:
    """`cuda`-marked tests run where there is a GPU, or on the CPU in benchmarks/gpu.sh's dry mode (REPL_DRY_GPU=1)."""
    if torch.cuda.is_available() or os.environ.get("REPL_DRY_GPU") == "1":
        return
    skip = pytest.mark.skip(reason="needs CUDA (benchmarks/gpu.sh runs it; REPL_DRY_GPU=1 runs it on the CPU)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _restore_logging():
    """Hydra configures the root logger in-process (hydra.job_logging) with handlers bound to the stderr of
    that moment, which pytest closes after the test; later tests' log records would hit a closed stream."""
    import logging

    loggers = [logging.getLogger(), logging.getLogger("repl")]
    saved = [(lg, list(lg.handlers), lg.level, lg.propagate) for lg in loggers]
    yield
    for lg, handlers, level, propagate in saved:
        for handler in lg.handlers:
            if handler not in handlers:
                handler.close()
        lg.handlers[:] = handlers
        lg.setLevel(level)
        lg.propagate = propagate
