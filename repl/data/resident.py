"""The resident data path: the whole dataset lives on the training device; batching and augmentation
are batched tensor ops there, so the device never waits on loading (as in airbench).

Exactly deterministic: the batch order of an epoch depends on (seed, epoch) and the augmentation of a
batch on (seed, epoch, step), both drawn for the whole global batch, so `train_batches(e, start_step=k)`
continues `train_batches(e)` bit for bit and the rank shards together equal the single-process batch.
"""
from __future__ import annotations

from typing import Iterator, Optional, Sequence

from repl.data.augment import Augmentation, Normalize
from repl.data.module import Batch, ImageData
from repl.data.order import eval_shards, generator
from repl.data.tensors import TensorSplit


class ResidentData(ImageData):
    """Batches gathered from uint8 tensors held on the device."""

    def __init__(
        self,
        train: TensorSplit,
        evaluation: TensorSplit,
        *,
        mean: Sequence[float],
        std: Sequence[float],
        augment: Optional[Augmentation],
        **shape_and_batching,
    ) -> None:
        super().__init__(num_eval=len(evaluation), **shape_and_batching)
        self.train = train.to(self.device)
        self.evaluation = evaluation.to(self.device)
        self.normalize = Normalize(mean, std, self.device)
        self.augment = augment

    def native_train_batches(self, epoch: int, start_step: int = 0) -> Iterator[Batch]:
        batches = self.order.rank_batches(epoch, start_step, device=self.device)
        for step, indices in enumerate(batches, start=start_step):
            images = self.train.images[indices]
            if self.augment is not None:
                gen = generator(self.order.seed, "augment", epoch, step)
                params = self.augment.draw(self.order.batch_size, gen)
                images = self.augment.apply(images, params[self.order.rank_slice])
            yield self.normalize(images), self.train.labels[indices]

    def native_eval_batches(self) -> Iterator[Batch]:
        for indices in eval_shards(self.num_eval, self.eval_batch_size, self.rank, self.world_size):
            indices = indices.to(self.device)
            yield self.normalize(self.evaluation.images[indices]), self.evaluation.labels[indices]
