"""Detection and segmentation data and metrics at unit level (no training): fabricated COCO / CityScapes copies.

Cheap counterparts of tests/integrations/test_mm_tasks.py: mm datasets are built and read, models are stand-ins.
"""
import contextlib
import json

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("mmdet", reason="needs the openmmlab extra (make openmmlab); `make test` installs it")
pytest.importorskip("mmseg", reason="needs the openmmlab extra (make openmmlab); `make test` installs it")

from mmdet.datasets import CocoDataset

from repl.config import compose, to_config
from repl.data import build_data
from tests.data.fabricate_mm import make_coco

SMALL = ["dataset.image_size=32", "dataset.batch_size=1", "dataset.num_workers=0"]


def _coco_data(root, *overrides):
    cfg = to_config(compose(SMALL + ["task=detection", "dataset=coco", f"dataset.root={root}", *overrides])).dataset
    return build_data(cfg, seed=0, device="cpu", task="detection")


class _Predicts(nn.Module):
    """A detector stand-in: fixed boxes per image id, (x1, y1, x2, y2, score, label index) rows."""

    def __init__(self, rows):
        super().__init__()
        self.rows = rows
        self.weight = nn.Parameter(torch.zeros(1))

    def test_step(self, data):
        from mmdet.structures import DetDataSample
        from mmengine.structures import InstanceData

        outputs = []
        for sample in data["data_samples"]:
            rows = torch.tensor(self.rows[sample.img_id], dtype=torch.float32).reshape(-1, 6)
            out = DetDataSample(metainfo=sample.metainfo)
            out.pred_instances = InstanceData(bboxes=rows[:, :4], scores=rows[:, 4], labels=rows[:, 5].long())
            outputs.append(out)
        return outputs


def test_box_map_scores_only_the_evaluated_images(tmp_path):
    """dataset.num_eval below the split's size: COCO mAP is pycocotools' over the evaluated images, not over every
    image of the json (whose ground truth the run never predicted would count as misses)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from repl.engine.config import TaskConfig
    from repl.tasks.detection import DetectionTask

    make_coco(tmp_path, list(CocoDataset.METAINFO["classes"]), n_train=3, n_val=4)
    data = _coco_data(tmp_path, "dataset.num_eval=2")
    ann_file = tmp_path / "annotations" / "instances_val2017.json"
    with contextlib.redirect_stdout(None):
        gt = COCO(str(ann_file))
    seen = [s.img_id for b in data.eval_batches() for s in b["data_samples"]]
    assert len(seen) == 2 and any(gt.getAnnIds(imgIds=i) for i in set(gt.getImgIds()) - set(seen))
    cat_ids = sorted(gt.getCatIds())
    rng = np.random.default_rng(0)
    rows = {}
    for image_id in gt.getImgIds():  # every ground-truth box, jittered, with a random score; one false positive
        rows[image_id] = [[x + dx, y + dy, x + w + dw, y + h + dh, rng.uniform(0.3, 1), cat_ids.index(a["category_id"])]
                          for a in gt.loadAnns(gt.getAnnIds(imgIds=image_id))
                          for (x, y, w, h), (dx, dy, dw, dh) in [(a["bbox"], rng.normal(0, 2, 4))]]
        rows[image_id].append([1, 1, 20, 20, 0.5, 0])
    got = DetectionTask(TaskConfig()).evaluate(_Predicts(rows), data.eval_batches(), contextlib.nullcontext())

    detections = [{"image_id": i, "category_id": cat_ids[int(r[5])], "bbox": [r[0], r[1], r[2] - r[0], r[3] - r[1]],
                   "score": r[4]} for i in seen for r in rows[i]]
    with contextlib.redirect_stdout(None):
        reference = COCOeval(gt, gt.loadRes(detections), "bbox")
        reference.params.imgIds = seen
        reference.evaluate()
        reference.accumulate()
        reference.summarize()
    assert got["box_mAP"] == pytest.approx(100 * reference.stats[0])
    assert got["box_mAP_50"] == pytest.approx(100 * reference.stats[1])
    assert got["box_mAP_75"] == pytest.approx(100 * reference.stats[2])
