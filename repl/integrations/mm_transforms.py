"""mm data transforms that repl's loaders name in their pipelines (registered in mmseg's TRANSFORMS)."""
from __future__ import annotations

from typing import Any, Dict

import numpy as np

# CityScapes labelIds -> the 19 trainIds of the benchmark (cityscapesscripts' table); everything else is 255 (ignored).
CITYSCAPES_TRAIN_IDS = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12,
                        26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}


class CityscapesLabelIdsToTrainIds:
    """mm transform after LoadAnnotations: maps the `*_gtFine_labelIds.png` of the official download to trainIds,
    so CityScapes is read as distributed (no conversion step with cityscapesscripts first)."""

    def __init__(self) -> None:
        self.lut = np.full(256, 255, dtype=np.uint8)
        for label_id, train_id in CITYSCAPES_TRAIN_IDS.items():
            self.lut[label_id] = train_id

    def __call__(self, results: Dict[str, Any]) -> Dict[str, Any]:
        results["gt_seg_map"] = self.lut[results["gt_seg_map"]]
        return results


def register_transforms() -> None:
    """Make the transforms above nameable as `dict(type=...)` in mmseg pipelines (needs the extra)."""
    from mmseg.registry import TRANSFORMS

    TRANSFORMS.register_module("CityscapesLabelIdsToTrainIds", module=CityscapesLabelIdsToTrainIds)
