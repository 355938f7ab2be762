"""The streaming data path: a torch DataLoader with worker processes decoding and augmenting per sample.

Used for ImageNet (or `dataset.resident=false`). The batch order is the resident path's (seed, epoch)
order and resumes at `start_step`; the random augmentations come from the workers' RNG and are not
reproduced on resume.
"""
from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from repl.data.module import Batch, ImageData
from repl.data.order import ResumableBatchSampler, derive_seed, eval_shards


class StreamingData(ImageData):
    """Batches loaded by DataLoader workers and copied to the device (pinned memory on CUDA)."""

    def __init__(
        self, train: Dataset, evaluation: Dataset, *, num_workers: int, **shape_and_batching
    ) -> None:
        super().__init__(num_eval=len(evaluation), **shape_and_batching)
        self.sampler = ResumableBatchSampler(self.order)
        shards = eval_shards(self.num_eval, self.eval_batch_size, self.rank, self.world_size)
        eval_batches = [indices.tolist() for indices in shards]
        options = dict(
            num_workers=num_workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=num_workers > 0,
        )
        workers_seed = torch.Generator().manual_seed(derive_seed(self.order.seed, "workers", self.rank))
        self.train_loader = DataLoader(train, batch_sampler=self.sampler, generator=workers_seed, **options)
        self.eval_loader = DataLoader(evaluation, batch_sampler=eval_batches, **options)

    def native_train_batches(self, epoch: int, start_step: int = 0) -> Iterator[Batch]:
        self.sampler.set_epoch(epoch, start_step)
        yield from self._to_device(self.train_loader)

    def native_eval_batches(self) -> Iterator[Batch]:
        yield from self._to_device(self.eval_loader)

    def _to_device(self, loader: DataLoader) -> Iterator[Batch]:
        for images, labels in loader:
            yield images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)
