"""DataModule: the one interface the trainer reads data through, whatever the dataset or data path."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Iterator, Optional, Tuple

import torch

from repl.data.augment import resize
from repl.data.order import BatchOrder

Batch = Tuple[torch.Tensor, ...]  # (images, labels); text: (inputs, targets), evaluation adds the split name


class DataModule(ABC):
    """Dataset sizes, batching, and batches already on the device; what a batch holds is the subclass's.

    Sizes and batch sizes are global (over all ranks); each rank yields its own disjoint shard.
    """

    def __init__(
        self,
        *,
        num_eval: int,
        order: BatchOrder,
        eval_batch_size: int,
        rank: int,
        world_size: int,
        device: torch.device,
    ) -> None:
        self.num_train = order.num_train
        self.num_eval = num_eval
        self.steps_per_epoch = order.steps_per_epoch
        self.order = order
        self.eval_batch_size = eval_batch_size
        self.rank = rank
        self.world_size = world_size
        self.device = device

    @abstractmethod
    def train_batches(self, epoch: int, start_step: int = 0) -> Iterator[Batch]:
        """This rank's training batches of `epoch` from `start_step` on (drop_last), shuffled by (seed, epoch)."""

    @abstractmethod
    def eval_batches(self) -> Iterator[Batch]:
        """This rank's evaluation batches, in order; over all ranks every evaluation sample appears once."""


class ImageData(DataModule):
    """Image-classification batches (float32 NCHW images, int64 labels); with `resize` set, every batch is
    resized on its device to that side.

    Subclasses (the resident and the streaming path) produce batches at `dataset.image_size`, augmented
    there; the resize comes after augmentation and normalisation, the same on every path. `image_size`
    is the side of the batches this yields (the model's input size).
    """

    def __init__(self, *, num_classes: int, image_size: int, in_chans: int, resize: Optional[int],
                 **batching) -> None:
        super().__init__(**batching)
        self.num_classes = num_classes
        self.image_size = image_size
        self.in_chans = in_chans
        self.resize = resize

    def train_batches(self, epoch: int, start_step: int = 0) -> Iterator[Batch]:
        return self._resized(self.native_train_batches(epoch, start_step))

    def eval_batches(self) -> Iterator[Batch]:
        return self._resized(self.native_eval_batches())

    @abstractmethod
    def native_train_batches(self, epoch: int, start_step: int = 0) -> Iterator[Batch]:
        """`train_batches` at the stored image size, augmented."""

    @abstractmethod
    def native_eval_batches(self) -> Iterator[Batch]:
        """`eval_batches` at the stored image size."""

    def _resized(self, batches: Iterator[Batch]) -> Iterator[Batch]:
        for images, labels in batches:
            yield (images if self.resize is None else resize(images, self.resize)), labels
