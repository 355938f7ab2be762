"""The part of the detection and segmentation tasks that is the same: mm's own loss and evaluation API."""
from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from typing import Any, Dict, Iterable

import torch
from torch import nn

from repl.engine.config import TaskConfig
from repl.engine.distributed import all_reduce_sum
from repl.engine.measure.params import unwrap_model
from repl.integrations.mm_extra import require_openmmlab
from repl.tasks.registry import Scored


class MMTask(Scored, ABC):
    """Loss: data_preprocessor + `model(..., mode="loss")` + parse_losses. Metrics: an mm metric over every rank."""

    scope = ""  # mm default scope ("mmdet" | "mmseg") the metric is built in

    def __init__(self, cfg: TaskConfig) -> None:
        require_openmmlab()
        self.cfg = cfg

    def loss(self, model: nn.Module, batch: Dict[str, Any]) -> torch.Tensor:
        """The sum of the model's losses on one batch (through any DDP wrapper, so gradients sync)."""
        inner = unwrap_model(model)
        data = inner.data_preprocessor(batch, True)
        loss, _ = inner.parse_losses(model(**data, mode="loss"))
        return loss

    @staticmethod
    def batch_size(batch: Dict[str, Any]) -> int:
        """The number of images in an mm batch."""
        return len(batch["inputs"])

    @abstractmethod
    def metric(self, dataset_meta: Dict[str, Any]) -> Any:
        """The mm metric object for this task."""

    @abstractmethod
    def rename(self, results: Dict[str, float]) -> Dict[str, float]:
        """mm metric names and units -> this project's (percent)."""

    @torch.no_grad()
    def evaluate(self, model: nn.Module, batches: Iterable[Dict[str, Any]], autocast: AbstractContextManager) -> Dict[str, float]:
        """The task metrics over every evaluation sample of every rank (computed on rank 0, broadcast by mm)."""
        from mmengine.evaluator import Evaluator
        from mmengine.registry import init_default_scope

        init_default_scope(self.scope)
        inner = unwrap_model(model)
        device = next(inner.parameters()).device
        evaluator, count = None, torch.zeros((), dtype=torch.int64, device=device)
        for batch in batches:
            meta = batch["dataset_meta"]
            if evaluator is None:
                evaluator = Evaluator(self.metric(meta))
                evaluator.dataset_meta = meta
            data = {"inputs": batch["inputs"], "data_samples": batch["data_samples"]}
            with autocast:
                outputs = inner.test_step(data)
            evaluator.process(outputs, data)
            count += len(data["inputs"])
        if evaluator is None:  # this rank had no evaluation sample; it still joins the collective evaluation
            evaluator = Evaluator(self.metric({}))
        return self.rename(evaluator.evaluate(int(all_reduce_sum(count))))
