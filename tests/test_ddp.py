"""`torchrun --nproc_per_node=2 train.py` on the CPU (gloo) trains the same model as one process.

Two processes with B/2 samples each and one process with B see the same global batches (the data
path shards each global batch by rank and draws augmentation for the whole batch), and DDP averages
the two half-batch gradients, which is the full-batch mean gradient. So the runs agree up to float
rounding, provided no layer mixes samples within a batch: BatchNorm normalises by per-rank
statistics (B/2) under DDP, which changes the math. The model is therefore ViT-T (LayerNorm only,
no dropout) with RepL applied, so the surrogates' references to neighbour weights go through DDP too.

Tolerance: the two runs add the same gradient terms in another order (gloo's all-reduce, half-batch
sums); in float32 that perturbs each step by ~1e-7 relative, and 4 SGD steps grow it to a measured
~2e-6 relative L2 difference of all weights. The bound 1e-4 leaves 50x margin, while a
batch-statistics model (ResNet-20 with BatchNorm, same setting) differs by ~4e-2, so the check
does detect a real difference in the math.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests import torchrun

NUM_EVAL = 32
ARGS = ["model=vit_t", "dataset.image_size=16", "dataset.num_train=64", f"dataset.num_eval={NUM_EVAL}",
        "dataset.batch_size=16", "trainer.epochs=1", "trainer.deterministic=true", "trainer.device=cpu",
        "trainer.progress=false", "trainer.log_every=1"]
WEIGHT_RTOL = 1e-4  # relative L2 difference of all weights; see the module docstring


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """The 2-process and the 1-process run of the same command, each in its own run directory."""
    base = tmp_path_factory.mktemp("ddp")
    two = torchrun.train(ARGS, base / "two", nproc=2)
    assert two.returncode == 0, two.stderr[-3000:]
    one = torchrun.train(ARGS, base / "one")
    assert one.returncode == 0, one.stderr[-3000:]
    return {"two": base / "two", "one": base / "one", "stdout": two.stdout}


def _summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def _weights(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["model"]


def test_two_processes_train_the_same_weights_as_one(runs):
    two, one = _weights(runs["two"]), _weights(runs["one"])
    assert two.keys() == one.keys()
    keys = [k for k in one if one[k].is_floating_point()]
    diff = sum(float((two[k].double() - one[k].double()).square().sum()) for k in keys) ** 0.5
    norm = sum(float(one[k].double().square().sum()) for k in keys) ** 0.5
    assert diff <= WEIGHT_RTOL * norm, f"relative weight difference {diff / norm:.2e}"


def test_two_processes_report_the_same_metrics_from_one_summary(runs):
    two, one = _summary(runs["two"]), _summary(runs["one"])
    assert two["status"] == one["status"] == "completed"
    assert (two["world_size"], one["world_size"]) == (2, 1)
    assert two["steps_done"] == one["steps_done"] == 4  # 64 samples / global batch 16
    assert two["params"] == one["params"] and two["plan"]["blocks"] == one["plan"]["blocks"]
    # eval metrics are summed over both ranks' shards: the whole eval split, like one process
    assert two["metrics"]["loss"] == pytest.approx(one["metrics"]["loss"], rel=1e-4)
    one_sample = 100.0 / NUM_EVAL  # a logit within rounding of its rival may flip one prediction
    for name in ("top1", "top5"):
        assert abs(two["metrics"][name] - one["metrics"][name]) <= one_sample + 1e-9, name


def test_only_rank_zero_writes(runs):
    lines = (runs["two"] / "metrics.jsonl").read_text().splitlines()
    steps = [json.loads(line)["step"] for line in lines if "train/loss" in line]
    assert steps == [1, 2, 3, 4]  # one record per step: a second writer would duplicate them
    assert runs["stdout"].count("results in") == 1  # one rank prints the end-of-run table
    assert sorted(p.name for p in (runs["two"] / "checkpoints").iterdir()) == ["last.pt"]


def test_logged_training_loss_is_the_global_batch_loss(runs):
    def losses(run_dir: Path) -> list[float]:
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
        return [json.loads(line)["train/loss"] for line in lines if "train/loss" in line]

    assert losses(runs["two"]) == pytest.approx(losses(runs["one"]), rel=1e-4)



def test_two_processes_accumulating_train_the_same_weights_as_one(runs, tmp_path):
    """trainer.accumulate=2 under DDP (no_sync on the first micro-batch): still the global batch's gradient."""
    run_dir = tmp_path / "two_accumulate"
    done = torchrun.train([*ARGS, "trainer.accumulate=2"], run_dir, nproc=2)
    assert done.returncode == 0, done.stderr[-3000:]
    two, one = _weights(run_dir), _weights(runs["one"])
    keys = [k for k in one if one[k].is_floating_point()]
    diff = sum(float((two[k].double() - one[k].double()).square().sum()) for k in keys) ** 0.5
    norm = sum(float(one[k].double().square().sum()) for k in keys) ** 0.5
    assert diff <= WEIGHT_RTOL * norm, f"relative weight difference {diff / norm:.2e}"
