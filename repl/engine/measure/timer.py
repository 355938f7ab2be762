"""Wall-clock timing of training steps and epochs with warm-up excluded.

A step's time is the interval between consecutive `step()` calls (the first of an epoch starts at
`start_epoch()`), so it includes everything in the loop body: waiting for the data loader, the
host-to-device copy, forward, backward, optimizer update and logging. Time inside `paused()`
(evaluation, checkpoints, probes) is excluded. The device is synchronized only at measurement
points (epoch start/end, the end of warm-up, entering/leaving `paused()`) unless
`sync_each_step`, so on CUDA the mean step time and throughput are exact over the measured
window, while the median is of launch-side intervals (exact with `sync_each_step=True`).
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from repl.engine.measure.device import DeviceLike, synchronize


class StepTimer:
    """Per-step and per-epoch timer; call start_epoch, step(items) per step, end_epoch."""

    def __init__(
        self,
        device: DeviceLike = None,
        warmup_steps: int = 5,
        unit: str = "samples",
        sync_each_step: bool = False,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.device, self.warmup_steps, self.unit = device, warmup_steps, unit
        self.sync_each_step, self._clock = sync_each_step, clock
        self.step_times: list[float] = []
        self.step_items: list[int] = []
        self.epoch_times: list[float] = []
        self._epoch_start = self._last = 0.0
        self._in_epoch = False
        self._paused_at: float | None = None

    def _now(self) -> float:
        synchronize(self.device)
        return self._clock()

    def start_epoch(self) -> None:
        """Mark the start of an epoch's training loop."""
        self._epoch_start = self._last = self._now()
        self._in_epoch = True

    def step(self, items: int) -> None:
        """Mark the end of one step that processed `items` samples (or tokens)."""
        sync = self.sync_each_step or len(self.step_times) + 1 == self.warmup_steps
        now = self._now() if sync else self._clock()
        self.step_times.append(now - self._last)
        self.step_items.append(items)
        self._last = now

    def end_epoch(self) -> float:
        """Mark the end of an epoch; returns its seconds. Work queued after the last step()
        (and not yet finished on the device) is charged to that step."""
        now = self._now()
        if self.step_times:
            self.step_times[-1] += now - self._last
        self.epoch_times.append(now - self._epoch_start)
        self._in_epoch = False
        return self.epoch_times[-1]

    def epoch_elapsed(self) -> float:
        """Seconds of the epoch under way so far, pauses excluded (inside `paused()`: up to its start); 0 between
        epochs. What a mid-epoch checkpoint adds to the finished epochs' time. No device sync."""
        if not self._in_epoch:
            return 0.0
        now = self._paused_at if self._paused_at is not None else self._clock()
        return max(now - self._epoch_start, 0.0)

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Exclude the enclosed time from the current step and epoch."""
        start = self._paused_at = self._now()
        try:
            yield
        finally:
            self._paused_at = None
            elapsed = self._now() - start
            self._last += elapsed
            self._epoch_start += elapsed

    def summary(self) -> dict[str, float | int | str]:
        """Timing statistics. Steps after the first `warmup_steps` count (at least the last one):
        step_s (median), step_mean_s, throughput (items/s over those steps); epoch_s is the median
        epoch time and train_s the sum of epoch times (warm-up included in both)."""
        n = len(self.step_times)
        skip = min(self.warmup_steps, max(n - 1, 0))
        times, items = self.step_times[skip:], self.step_items[skip:]
        return {
            "train_s": sum(self.epoch_times),
            "epoch_s": statistics.median(self.epoch_times) if self.epoch_times else 0.0,
            "step_s": statistics.median(times) if times else 0.0,
            "step_mean_s": statistics.fmean(times) if times else 0.0,
            "throughput": sum(items) / sum(times) if times and sum(times) > 0 else 0.0,
            "unit": self.unit,
            "steps": n,
            "warmup_steps": skip,
        }
