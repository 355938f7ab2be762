"""`python train.py dataset=<name> dataset.root=DIR dataset.download=false` on copies in each real format."""
from __future__ import annotations

import pytest

from repl.config import compose, to_config
from repl.run import train
from tests.data.fabricate import make_cifar10, make_imagenet, make_stl10, make_svhn

FABRICATE = {"cifar10": make_cifar10, "svhn": make_svhn, "stl10": make_stl10}
COMMON = ["dataset.download=false", "dataset.batch_size=8", "dataset.num_workers=0",
          "trainer.epochs=1", "trainer.progress=false"]


@pytest.mark.parametrize("name", sorted(FABRICATE))
def test_trains_on_a_copy_in_the_real_format(tmp_path, name):
    splits = FABRICATE[name](tmp_path / "data")
    summary = train(to_config(compose([f"dataset={name}", f"dataset.root={tmp_path / 'data'}", "model=resnet20", *COMMON])),
                    tmp_path / "run")
    assert summary["status"] == "completed" and summary["dataset"] == name
    assert summary["steps_done"] == len(splits["train"][1]) // 8  # every training image seen once, drop_last


def test_trains_on_an_imagenet_folder_tree(tmp_path):
    make_imagenet(tmp_path / "imagenet")
    overrides = ["dataset=imagenet", f"dataset.root={tmp_path / 'imagenet'}", "model=resnet18",
                 "dataset.num_classes=3", "dataset.image_size=32", *COMMON]
    summary = train(to_config(compose(overrides)), tmp_path / "run")
    assert summary["status"] == "completed" and summary["steps_done"] >= 1 and summary["model"] == "resnet18"
