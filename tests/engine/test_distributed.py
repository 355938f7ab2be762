"""Trainer decisions every DDP rank must share: a signal at one rank stops all ranks at the same step,
a time-based checkpoint due at one rank is due at all, and evaluation sees rank 0's buffers. Two gloo processes on this machine."""
from __future__ import annotations

import signal

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from repl.engine.distributed import broadcast_buffers
from repl.engine.stop import StopRequest


def _worker(rank: int, store: str, results) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        # rank 1 is signalled before step 3; each rank asks after every step whether to stop
        stop = StopRequest()
        stopped_at = None
        for step in range(1, 6):
            if rank == 1 and step == 3:
                stop.request(signal.SIGUSR1)
            if stop.agreed(2, torch.device("cpu")):
                stopped_at = step
                break
        # a time-based checkpoint due at one rank only (each rank's clock) is due at both, in the stop's all-reduce
        due = [StopRequest().agreed_with(2, torch.device("cpu"), rank == 1 and step == 2)[1] for step in range(1, 4)]
        bn = nn.BatchNorm1d(3)
        bn.running_mean.fill_(float(rank + 1))
        broadcast_buffers(bn)
        results[rank] = (stopped_at, stop.signum, bn.running_mean.tolist(), due)
    finally:
        dist.destroy_process_group()


def test_a_signal_at_one_rank_stops_every_rank_at_the_same_step(tmp_path):
    results = mp.Manager().dict()
    mp.spawn(_worker, args=(str(tmp_path / "store"), results), nprocs=2)
    assert results[0][0] == results[1][0] == 3
    assert results[1][1] == signal.SIGUSR1 and results[0][1] == signal.SIGTERM  # the other rank stops as preempted
    assert results[0][2] == results[1][2] == [1.0, 1.0, 1.0]  # rank 0's statistics everywhere
    assert results[0][3] == results[1][3] == [False, True, False]  # FSDP checkpoints gather: every rank at one step
