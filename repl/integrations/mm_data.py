"""MMData: an mmdet/mmseg dataset (its own loaders and transform pipelines) behind the trainer's DataModule.

Batches are what mm models take, `{"inputs": [uint8 CHW tensors], "data_samples": [...]}`, left on
the CPU: the model's own data_preprocessor normalises, pads and moves them to its device. Evaluation
batches also carry `dataset_meta` (class names, annotation file) for the task's mm metric.
Training order is the project's (seed, epoch) BatchOrder, resumable mid-epoch; a sample's random
transforms are seeded from (seed, epoch, its position in the epoch), as in the streaming classification
path (repl.data.streaming), so a resumed run augments every sample as the uninterrupted run did.
"""
from __future__ import annotations

from typing import Any, Dict, Iterator, List

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from PIL import Image

from repl.data.batching import batching_args, subset_size
from repl.data.config import ImageDataConfig
from repl.data.module import DataModule
from repl.data.order import derive_seed, eval_shards, subset_indices
from repl.data.streaming import PositionSampler, SeededAugmentation
from repl.data.vision import UNREADABLE_IMAGE, read_skipping
from repl.data.workers import from_workers
from repl.errors import DataError

MMBatch = Dict[str, Any]


def _collate(samples: List[Dict[str, Any]]) -> MMBatch:
    """mm's pseudo-collate: lists of the per-sample inputs and data samples, nothing stacked."""
    return {"inputs": [s["inputs"] for s in samples], "data_samples": [s["data_samples"] for s in samples]}


class Readable(Dataset):
    """An mm dataset whose unreadable images are the project's one-line messages, not a worker's traceback.

    Training (`skip`): the next readable sample takes its place with a warning naming the file, as
    SkippingImageFolder does for ImageNet (repl.data.vision.read_skipping). Evaluation: a DataError naming the
    file, since a substitute would be scored under another image's id (COCO mAP keys its ground truth by id).
    """

    def __init__(self, dataset: Dataset, *, skip: bool) -> None:
        self.dataset, self.skip = dataset, skip

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        if self.skip:
            return read_skipping(index, len(self.dataset), self._read, self._unreadable_file, self.dataset.data_root)
        try:
            return self._read(index)
        except UNREADABLE_IMAGE as err:
            raise DataError(f"{self._unreadable_file(index, err)} cannot be read ({(str(err).strip() or type(err).__name__).splitlines()[0]}); "
                            "an evaluation image is not skipped (its ground truth is scored by its id): "
                            "replace the file") from None

    def _read(self, index: int) -> Any:
        try:
            return self.dataset[index]
        except AssertionError as err:  # mmcv's LoadImageFromFile when the image does not decode
            if str(err).startswith("failed to load image"):
                raise OSError(str(err)) from None
            raise

    def _unreadable_file(self, index: int, err: Any) -> str:
        """The first file of sample `index` (the image, then its label map) that PIL cannot decode; the image if
        each can (the decoder that failed was stricter)."""
        info = self.dataset.get_data_info(index)
        paths = [info[key] for key in ("img_path", "seg_map_path") if info.get(key)]
        for path in paths:
            try:
                with Image.open(path) as image:
                    image.load()
            except UNREADABLE_IMAGE:
                return path
        return paths[0]


class MMData(DataModule):
    """Training and evaluation batches of two mm datasets (subset to dataset.num_train / num_eval)."""

    def __init__(self, cfg: ImageDataConfig, train: Dataset, evaluation: Dataset, dataset_meta: Dict[str, Any], *,
                 seed: int, device: torch.device, rank: int, world_size: int) -> None:
        keep_train = subset_indices(len(train), subset_size(cfg, "num_train", len(train)))
        keep_eval = subset_indices(len(evaluation), subset_size(cfg, "num_eval", len(evaluation)))
        common = batching_args(cfg, len(keep_train), seed=seed, device=device, rank=rank, world_size=world_size)
        super().__init__(num_eval=len(keep_eval), **common)
        self.num_classes, self.image_size = cfg.num_classes, cfg.image_size
        self.dataset_meta = dataset_meta
        self.sampler = PositionSampler(self.order)
        shards = [indices.tolist() for indices in eval_shards(self.num_eval, self.eval_batch_size, rank, world_size)]
        options = dict(num_workers=cfg.num_workers, persistent_workers=cfg.num_workers > 0, collate_fn=_collate)
        workers_seed = torch.Generator().manual_seed(derive_seed(seed, "workers", rank))
        self.train_loader = DataLoader(SeededAugmentation(Subset(Readable(train, skip=True), keep_train.tolist()), seed),
                                       batch_sampler=self.sampler, generator=workers_seed, **options)
        self.eval_loader = DataLoader(Subset(Readable(evaluation, skip=False), keep_eval.tolist()),
                                      batch_sampler=shards, **options)

    def train_batches(self, epoch: int, start_step: int = 0) -> Iterator[MMBatch]:
        self.sampler.set_epoch(epoch, start_step)
        yield from from_workers(self.train_loader)

    def eval_batches(self) -> Iterator[MMBatch]:
        for batch in from_workers(self.eval_loader):
            yield {**batch, "dataset_meta": self.dataset_meta}
