"""Benchmarks and studies are scripts under benchmarks/; tests import them from there."""
import importlib

import pytest


@pytest.fixture
def script():
    """script("cost") or script("studies.quantize"): the module of benchmarks/<name>.py."""
    return lambda name: importlib.import_module(f"benchmarks.{name}")


@pytest.fixture
def stop_at(monkeypatch):
    """stop_at(module, "lm"): the script's measure_model raises KeyboardInterrupt (what a time limit's signal does
    to a run) when it reaches that model, and measures every model before it as usual."""

    def patch(module, model: str) -> None:
        measure = module.measure_model

        def stopped(spec, args, device):
            if spec.name == model:
                raise KeyboardInterrupt
            return measure(spec, args, device)

        monkeypatch.setattr(module, "measure_model", stopped)

    return patch
