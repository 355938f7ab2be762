"""Measurement every run reports: parameters, memory, FLOPs, time, environment."""
from repl.engine.measure.device import (
    device_name,
    peak_memory_bytes,
    reset_peak_memory,
    synchronize,
)
from repl.engine.measure.env import environment_info, git_revision
from repl.engine.measure.flops import train_flops
from repl.engine.measure.memory import (
    SavedTensorMeter,
    memory_breakdown,
    memory_estimate,
    optimizer_state_bytes,
)
from repl.engine.measure.params import count_parameters, distinct_parameters, unwrap_model
from repl.engine.measure.probe import preserved_training_state, probe_step
from repl.engine.measure.timer import StepTimer

__all__ = [
    "SavedTensorMeter",
    "StepTimer",
    "count_parameters",
    "device_name",
    "distinct_parameters",
    "environment_info",
    "git_revision",
    "memory_breakdown",
    "memory_estimate",
    "optimizer_state_bytes",
    "peak_memory_bytes",
    "preserved_training_state",
    "probe_step",
    "reset_peak_memory",
    "synchronize",
    "train_flops",
    "unwrap_model",
]
