"""Which samples go into which batch on which rank: pure functions of (seed, epoch, step), no global RNG."""
from __future__ import annotations

import zlib
from typing import Iterator, List, Optional

import numpy as np
import torch
from torch.utils.data import Sampler


def derive_seed(seed: int, tag: str, *parts: int) -> int:
    """An independent 64-bit seed for the random stream named `tag` at position `parts` (e.g. epoch, step)."""
    entropy = [int(seed) % 2**64, zlib.crc32(tag.encode()), *(int(p) % 2**64 for p in parts)]
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0])


def generator(seed: int, tag: str, *parts: int) -> torch.Generator:
    """A CPU torch.Generator for the stream `tag` at `parts`; CPU so results match on every device."""
    return torch.Generator().manual_seed(derive_seed(seed, tag, *parts))


def subset_indices(total: int, keep: int) -> torch.Tensor:
    """A fixed random subset of `keep` out of `total` indices (sorted), the same for every run seed."""
    if keep >= total:
        return torch.arange(total)
    return torch.randperm(total, generator=generator(0, "subset", total))[:keep].sort().values


class BatchOrder:
    """Shuffled training batches of a global batch size, each split into disjoint per-rank shards.

    With `repeats` k > 1 (DeiT's repeated augmentation, timm's RepeatAugSampler) an epoch is still
    `num_train` samples long: the first ceil(N / k) samples of the shuffle, each k times in a row. Each
    rank then takes every world_size-th position of a global batch, so the k copies of a sample go to
    different ranks (as RepeatAugSampler's `indices[rank::num_replicas]`), each augmented on its own.
    """

    def __init__(self, num_train: int, batch_size: int, *, seed: int, rank: int = 0, world_size: int = 1,
                 repeats: int = 1) -> None:
        self.num_train = num_train
        self.batch_size = batch_size
        self.seed = seed
        self.repeats = repeats
        self.per_rank = batch_size // world_size
        if repeats == 1:
            self.rank_slice = slice(rank * self.per_rank, (rank + 1) * self.per_rank)
        else:
            self.rank_slice = slice(rank, None, world_size)
        self.steps_per_epoch = num_train // batch_size  # drop_last

    def permutation(self, epoch: int) -> torch.Tensor:
        """The order of the `num_train` training positions of `epoch` (sample indices, repeated with `repeats`)."""
        perm = torch.randperm(self.num_train, generator=generator(self.seed, "shuffle", epoch))
        if self.repeats == 1:
            return perm
        distinct = -(-self.num_train // self.repeats)
        return perm[:distinct].repeat_interleave(self.repeats)[: self.num_train]

    def rank_batches(
        self, epoch: int, start_step: int = 0, device: Optional[torch.device] = None
    ) -> Iterator[torch.Tensor]:
        """This rank's sample indices (on `device`) for steps start_step, start_step+1, ... of `epoch`."""
        perm = self.permutation(epoch).to(device)
        for step in range(start_step, self.steps_per_epoch):
            yield perm[step * self.batch_size : (step + 1) * self.batch_size][self.rank_slice]


def eval_shards(num_eval: int, batch_size: int, rank: int, world_size: int) -> Iterator[torch.Tensor]:
    """This rank's indices of each global evaluation batch; over all ranks every sample appears once.

    Each global batch is split into near-equal contiguous parts, so all ranks see the same number of
    batches except at the very end, where a rank whose part would be empty yields nothing.
    """
    for start in range(0, num_eval, batch_size):
        part = torch.arange(start, min(start + batch_size, num_eval)).tensor_split(world_size)[rank]
        if len(part):
            yield part


class ResumableBatchSampler(Sampler[List[int]]):
    """DataLoader batch sampler over a BatchOrder; `set_epoch` picks the epoch and the step to start at."""

    def __init__(self, order: BatchOrder) -> None:
        self.order = order
        self.epoch = 0
        self.start_step = 0

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        self.epoch, self.start_step = epoch, start_step

    def __iter__(self) -> Iterator[List[int]]:
        for indices in self.order.rank_batches(self.epoch, self.start_step):
            yield indices.tolist()

    def __len__(self) -> int:
        return max(self.order.steps_per_epoch - self.start_step, 0)
