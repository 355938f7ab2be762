"""Trainer switches: mixed precision, channels-last, EMA, activation checkpointing, compile, wandb."""
from __future__ import annotations

import json

import pytest
import torch

from tests.engine.test_training import assert_same_weights, run, weights


@pytest.mark.parametrize("precision", ["bf16", "16"])
def test_mixed_precision_trains(tmp_path, precision):
    summary = run(tmp_path, f"trainer.precision={precision}", "trainer.max_steps=2")
    losses = [json.loads(line)["train/loss"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()
              if "train/loss" in line]
    assert summary["status"] == "completed" and len(losses) == 2 and all(loss == loss for loss in losses)
    full = run(tmp_path / "fp32", "trainer.max_steps=1")
    # activations saved for backward are half-width under autocast: the estimate must see that
    assert summary["memory"]["estimate_breakdown"]["activations"] < full["memory"]["estimate_breakdown"]["activations"]
    if precision == "16":
        assert "scaler" in torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)


def first_loss(run_dir) -> float:
    """The loss of step 1, computed on the initial weights (log_every=1)."""
    line = next(line for line in (run_dir / "metrics.jsonl").read_text().splitlines() if "train/loss" in line)
    return json.loads(line)["train/loss"]


def test_channels_last_trains_in_nhwc_with_the_same_forward(tmp_path):
    run(tmp_path / "nhwc", "trainer.channels_last=true", "trainer.max_steps=2")
    run(tmp_path / "nchw", "trainer.max_steps=1")
    model = weights(tmp_path / "nhwc")
    convs = [k for k, v in model.items() if v.ndim == 4 and v.shape[-1] > 1]
    assert convs and all(model[k].is_contiguous(memory_format=torch.channels_last) for k in convs)
    # Same weights, same batch, another layout: the loss differs by float summation order only.
    # (Later steps are not compared: ReLU masks at tied pre-activations and the fusion coefficients'
    # cancelling gradients amplify rounding differences along the trajectory.)
    assert first_loss(tmp_path / "nhwc") == pytest.approx(first_loss(tmp_path / "nchw"), rel=1e-5)


def test_ema_is_checkpointed_and_resumes_exactly(tmp_path):
    run(tmp_path / "split", "trainer.ema_decay=0.9", "trainer.max_steps=2")
    run(tmp_path / "split", "trainer.ema_decay=0.9", "trainer.max_steps=3")
    run(tmp_path / "whole", "trainer.ema_decay=0.9", "trainer.max_steps=3")
    split = torch.load(tmp_path / "split" / "checkpoints" / "last.pt", weights_only=True)["ema"]
    whole = torch.load(tmp_path / "whole" / "checkpoints" / "last.pt", weights_only=True)["ema"]
    assert_same_weights(split, whole)
    model = weights(tmp_path / "whole")
    key = next(k for k in model if k.endswith("conv1.weight"))
    assert not torch.equal(whole[f"module.{key}"], model[key])  # the average lags the weights


def test_activation_checkpointing_keeps_the_maths_and_saves_memory(tmp_path):
    plain = run(tmp_path / "plain", "trainer.max_steps=1")
    ckpt = run(tmp_path / "ckpt", "trainer.checkpointing=true", "trainer.max_steps=1")
    a, b = weights(tmp_path / "plain"), weights(tmp_path / "ckpt")
    assert a.keys() == b.keys()  # checkpoint wrappers do not change state_dict keys
    for key in a:  # recomputation is the same computation; BatchNorm running stats are updated twice
        if "running_" not in key and "num_batches" not in key:
            assert torch.equal(a[key], b[key]), key
    assert ckpt["memory"]["estimate_breakdown"]["activations"] < plain["memory"]["estimate_breakdown"]["activations"]


def test_wandb_logger_writes_an_offline_run(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run(tmp_path, "logger=wandb", "trainer.max_steps=1")
    assert list((tmp_path / "wandb").glob("offline-run-*"))
    assert (tmp_path / "metrics.jsonl").exists()  # always written besides


@pytest.mark.slow
def test_compiled_training_has_the_eager_forward(tmp_path):
    compiled = run(tmp_path / "compiled", "trainer.compile=true", "trainer.max_steps=2")
    run(tmp_path / "eager", "trainer.max_steps=1")
    assert compiled["status"] == "completed" and compiled["steps_done"] == 2
    # inductor fuses and reorders float ops: equal up to float rounding on the same initial weights
    assert first_loss(tmp_path / "compiled") == pytest.approx(first_loss(tmp_path / "eager"), rel=1e-5)


def test_float16_on_a_cpu_is_warned_about_and_nothing_else_is():
    """fp16 autocast on a CPU without float16 arithmetic is emulated (6x slower here, a segmentation step >15 min)."""
    from repl.engine.trainer import precision_warning

    assert "trainer.precision=16 on a CPU" in precision_warning("16", "cpu")
    assert all(precision_warning(p, d) is None for p, d in [("16", "cuda"), ("bf16", "cpu"), ("32", "cpu")])
