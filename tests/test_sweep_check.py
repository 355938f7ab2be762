"""The multirun pre-check (repl/sweep_check.py): what each job's run would refuse once built, found before any job
starts, cheaply; the launcher's commands; the data's files located without reading them."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from repl import sweep_check
from repl.config import compose, to_config
from repl.data.build import check_present
from repl.errors import ConfigError, DataError
from repl.sweep_check import check_launcher, check_sweep
from tests.engine.test_training import TINY


def _count_builds(monkeypatch) -> list:
    """Record the model of each architecture() call of the pre-check."""
    built = []
    build = sweep_check.architecture

    def counted(*args):
        built.append(build(*args))
        return built[-1]

    monkeypatch.setattr(sweep_check, "architecture", counted)
    return built


def test_a_seed_sweep_builds_one_model_on_the_meta_device(monkeypatch):
    built = _count_builds(monkeypatch)
    check_sweep(TINY + ["seed=" + ",".join(map(str, range(30))), "repl.ratio=0.25,0.4"])
    assert len(built) == 1
    assert all(p.is_meta for p in built[0].parameters())  # no memory, no initialisation


def test_each_distinct_model_is_built_once(monkeypatch):
    built = _count_builds(monkeypatch)
    check_sweep(TINY + ["model=resnet20,resnet32", "seed=0,1,2"])
    assert len(built) == 2


def test_similarity_selection_is_checked_up_to_scoring_without_data():
    check_sweep(TINY + ["repl.select=similarity", "repl.similarity=weight,cka", "repl.ratio=0.25,0.4"])


@pytest.mark.parametrize("overrides,missing", [
    (["dataset=cifar10"], "cifar-10-batches-py/data_batch_1 does not exist"),
    (["dataset=svhn"], "train_32x32.mat does not exist"),
    (["task=lm", "dataset=wikitext2"], "WikiText-2 not found: no WikiText-2 files in"),
    (["task=detection", "dataset=coco"], "has no annotations/instances_train2017.json"),
    (["task=segmentation", "dataset=cityscapes"], "has no leftImg8bit/train"),
])
def test_missing_dataset_files_are_found_without_reading_any(tmp_path, overrides, missing):
    cfg = to_config(compose(overrides + [f"dataset.root={tmp_path / 'nowhere'}"]))
    with pytest.raises(DataError, match=missing):
        check_present(cfg.dataset, cfg.task.name)


def test_present_or_downloadable_or_generated_data_passes(tmp_path):
    for name in ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch",
                 "batches.meta"):  # empty files: presence is all that is looked at
        (tmp_path / "cifar-10-batches-py").mkdir(exist_ok=True)
        (tmp_path / "cifar-10-batches-py" / name).write_bytes(b"")
    for overrides in (["dataset=cifar10", f"dataset.root={tmp_path}"],
                      ["dataset=cifar10", f"dataset.root={tmp_path / 'nowhere'}", "dataset.download=true"],
                      ["task=lm", "dataset=wikitext2", f"dataset.root={tmp_path / 'nowhere'}", "dataset.download=true"],
                      [], ["task=lm"]):
        cfg = to_config(compose(overrides))
        check_present(cfg.dataset, cfg.task.name)


def _put_on_path(folder: Path, *commands: str) -> None:
    for command in commands:
        (folder / command).write_text("#!/bin/sh\nexit 0\n")
        (folder / command).chmod(0o755)


def test_slurm_launcher_needs_sbatch_and_srun(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    _put_on_path(tmp_path, "srun")
    with pytest.raises(ConfigError, match="launcher=slurm needs SLURM's sbatch on PATH"):
        check_launcher(["launcher=slurm"])
    _put_on_path(tmp_path, "sbatch")
    check_launcher(["launcher=slurm"])  # a SLURM login node
    os.remove(tmp_path / "srun")
    check_launcher(["launcher=local"])  # the other launchers need neither
    check_launcher([])
