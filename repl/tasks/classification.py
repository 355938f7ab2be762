"""Image classification: cross-entropy loss, top-1/top-5 accuracy reduced over ranks."""
from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Dict, Iterable, List, Optional, Tuple

import torch
from torch import nn

from repl.engine.config import TaskConfig
from repl.engine.distributed import all_reduce_sum
from repl.errors import DataError
from repl.tasks.micro import MicroLoss, micro_loss, row_chunks
from repl.tasks.mixing import BatchMixer
from repl.tasks.registry import Scored

Batch = Tuple[torch.Tensor, torch.Tensor]


class ClassificationTask(Scored):
    """Loss and evaluation for classifiers; the primary metric is top-1 accuracy in percent."""

    name = "classification"

    def __init__(self, cfg: TaskConfig) -> None:
        self.criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        self.mixer = BatchMixer(cfg.mixup, cfg.cutmix, cfg.mix_switch)

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        """Mean training loss of one batch (of its mixup/CutMix version when those are on)."""
        return self._mixed_loss(model, *self._mixed(batch))

    def micro_losses(self, batch: Batch, parts: int) -> List[MicroLoss]:
        """`loss` of the batch as `parts` micro-batch losses weighted by their sample share, which sum to it.

        The whole batch is mixed first (one lam and one partner order, as without accumulation), then split.
        """
        images, labels, partners, lam = self._mixed(batch)
        n = labels.shape[0]
        if partners is None:
            return [micro_loss(self._mixed_loss, x.shape[0] / n, x, y, None, lam) for x, y in row_chunks(parts, images, labels)]
        return [micro_loss(self._mixed_loss, x.shape[0] / n, x, y, p, lam)
                for x, y, p in row_chunks(parts, images, labels, partners)]

    def _mixed(self, batch: Batch) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor], float]:
        """(images, labels, partner labels, lam): mixup/CutMix applied, or (images, labels, None, 1) when off."""
        images, labels = batch
        if not self.mixer.active:
            return images, labels, None, 1.0
        mixed, partner, lam = self.mixer(images)
        return mixed, labels, labels[partner], lam

    def _mixed_loss(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                    partners: Optional[torch.Tensor], lam: float) -> torch.Tensor:
        logits = model(images)
        if partners is None:
            return self.criterion(logits, labels)
        return lam * self.criterion(logits, labels) + (1.0 - lam) * self.criterion(logits, partners)

    @staticmethod
    def batch_size(batch: Batch) -> int:
        """The number of samples in an (images, labels) batch."""
        return batch[1].shape[0]

    @torch.no_grad()
    def evaluate(self, model: nn.Module, batches: Iterable[Batch], autocast: AbstractContextManager) -> Dict[str, float]:
        """Loss, top-1 and top-5 (percent) over every eval sample of every rank."""
        device = next(model.parameters()).device
        totals = torch.zeros(4, dtype=torch.float64, device=device)  # loss sum, top1, top5, count
        for images, labels in batches:
            with autocast:
                logits = model(images)
            totals[0] += nn.functional.cross_entropy(logits.float(), labels, reduction="sum")
            top = logits.topk(min(5, logits.shape[1]), dim=1).indices
            hits = top.eq(labels[:, None])
            totals[1] += hits[:, 0].sum()
            totals[2] += hits.any(dim=1).sum()
            totals[3] += labels.shape[0]
        loss, top1, top5, count = all_reduce_sum(totals).tolist()
        if count == 0:  # the data builders refuse an empty split; a stand-in DataModule may still yield nothing
            raise DataError("the evaluation split has no sample: top-1 is undefined")
        return {"loss": loss / count, "top1": 100.0 * top1 / count, "top5": 100.0 * top5 / count}
