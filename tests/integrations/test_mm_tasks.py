"""Detection and segmentation end to end through mmdet/mmseg: train steps, evaluation, summary.json.

Real mm models on tiny data: the embedded synthetic sets, and COCO / CityScapes copies fabricated in
their real layouts (tests/data/fabricate_mm.py).
"""
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mmdet", reason="needs the openmmlab extra (make openmmlab); `make test` installs it")
pytest.importorskip("mmseg", reason="needs the openmmlab extra (make openmmlab); `make test` installs it")

from mmdet.datasets import CocoDataset

from repl.config import compose, to_config
from repl.data import build_data
from repl.errors import DataError
from repl.run import train
from tests.data.fabricate_mm import make_cityscapes, make_coco

pytestmark = pytest.mark.slow
TINY = ["trainer.max_steps=1", "trainer.progress=false", "trainer.timing_warmup=0", "dataset.image_size=64",
        "dataset.batch_size=2", "dataset.num_workers=0"]
CONTRACT_KEYS = {"status", "task", "dataset", "model", "method", "plan", "params", "memory", "flops", "time",
                 "throughput", "metrics", "primary", "epochs_done", "steps_done", "env"}


def _run(tmp_path: Path, overrides, name: str) -> dict:
    run_dir = tmp_path / name
    summary = train(to_config(compose(TINY + overrides)), run_dir)
    assert json.loads((run_dir / "summary.json").read_text()) == json.loads(json.dumps(summary))
    assert CONTRACT_KEYS <= summary.keys() and summary["status"] == "completed" and summary["steps_done"] == 1
    assert summary["flops"]["train_step"] > 0 and summary["memory"]["estimate_bytes"] > 0
    return summary


@pytest.mark.parametrize("task,primary,others", [("detection", "box_mAP", {"box_mAP_50", "box_mAP_75"}),
                                                 ("segmentation", "pixel_acc", {"mIoU", "mAcc"})])
def test_synthetic_default_trains_and_ratio_reduces_trainable_backbone_parameters(tmp_path, task, primary, others):
    data = [f"dataset.root={tmp_path / 'data'}", "dataset.num_train=4", "dataset.num_eval=2"]
    stock = _run(tmp_path, [f"task={task}", "repl.ratio=0"] + data, "r0")
    repl = _run(tmp_path, [f"task={task}", "repl.ratio=0.25"] + data, "r25")
    assert stock["method"] == "bp" and stock["params"]["replaced"] == 0
    assert repl["method"] == "repl" and all(p.startswith("backbone.layer") for p in repl["plan"]["paths"])
    # everything outside the backbone is the same network, so the difference is the backbone's
    assert stock["params"]["trainable"] - repl["params"]["trainable"] == repl["params"]["replaced"] - repl["params"]["fusion"] > 0
    for summary in (stock, repl):
        assert summary["task"] == task and summary["primary"]["name"] == primary
        assert {primary} | others <= summary["metrics"].keys()
        assert all(0.0 <= v <= 100.0 for v in summary["metrics"].values())


def test_coco_loader_reads_the_real_layout(tmp_path):
    counts = make_coco(tmp_path / "coco", list(CocoDataset.METAINFO["classes"]))
    cfg = to_config(compose(TINY + ["task=detection", "dataset=coco", f"dataset.root={tmp_path / 'coco'}"])).dataset
    data = build_data(cfg, seed=0, device="cpu", task="detection")
    assert (data.num_train, data.num_eval) == (counts["train"], counts["val"])  # images without boxes skip training
    batch = next(iter(data.train_batches(0)))
    sample = batch["data_samples"][0]
    assert len(batch["inputs"]) == 2 and min(batch["inputs"][0].shape[1:]) == 64  # resized to the short side
    assert len(sample.gt_instances.labels) > 0 and int(sample.gt_instances.labels.max()) < 80
    evaluation = list(data.eval_batches())
    assert sum(len(b["inputs"]) for b in evaluation) == counts["val_all"]
    assert evaluation[0]["dataset_meta"]["ann_file"].endswith("instances_val2017.json")


def test_coco_and_cityscapes_from_the_command_line_config(tmp_path):
    make_coco(tmp_path / "coco", list(CocoDataset.METAINFO["classes"]))
    det = _run(tmp_path, ["task=detection", "dataset=coco", f"dataset.root={tmp_path / 'coco'}"], "coco")
    assert det["dataset"] == "coco" and det["model"] == "faster_rcnn_r50_fpn" and "box_mAP" in det["metrics"]
    make_cityscapes(tmp_path / "cityscapes")
    seg = _run(tmp_path, ["task=segmentation", "dataset=cityscapes", f"dataset.root={tmp_path / 'cityscapes'}",
                          "dataset.image_size=48"], "cityscapes")
    assert seg["dataset"] == "cityscapes" and seg["model"] == "deeplabv3_r50" and "mIoU" in seg["metrics"]


def test_cityscapes_loader_maps_label_ids_to_train_ids(tmp_path):
    expected = make_cityscapes(tmp_path / "cityscapes")
    cfg = to_config(compose(TINY + ["task=segmentation", "dataset=cityscapes",
                                    f"dataset.root={tmp_path / 'cityscapes'}"])).dataset
    data = build_data(cfg, seed=0, device="cpu", task="segmentation")
    assert (data.num_train, data.num_eval) == (4, 2)
    seen = {}
    for batch in data.eval_batches():
        for sample in batch["data_samples"]:
            stem = Path(sample.img_path).name.replace("_leftImg8bit.png", "")
            seen[stem] = sample.gt_sem_seg.data[0].numpy()
    assert seen.keys() == expected["val"].keys()
    for stem, train_ids in expected["val"].items():
        np.testing.assert_array_equal(seen[stem], train_ids)


@pytest.mark.parametrize("task,dataset", [("detection", "coco"), ("segmentation", "cityscapes")])
def test_a_missing_dataset_names_the_path(tmp_path, task, dataset):
    cfg = to_config(compose([f"task={task}", f"dataset={dataset}", f"dataset.root={tmp_path / 'none'}"])).dataset
    with pytest.raises(DataError, match=str(tmp_path / "none")):
        build_data(cfg, seed=0, device="cpu", task=task)


def test_an_unreachable_pretrained_backbone_is_one_line(monkeypatch):
    """model.pretrained=true for a detector with no network and no cached torchvision weights: ConfigError naming
    the key and what to do, not urllib's traceback from inside mmengine's init_weights."""
    import urllib.error

    import mmengine.runner.checkpoint as mm_checkpoint

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(mm_checkpoint, "load_url", offline)
    from repl.errors import ConfigError
    from repl.integrations.mm_models import build_detector

    with pytest.raises(ConfigError, match=r"model.pretrained=true: .*faster_rcnn_r50_fpn's backbone.*"
                                          r"Name or service not known.*model.pretrained=false"):
        build_detector("faster_rcnn_r50_fpn", num_classes=3, pretrained=True)
