"""The streaming data path: a torch DataLoader with worker processes decoding and augmenting per sample.

Used for ImageNet, for the per-image transforms (`dataset.randaugment`, `dataset.random_erasing`, which
`dataset.resident=auto` streams) and for `dataset.resident=false`. The batch order is the resident path's
(seed, epoch) order and resumes at `start_step`. The random augmentation of a sample is a function of
(seed, epoch, its position in the epoch): the process that loads it seeds the global RNGs the transforms
draw from (torch, random, numpy) from those before the transforms run, as the resident path draws a
batch's parameters from (seed, epoch, step). So a resumed run, another `dataset.num_workers` or another
worker schedule augments every sample as the uninterrupted run did (a position is the global one: the same
for any world size). Loading in the training process (`num_workers=0`) leaves its RNG state as it found it.
"""
from __future__ import annotations

import random
from typing import Iterator, List, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

from repl.data.module import Batch, ImageData
from repl.data.order import ResumableBatchSampler, derive_seed, eval_shards
from repl.data.workers import from_workers

Key = Tuple[int, int, int]  # (sample index, epoch, position in the epoch's global order)


class PositionSampler(ResumableBatchSampler):
    """ResumableBatchSampler whose batches are (index, epoch, position) keys: where each sample sits in the
    epoch's global order (the same for every world size and resume point), for SeededAugmentation."""

    def __iter__(self) -> Iterator[List[Key]]:
        order = self.order
        offsets = torch.arange(order.batch_size)[order.rank_slice].tolist()  # this rank's places in a global batch
        for step, indices in enumerate(order.rank_batches(self.epoch, self.start_step), start=self.start_step):
            base = step * order.batch_size
            yield [(index, self.epoch, base + offset) for index, offset in zip(indices.tolist(), offsets)]


class SeededAugmentation(Dataset):
    """`dataset[index]` with the global RNGs its random transforms use seeded from (seed, epoch, position)."""

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: Key):
        index, epoch, position = key
        seed = derive_seed(self.seed, "augment", epoch, position)
        if get_worker_info() is not None:  # a worker's RNG serves only its samples
            return self._seeded(index, seed)
        saved = torch.get_rng_state(), random.getstate(), np.random.get_state()
        try:
            return self._seeded(index, seed)
        finally:
            torch.set_rng_state(saved[0])
            random.setstate(saved[1])
            np.random.set_state(saved[2])

    def _seeded(self, index: int, seed: int):
        torch.random.default_generator.manual_seed(seed)  # the CPU generator only: no CUDA state in a worker
        random.seed(seed)
        np.random.seed(seed % 2**32)
        return self.dataset[index]


class StreamingData(ImageData):
    """Batches loaded by DataLoader workers and copied to the device (pinned memory on CUDA)."""

    def __init__(
        self, train: Dataset, evaluation: Dataset, *, num_workers: int, **shape_and_batching
    ) -> None:
        super().__init__(num_eval=len(evaluation), **shape_and_batching)
        self.sampler = PositionSampler(self.order)
        shards = eval_shards(self.num_eval, self.eval_batch_size, self.rank, self.world_size)
        eval_batches = [indices.tolist() for indices in shards]
        options = dict(
            num_workers=num_workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=num_workers > 0,
        )
        workers_seed = torch.Generator().manual_seed(derive_seed(self.order.seed, "workers", self.rank))
        self.train_loader = DataLoader(SeededAugmentation(train, self.order.seed), batch_sampler=self.sampler, generator=workers_seed, **options)
        self.eval_loader = DataLoader(evaluation, batch_sampler=eval_batches, **options)

    def native_train_batches(self, epoch: int, start_step: int = 0) -> Iterator[Batch]:
        self.sampler.set_epoch(epoch, start_step)
        yield from self._to_device(self.train_loader)

    def native_eval_batches(self) -> Iterator[Batch]:
        yield from self._to_device(self.eval_loader)

    def _to_device(self, loader: DataLoader) -> Iterator[Batch]:
        for images, labels in from_workers(loader):
            yield images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)
