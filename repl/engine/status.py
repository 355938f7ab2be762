"""A run's status as summary.json records it: running, completed or failed (docs/summary.md).

A module of its own that imports nothing, so that scripts/collect.py and scripts/make_tables.py (which read
summaries and CSVs) ask the same values the trainer and the CLI write. Members are str: they compare equal to the
plain strings a summary.json holds; written, they are written as their `.value`.
"""
from __future__ import annotations

from enum import Enum


class RunStatus(str, Enum):
    """summary.json's "status"."""

    RUNNING = "running"  # trained part of its length; a rerun of the same command resumes it
    COMPLETED = "completed"  # trained to its configured length and measured
    FAILED = "failed"  # stopped by an error; "error" says which
