"""Object detection (task=detection): mmdet's losses; COCO box mAP (pycocotools, through mmdet's CocoMetric)."""
from __future__ import annotations

from typing import Any, Dict

from repl.errors import DataError
from repl.integrations.mm_task import MMTask

# mmdet's CocoMetric names (fractions) -> ours (percent)
_NAMES = {"bbox_mAP": "box_mAP", "bbox_mAP_50": "box_mAP_50", "bbox_mAP_75": "box_mAP_75",
          "bbox_mAP_s": "box_mAP_s", "bbox_mAP_m": "box_mAP_m", "bbox_mAP_l": "box_mAP_l"}


def evaluated_images_metric() -> type:
    """mmdet's CocoMetric scoring exactly the images it was given predictions for.

    CocoMetric scores every image id of its ann_file, so with dataset.num_eval below the split's size the
    ground truth of images never evaluated would count as misses; here its img_ids are those of the results
    (gathered from every rank), which is COCOeval's params.imgIds over the evaluated subset.
    """
    from mmdet.evaluation import CocoMetric

    class EvaluatedImagesCocoMetric(CocoMetric):
        def compute_metrics(self, results: list) -> Dict[str, float]:
            self.img_ids = sorted({int(gt["img_id"]) for gt, _ in results})
            return super().compute_metrics(results)

    return EvaluatedImagesCocoMetric


class DetectionTask(MMTask):
    """Detectors built by repl.integrations.openmmlab; the primary metric is COCO box mAP@[.5:.95] in percent."""

    name = "detection"
    scope = "mmdet"

    def metric(self, dataset_meta: Dict[str, Any]) -> Any:
        """mmdet's CocoMetric over the images evaluated (dataset.num_eval may keep part of the json's images)."""
        return evaluated_images_metric()(ann_file=dataset_meta.get("ann_file"), metric="bbox")

    def rename(self, results: Dict[str, float]) -> Dict[str, float]:
        """Percent. A model with no detection at all (CocoMetric then returns nothing) scores 0; a metric
        COCO leaves undefined (-1: no ground-truth box of that size) is left out."""
        if not results:
            return {ours: 0.0 for ours in _NAMES.values()}
        # CocoMetric rounds fractions to 3 decimals: 1 in percent (100 * 0.07 is 7.000000000000001 as a float)
        metrics = {ours: round(100.0 * float(results[f"coco/{theirs}"]), 1) for theirs, ours in _NAMES.items()}
        if metrics[self.primary] < 0:
            raise DataError("the evaluation split has no ground-truth box: COCO mAP is undefined")
        return {name: value for name, value in metrics.items() if value >= 0}
