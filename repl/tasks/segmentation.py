"""Semantic segmentation (task=segmentation): mmseg's losses; overall pixel accuracy and mIoU (mmseg's IoUMetric)."""
from __future__ import annotations

from typing import Any, Dict

from repl.integrations.mm_task import MMTask


class SegmentationTask(MMTask):
    """Segmentors built by repl.integrations.openmmlab; the primary metric is overall pixel accuracy in percent."""

    name = "segmentation"
    scope = "mmseg"

    def metric(self, dataset_meta: Dict[str, Any]) -> Any:
        from mmseg.evaluation import IoUMetric

        return IoUMetric(iou_metrics=["mIoU"])

    def rename(self, results: Dict[str, float]) -> Dict[str, float]:
        """IoUMetric already reports percent: aAcc (overall pixel accuracy), mIoU, mAcc (mean class accuracy)."""
        return {"pixel_acc": float(results["aAcc"]), "mIoU": float(results["mIoU"]), "mAcc": float(results["mAcc"])}
