"""The run builder and the Trainer's public surface: what a benchmark or study may call."""
from __future__ import annotations

import json
import signal

import pytest
import torch

from repl.build import build_run
from repl.config import compose, to_config
from repl.engine import distributed
from repl.engine.checkpoint import load_checkpoint
from repl.method.surrogates import Surrogate

TINY = ["trainer.device=cpu", "model=resnet20", "dataset.num_train=128", "dataset.num_eval=32", "dataset.batch_size=32",
        "dataset.image_size=16", "trainer.progress=false", "trainer.log_every=2", "trainer.timing_warmup=1"]


def build(tmp_path, *overrides: str, **hooks):
    cfg = to_config(compose([*TINY, *overrides]))
    return build_run(cfg, tmp_path, distributed.setup(cfg.trainer.device), **hooks)


def test_the_configured_method_is_applied_and_an_apply_hook_replaces_it(tmp_path):
    run = build(tmp_path / "a", "repl.ratio=0.25")
    assert run.plan.method == "repl" and run.model is run.trainer.model
    assert sum(isinstance(m, Surrogate) for m in run.model.modules()) == len(run.plan.blocks) > 0
    assert run.model.fc.out_features == 10  # the output size comes from the dataset
    seen = []

    def untouched(model, cfg):
        seen.append(cfg.repl.ratio)
        return build(tmp_path / "plan", "repl=none").plan

    run = build(tmp_path / "b", "repl.ratio=0.25", apply=untouched)
    assert seen == [0.25] and run.plan.method == "bp"
    assert not any(isinstance(m, Surrogate) for m in run.model.modules())


def test_run_steps_continues_the_loop_and_logs_each_window(tmp_path):
    trainer = build(tmp_path).trainer  # 4 steps per epoch
    trainer.run_steps(3)
    assert (trainer.step, trainer.step_in_epoch, trainer.epoch) == (3, 3, 0)
    trainer.run_steps(3)  # the epoch ends at step 4: evaluated, checkpointed, then 2 more steps
    assert (trainer.step, trainer.step_in_epoch, trainer.epoch) == (6, 2, 1)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "train/loss" in r] == [2, 3, 4, 6]  # log_every=2, the end of each call
    assert any("eval/top1" in r for r in records)
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["progress"]["step"] == 4


def test_a_stop_request_checkpoints_and_exits_with_the_signal(tmp_path):
    trainer = build(tmp_path).trainer
    trainer.run_steps(1)
    trainer.request_stop(signal.SIGUSR1)
    with pytest.raises(SystemExit) as exited:
        trainer.fit()
    assert exited.value.code == 128 + signal.SIGUSR1
    assert trainer.step == 1  # no step after the request
    state = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert state["progress"]["step"] == 1
    assert torch.equal(state["model"]["fc.weight"], trainer.model.fc.weight.detach())


@pytest.mark.parametrize("task, dataset", [("classification", "cifar10"), ("detection", "coco")])
def test_missing_data_is_found_before_the_model_is_built(tmp_path, monkeypatch, task, dataset):
    """A single run looks for its files first (as a sweep's pre-check does), not after the model (and mm's init)."""
    import repl.build
    from repl.errors import DataError

    def no_model(*args, **kwargs):
        raise AssertionError("the model was built before the data's files were looked for")

    monkeypatch.setattr(repl.build, "build_model", no_model)
    with pytest.raises(DataError, match=str(tmp_path / "none")):
        build(tmp_path, f"task={task}", f"dataset={dataset}", f"dataset.root={tmp_path / 'none'}")
