"""End-to-end training runs on the embedded dataset: determinism, exact resume, the summary contract."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from repl.config import compose, to_config
from repl.errors import CheckpointError
from repl.run import train

# Small enough for seconds per run: 4 steps per epoch of 64 images at 16x16.
TINY = ["model=resnet20", "dataset.num_train=256", "dataset.num_eval=128", "dataset.batch_size=64",
        "dataset.image_size=16", "trainer.progress=false", "trainer.log_every=1", "trainer.timing_warmup=1"]


def run(tmp: Path, *overrides: str) -> dict:
    return train(to_config(compose(TINY + list(overrides))), tmp)


def weights(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["model"]


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_training_is_deterministic_under_a_seed(tmp_path):
    run(tmp_path / "a", "repl=none", "trainer.max_steps=3")
    run(tmp_path / "b", "repl=none", "trainer.max_steps=3")
    assert_same_weights(weights(tmp_path / "a"), weights(tmp_path / "b"))
    run(tmp_path / "c", "repl=none", "trainer.max_steps=3", "seed=1")
    other = weights(tmp_path / "c")
    assert any(not torch.equal(other[k], v) for k, v in weights(tmp_path / "a").items())


@pytest.mark.parametrize("method", ["repl=none", "repl=repl"])
def test_two_steps_resume_one_step_equals_three_steps(tmp_path, method):
    run(tmp_path / "split", method, "trainer.max_steps=2")
    resumed = run(tmp_path / "split", method, "trainer.max_steps=3")
    run(tmp_path / "whole", method, "trainer.max_steps=3")
    assert resumed["steps_done"] == 3
    assert_same_weights(weights(tmp_path / "split"), weights(tmp_path / "whole"))
    steps = [json.loads(line)["step"] for line in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()
             if "train/loss" in line]
    assert steps == [1, 2, 3]  # records after the checkpoint are not duplicated on resume


def test_resume_with_another_plan_is_refused(tmp_path):
    """Refused from the checkpoint's config, before the run is built or its directory touched."""
    run(tmp_path, "repl.ratio=0.25", "trainer.max_steps=1")
    before = sorted((p, p.stat().st_mtime_ns) for p in tmp_path.rglob("*"))
    with pytest.raises(CheckpointError, match=r"other settings \(repl.ratio 0.25 -> 0.4\)"):
        run(tmp_path, "repl.ratio=0.4", "trainer.max_steps=2")
    assert sorted((p, p.stat().st_mtime_ns) for p in tmp_path.rglob("*")) == before


def test_a_disk_too_full_for_the_checkpoint_fails_the_run_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr("shutil.disk_usage", lambda _: shutil._ntuple_diskusage(10**12, 10**12 - 4096, 4096))
    with pytest.raises(CheckpointError, match="no room for checkpoint"):
        run(tmp_path, "trainer.max_steps=2")
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["steps_done"] == 2 and "no room" in summary["error"]
    assert not (tmp_path / "checkpoints").exists() or not any((tmp_path / "checkpoints").iterdir())


def test_summary_has_every_contract_field(tmp_path):
    baseline = run(tmp_path / "bp", "repl=none", "trainer.max_steps=1")
    tmp_path = tmp_path / "repl"
    summary = run(tmp_path, "trainer.epochs=1")
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["status"] == "completed" and on_disk["steps_done"] == summary["steps_done"] == 4
    expected = {"status", "task", "dataset", "model", "method", "plan", "params", "memory", "flops", "time",
                "throughput", "metrics", "primary", "epochs_done", "steps_done", "env"}
    assert expected <= on_disk.keys()
    assert on_disk["input_size"] == 16  # the side of the images the model is built for (no dataset.resize)
    params, bp = on_disk["params"], baseline["params"]
    assert params["replaced"] > 0 and params["fusion"] > 0
    assert params["trainable"] == bp["trainable"] - params["replaced"] + params["fusion"]
    assert on_disk["flops"]["train_step"] < baseline["flops"]["train_step"]  # the lite surrogate is cheaper
    assert on_disk["memory"]["peak_bytes"] > 0 and on_disk["memory"]["estimate_bytes"] > 0
    assert on_disk["flops"]["train_step"] > 0
    assert on_disk["time"]["train_s"] > 0 and on_disk["time"]["step_s"] > 0 and on_disk["time"]["epoch_s"] > 0
    assert on_disk["throughput"]["train_per_s"] > 0 and on_disk["throughput"]["unit"] == "samples"
    assert on_disk["primary"]["name"] == "top1" and 0 <= on_disk["primary"]["value"] <= 100
    assert on_disk["plan"]["blocks"] and on_disk["method"] == "repl"
    assert {"torch", "device", "git_sha", "git_dirty", "hostname"} <= on_disk["env"].keys()
    assert (tmp_path / "checkpoints" / "last.pt").exists()


def test_methods_train_and_report_their_own_numbers(tmp_path):
    bp = run(tmp_path / "bp", "repl=none", "trainer.max_steps=2")
    total = bp["params"]["total"]
    assert bp["method"] == "bp" and bp["params"]["trainable"] == total and bp["params"]["replaced"] == 0
    expected = {  # method: (total, trainable) given the summary's own replaced/fusion counts
        "repl.ratio=0.4": lambda p: (total - p["replaced"] + p["fusion"], total - p["replaced"] + p["fusion"]),
        "repl=drop": lambda p: (total - p["replaced"], total - p["replaced"]),
        "repl=freeze": lambda p: (total, total - p["replaced"]),
        "repl=stochastic_depth": lambda p: (total, total),
    }
    for override, formula in expected.items():
        summary = run(tmp_path / override, override, "repl.surrogate=lite", "trainer.max_steps=2")
        params = summary["params"]
        assert summary["status"] == "completed" and summary["steps_done"] == 2, override
        assert summary["method"] == (override.split("=")[1] if override.startswith("repl=") else "repl")
        assert (params["total"], params["trainable"]) == formula(params), override
        assert summary["flops"]["train_step"] > 0 and summary["primary"]["value"] is not None
        if override != "repl=stochastic_depth":
            assert params["replaced"] > 0, override
    assert run(tmp_path / "lite", "repl.ratio=0.4", "trainer.max_steps=1")["flops"]["train_step"] \
        < bp["flops"]["train_step"]


@pytest.mark.slow
def test_embedded_dataset_is_learned_far_above_chance(tmp_path):
    summary = run(tmp_path, "repl=none", "dataset.num_train=1024", "dataset.num_eval=512",
                  "dataset.image_size=32", "trainer.epochs=3", "trainer.log_every=10")
    assert summary["primary"]["value"] > 40.0  # chance is 10%
