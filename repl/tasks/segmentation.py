"""Semantic segmentation (task=segmentation): mmseg's losses; overall pixel accuracy and mIoU (mmseg's IoUMetric)."""
from __future__ import annotations

from typing import Any, Dict

from repl.integrations.mm_task import MMTask

_NAMES = {"aAcc": "pixel_acc", "mIoU": "mIoU", "mAcc": "mAcc"}  # mmseg's IoUMetric names -> ours
DECIMALS = 2  # IoUMetric's own rounding


class SegmentationTask(MMTask):
    """Segmentors built by repl.integrations.openmmlab; the primary metric is overall pixel accuracy in percent."""

    name = "segmentation"
    scope = "mmseg"

    def metric(self, dataset_meta: Dict[str, Any]) -> Any:
        """mmseg's IoU metric (mIoU, per-class IoU and accuracy, overall pixel accuracy)."""
        from mmseg.evaluation import IoUMetric

        return IoUMetric(iou_metrics=["mIoU"])

    def rename(self, results: Dict[str, float]) -> Dict[str, float]:
        """IoUMetric already reports percent, rounded to 2 decimals: aAcc (overall pixel accuracy), mIoU, mAcc (mean
        class accuracy). Its values are float32 (5.11 reads 5.110000133514404 as a float64): rounded again here."""
        return {ours: round(float(results[theirs]), DECIMALS) for theirs, ours in _NAMES.items()}
