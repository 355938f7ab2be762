"""Benchmarks and studies are scripts under benchmarks/; tests import them from there."""
import importlib

import pytest


@pytest.fixture
def script():
    """script("cost") or script("studies.quantize"): the module of benchmarks/<name>.py."""
    return lambda name: importlib.import_module(f"benchmarks.{name}")
