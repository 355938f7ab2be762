"""Every paper experiment composes, and trains a few steps with its model on the embedded data.

The few-steps run keeps the experiment's model, recipe and image size and swaps only the data: the
dataset group becomes the embedded default of the experiment's task (what `task=<name>` alone
selects), with the experiment's image size and `dataset.resize`, tiny splits and batches, and 1-2
steps. Pretrained weights are off (no hub here). Detection and segmentation need the openmmlab extra,
which `make test` installs; without it their few-steps runs are skipped with that reason (their
configs still compose).
"""
from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose as hydra_compose
from hydra import initialize_config_dir

from repl.config import compose, config_dir, to_config
from repl.data.config import ImageDataConfig
from repl.run import train

EXPERIMENTS = sorted(p.stem for p in (config_dir() / "experiment").glob("*.yaml") if not p.stem.startswith("study_"))
MM_PACKAGES = {"detection": "mmdet", "segmentation": "mmseg"}  # tasks that run through OpenMMLab
LARGE_IMAGE = 128  # at or above this side a step is costly on a CPU: one step of batch 2


def dataset_choice(overrides: list[str]) -> str:
    """The dataset group option Hydra picks for these overrides."""
    with initialize_config_dir(config_dir=str(config_dir()), version_base=None):
        cfg = hydra_compose(config_name="train", overrides=overrides, return_hydra_config=True)
    return cfg.hydra.runtime.choices["dataset"]


def embedded_overrides(experiment: str) -> list[str]:
    """Overrides that run `experiment` on its task's embedded dataset, tiny and short."""
    cfg = to_config(compose([f"experiment={experiment}"]))
    task_default = [f"task={cfg.task.name}"]
    embedded = dataset_choice(task_default)
    overrides = [f"experiment={experiment}", f"dataset={embedded}", "model.pretrained=false",
                 "dataset.batch_size=2", "trainer.progress=false", "trainer.log_every=1", "trainer.timing_warmup=0"]
    if cfg.task.name == "classification":
        size = cfg.dataset.image_size
        # the experiment's image size (and its dataset.resize), so its model runs at its real resolution;
        # 10 classes keep the generated dataset small (only the classifier head's width differs)
        overrides += [f"dataset.image_size={size}", "dataset.num_classes=10", "dataset.num_train=4", "dataset.num_eval=2"]
        overrides.append(f"trainer.max_steps={1 if cfg.dataset.input_size >= LARGE_IMAGE else 2}")
        # the embedded set lives on the device, where per-image transforms cannot run (tests/data covers them)
        overrides += ["dataset.randaugment=null", "dataset.random_erasing=0"]
    else:  # one step: detection and segmentation steps are seconds each on CPU (tests/integrations trains two)
        overrides.append("trainer.max_steps=1")
        embedded_cfg = to_config(compose(task_default)).dataset
        if isinstance(embedded_cfg, ImageDataConfig):  # the embedded set's own size: 1024 px CityScapes is for GPUs
            overrides.append(f"dataset.image_size={embedded_cfg.image_size}")
    return overrides


def test_every_paper_row_has_an_experiment():
    import csv

    rows = list(csv.DictReader((Path(__file__).resolve().parents[1] / "results" / "paper.csv").open()))
    assert rows and {row["experiment"] for row in rows} <= set(EXPERIMENTS)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes_with_its_name_and_a_recipe(experiment):
    cfg = to_config(compose([f"experiment={experiment}"]))
    assert cfg.experiment_name == experiment  # run directories and tables are keyed by it
    text = (config_dir() / "experiment" / f"{experiment}.yaml").read_text()
    assert "Table:" in text  # each file says which table it feeds


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_trains_a_few_steps_on_embedded_data(experiment, tmp_path):
    overrides = embedded_overrides(experiment)
    cfg = to_config(compose(overrides))
    if cfg.task.name in MM_PACKAGES:  # the project's convention for the openmmlab extra (tests/integrations)
        pytest.importorskip(MM_PACKAGES[cfg.task.name], reason="needs the openmmlab extra (make openmmlab); "
                                                              "`make test` installs it")
    summary = train(cfg, tmp_path)
    assert summary["status"] == "completed"
    assert summary["model"] == compose([f"experiment={experiment}"]).model.name
    assert summary["steps_done"] == cfg.trainer.max_steps
    assert summary["primary"]["value"] is not None and (tmp_path / "summary.json").exists()
    if cfg.task.name == "classification":  # trained at the experiment's model input size
        assert summary["input_size"] == to_config(compose([f"experiment={experiment}"])).dataset.input_size
