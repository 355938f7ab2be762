"""Loaded by a test's child process (PYTHONPATH, tests/signalled.py): once repl.engine.loggers is imported, its
MetricsLog.log pauses after writing the training record of step $REPL_TEST_PAUSE_STEP, so the test's signal lands
inside the run however late the test process gets the CPU. Does nothing without that variable."""
import importlib.abc
import importlib.machinery
import os
import sys
import time

TARGET = "repl.engine.loggers"


def _patch(module) -> None:
    step, seconds = int(os.environ["REPL_TEST_PAUSE_STEP"]), float(os.environ.get("REPL_TEST_PAUSE_S", "3"))
    log = module.MetricsLog.log

    def log_then_pause(self, record):
        log(self, record)
        if record.get("step") == step and "train/loss" in record:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:  # a signal's handler runs in here; Ctrl-C's raises out of it
                time.sleep(0.05)

    module.MetricsLog.log = log_then_pause


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != TARGET:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        exec_module = spec.loader.exec_module

        def exec_then_patch(module):
            exec_module(module)
            _patch(module)

        spec.loader.exec_module = exec_then_patch
        return spec


if os.environ.get("REPL_TEST_PAUSE_STEP"):
    sys.meta_path.insert(0, _Finder())
