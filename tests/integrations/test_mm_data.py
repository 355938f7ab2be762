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
    assert got["box_mAP"] == pytest.approx(100 * reference.stats[0], abs=0.06)  # CocoMetric keeps 3 decimals
    assert got["box_mAP_50"] == pytest.approx(100 * reference.stats[1], abs=0.06)  # CocoMetric keeps 3 decimals
    assert got["box_mAP_75"] == pytest.approx(100 * reference.stats[2], abs=0.06)  # CocoMetric keeps 3 decimals


def _cityscapes_data(root, *overrides):
    cfg = to_config(compose(SMALL + ["task=segmentation", "dataset=cityscapes", f"dataset.root={root}",
                                     "dataset.image_size=16", *overrides])).dataset
    return build_data(cfg, seed=0, device="cpu", task="segmentation")


def _one_line(err) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("damage, expected", [
    (lambda path: path.write_text(path.read_text()[:200]), "instances_val2017.json is not readable COCO json"),
    (lambda path: path.write_text(json.dumps({**json.loads(path.read_text()), "images": [], "annotations": []})),
     "the val split is empty: {root}/annotations/instances_val2017.json lists no image"),
])
def test_a_bad_coco_annotation_file_is_one_line_naming_it(tmp_path, damage, expected):
    from repl.errors import DataError

    make_coco(tmp_path, list(CocoDataset.METAINFO["classes"]), n_train=3, n_val=2)
    damage(tmp_path / "annotations" / "instances_val2017.json")
    with pytest.raises(DataError) as err:
        _coco_data(tmp_path)
    assert expected.format(root=tmp_path) in _one_line(err)


def test_an_empty_cityscapes_split_or_missing_labels_are_one_line_before_training(tmp_path):
    from repl.errors import DataError

    from tests.data.fabricate_mm import make_cityscapes

    make_cityscapes(tmp_path, n_train=2, n_val=2, height=16)
    missing = next((tmp_path / "gtFine" / "val").rglob("*_gtFine_labelIds.png"))
    missing.unlink()
    with pytest.raises(DataError) as err:
        _cityscapes_data(tmp_path)
    assert _one_line(err).startswith(f"{missing} does not exist")
    for image in (tmp_path / "leftImg8bit" / "val").rglob("*.png"):
        image.unlink()
    with pytest.raises(DataError) as err:
        _cityscapes_data(tmp_path)
    assert _one_line(err).startswith("the val split is empty") and "leftImg8bit/val" in str(err.value)


@pytest.mark.parametrize("task", ["detection", "segmentation"])
def test_an_unreadable_image_is_skipped_in_training_and_named_in_evaluation(tmp_path, task, capfd):
    """As SkippingImageFolder does for ImageNet: a training sample that does not decode gives way to the next with a
    one-line warning naming the file; an evaluation image is not replaced (it is scored by its id): one line."""
    from repl.errors import DataError

    from tests.data.fabricate_mm import make_cityscapes

    if task == "detection":
        make_coco(tmp_path, list(CocoDataset.METAINFO["classes"]), n_train=3, n_val=2)
        data = _coco_data(tmp_path)
    else:
        make_cityscapes(tmp_path, n_train=2, n_val=2, height=16)
        data = _cityscapes_data(tmp_path)
    # the first training sample's file (its label map for CityScapes: a PNG that PIL reads lazily)
    train = data.train_loader.dataset.dataset  # the Subset under the per-sample seeding
    info = train.dataset.dataset.get_data_info(int(train.indices[0]))
    bad = info["img_path"] if task == "detection" else info["seg_map_path"]
    with open(bad, "r+b") as f:
        f.truncate(100)
    batches = list(data.train_batches(0))
    assert sum(len(b["inputs"]) for b in batches) == data.num_train  # a whole epoch, no traceback
    warnings = [line for line in capfd.readouterr().err.splitlines() if "unreadable" in line]
    assert warnings and all(line.startswith(f"warning: skipping unreadable image {bad} ") for line in warnings)

    info = data.eval_loader.dataset.dataset.dataset.get_data_info(int(data.eval_loader.dataset.indices[0]))
    bad = info["img_path"]
    with open(bad, "r+b") as f:
        f.truncate(100)
    with pytest.raises(DataError) as err:
        list(data.eval_batches())
    assert _one_line(err).startswith(f"{bad} cannot be read")


def test_a_resumed_epoch_augments_every_sample_as_the_uninterrupted_one(tmp_path):
    """The random crop, resize, flip and colour changes of a sample are seeded from (seed, epoch, position): a run
    resumed at step 1 sees batch 1 as it was, though the process's RNG went elsewhere in between."""
    from tests.data.fabricate_mm import make_cityscapes

    make_cityscapes(tmp_path, n_train=3, n_val=1, height=32)
    data = _cityscapes_data(tmp_path)
    whole = list(data.train_batches(1))
    torch.rand(7), np.random.rand(3)  # the training process's RNG moves on (its model, dropout, ...)
    resumed = list(data.train_batches(1, start_step=1))
    assert len(resumed) == len(whole) - 1 >= 2
    for a, b in zip(whole[1:], resumed):
        assert all(torch.equal(x, y) for x, y in zip(a["inputs"], b["inputs"]))
        assert all(torch.equal(x.gt_sem_seg.data, y.gt_sem_seg.data) for x, y in zip(a["data_samples"], b["data_samples"]))
    again = list(data.train_batches(1))
    assert all(torch.equal(x, y) for a, b in zip(whole, again) for x, y in zip(a["inputs"], b["inputs"]))


def test_metrics_are_stored_without_float32_or_scaling_noise():
    from repl.engine.config import TaskConfig
    from repl.tasks.detection import DetectionTask
    from repl.tasks.segmentation import SegmentationTask

    seg = SegmentationTask(TaskConfig()).rename({"aAcc": np.float32(5.11), "mIoU": np.float32(0.57), "mAcc": np.float32(1.0)})
    assert seg == {"pixel_acc": 5.11, "mIoU": 0.57, "mAcc": 1.0} and all(type(v) is float for v in seg.values())
    coco = {f"coco/bbox_mAP{suffix}": 0.07 for suffix in ("", "_50", "_75", "_s", "_m", "_l")}
    det = DetectionTask(TaskConfig()).rename(coco)
    assert set(det.values()) == {7.0} and all(type(v) is float for v in det.values())
