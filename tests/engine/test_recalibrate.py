"""trainer.bn_recalibrate: BatchNorm running statistics re-estimated before evaluation, training untouched."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch import nn

from repl.config import compose, to_config
from repl.engine.recalibrate import batchnorm_modules, calibration_batches, recalibrate_batchnorm
from repl.errors import ConfigError
from tests.engine.test_training import run, weights

STATISTICS = ("running_mean", "running_var", "num_batches_tracked")


def counted(batches):
    """(a generator over `batches`, a list holding how many were pulled)."""
    pulled = [0]

    def gen():
        for b in batches:
            pulled[0] += 1
            yield b
    return gen(), pulled


def call(model, batch):
    return model(batch)


def test_statistics_are_the_average_over_the_batches_and_settings_come_back():
    # Per-channel shifts and scales far from the reset state (0, 1), different in every batch.
    gen = torch.Generator().manual_seed(1)
    scale, shift = torch.tensor([0.5, 2.0, 4.0]), torch.tensor([-3.0, 0.0, 5.0])
    batches = [(torch.randn(6, 3, 5, 4, generator=gen) * scale[:, None, None] * (1 + k) + shift[:, None, None] * k)
               for k in range(5)]
    model = nn.Sequential(nn.BatchNorm2d(3, momentum=0.3), nn.ReLU())
    model.eval()
    before_params = [p.clone() for p in model.parameters()]
    source, pulled = counted(batches)
    used = recalibrate_batchnorm(model, source, call, steps=4)
    norm = model[0]
    # By hand over the first 4 batches: PyTorch's cumulative average (momentum=None) gives the plain mean of the
    # batch means and of the unbiased batch variances (n = 6*5*4 values per channel).
    means = torch.stack([b.mean(dim=(0, 2, 3)) for b in batches[:4]])
    variances = torch.stack([b.permute(1, 0, 2, 3).reshape(3, -1).var(dim=1, unbiased=True) for b in batches[:4]])
    assert used == 4 and pulled[0] == 4  # no batch read past N
    # float32: each average is built incrementally (x_k - avg)/k over 4 terms of size <= ~60: a few ulp.
    torch.testing.assert_close(norm.running_mean, means.mean(0), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(norm.running_var, variances.mean(0), rtol=1e-5, atol=1e-5)
    assert int(norm.num_batches_tracked) == 4
    assert norm.momentum == 0.3 and not model.training and not norm.training
    assert all(torch.equal(a, b) for a, b in zip(before_params, model.parameters()))


def test_modes_rng_and_frozen_norms_are_left_as_they_were():
    class Frozen(nn.Module):
        """A norm its owner keeps in eval mode in train() (mmdet's norm_eval)."""

        def __init__(self) -> None:
            super().__init__()
            self.norm = nn.BatchNorm1d(2)

        def train(self, mode: bool = True):
            super().train(mode)
            self.norm.eval()
            return self

        def forward(self, x):
            return self.norm(x)

    frozen, live = Frozen(), nn.BatchNorm1d(2)
    frozen.norm.running_mean.fill_(7.0)
    model = nn.Sequential(frozen, live)
    model.train()
    live.eval()  # mixed modes: exactly these come back

    def drawing(m, batch):  # a forward that draws from every RNG stream, as mixup does
        random.random(), np.random.rand(), torch.rand(1)
        return m(batch)

    torch.manual_seed(5), random.seed(5), np.random.seed(5)
    expected = (random.random(), np.random.rand(), torch.rand(1))
    torch.manual_seed(5), random.seed(5), np.random.seed(5)
    batches = [torch.randn(8, 2) + 3.0 for _ in range(3)]
    torch.manual_seed(5)
    assert recalibrate_batchnorm(model, batches, drawing, steps=3) == 3
    assert (random.random(), np.random.rand(), torch.rand(1)) == expected
    assert torch.equal(frozen.norm.running_mean, torch.full((2,), 7.0))  # never reset
    # recalibrated on what reaches it: the frozen norm's eval output (x - 7) / sqrt(1 + eps), averaged over the batches
    reaching = torch.stack([((b - 7.0) / (1 + frozen.norm.eps) ** 0.5).mean(0) for b in batches]).mean(0)
    torch.testing.assert_close(live.running_mean, reaching, rtol=1e-5, atol=1e-5)
    assert model.training and frozen.training and not frozen.norm.training and not live.training


@pytest.mark.parametrize("model", [nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4)),
                                   nn.Sequential(nn.BatchNorm1d(4, track_running_stats=False))],
                         ids=["no_batchnorm", "batchnorm_without_running_stats"])
def test_a_model_without_running_statistics_is_left_alone_and_reads_no_data(model):
    def untouchable():
        raise AssertionError("a batch was read")
        yield  # noqa: unreachable - makes this a generator

    model.eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert recalibrate_batchnorm(model, untouchable(), call, steps=50) == 0
    assert not model.training
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_no_batch_at_all_keeps_the_old_statistics():
    norm = nn.BatchNorm1d(3)
    norm.running_mean.fill_(2.0)
    norm.num_batches_tracked.fill_(9)
    assert recalibrate_batchnorm(norm, iter(()), call, steps=5) == 0
    assert torch.equal(norm.running_mean, torch.full((3,), 2.0)) and int(norm.num_batches_tracked) == 9
    assert norm.momentum == 0.1


def test_a_negative_count_is_refused_in_one_line():
    with pytest.raises(ConfigError, match=r"^trainer\.bn_recalibrate=-1 must be") as err:
        to_config(compose(["trainer.bn_recalibrate=-1"]))
    assert "\n" not in str(err.value)


def split(state: dict) -> tuple:
    """(parameters and other state, BatchNorm statistics) of a checkpoint's model."""
    stats = {k: v for k, v in state.items() if k.endswith(STATISTICS)}
    return {k: v for k, v in state.items() if k not in stats}, stats


def printed(capsys, caplog) -> str:
    """What the run printed: directly, or through the `repl` logger when logging is configured (repl/engine/console.py)."""
    text = capsys.readouterr().out + caplog.text
    caplog.clear()
    return text


def test_recalibration_changes_the_statistics_and_not_the_training(tmp_path, capsys, caplog):
    # Two epochs of 4 steps, evaluated after each: the recalibration after epoch 1 sits inside the training.
    caplog.set_level("INFO", logger="repl")
    plain = run(tmp_path / "plain", "trainer.epochs=2", "trainer.bn_recalibrate=0")
    assert "training 8 steps" in (text := printed(capsys, caplog)) and "BatchNorm statistics" not in text
    recal = run(tmp_path / "recal", "trainer.epochs=2", "trainer.bn_recalibrate=3")
    assert printed(capsys, caplog).count("BatchNorm statistics recalibrated over 3 training batches") == 1  # once, at start
    params_plain, stats_plain = split(weights(tmp_path / "plain"))
    params_recal, stats_recal = split(weights(tmp_path / "recal"))
    assert params_plain.keys() == params_recal.keys()
    for key in params_plain:
        assert torch.equal(params_plain[key], params_recal[key]), key
    assert all(int(v) == 3 for k, v in stats_recal.items() if k.endswith("num_batches_tracked"))
    assert any(not torch.equal(stats_plain[k], stats_recal[k]) for k in stats_plain if k.endswith("running_mean"))
    assert plain["steps_done"] == recal["steps_done"] == 8
    assert "top1" in recal["metrics"]


def test_resume_with_recalibration_is_exact(tmp_path):
    # The split run recalibrates at its step-2 evaluation and again at step 3; the whole run only at step 3:
    # a recalibration resets the statistics, so both end with the same state, statistics included.
    run(tmp_path / "split", "trainer.max_steps=2", "trainer.bn_recalibrate=2", "trainer.ema_decay=0.9")
    run(tmp_path / "split", "trainer.max_steps=3", "trainer.bn_recalibrate=2", "trainer.ema_decay=0.9")
    run(tmp_path / "whole", "trainer.max_steps=3", "trainer.bn_recalibrate=2", "trainer.ema_decay=0.9")
    split_state = torch.load(tmp_path / "split" / "checkpoints" / "last.pt", weights_only=True)
    whole_state = torch.load(tmp_path / "whole" / "checkpoints" / "last.pt", weights_only=True)
    for part in ("model", "ema"):
        assert split_state[part].keys() == whole_state[part].keys()
        for key in split_state[part]:
            assert torch.equal(split_state[part][key], whole_state[part][key]), (part, key)
    # With EMA the evaluated (averaged) model is the one recalibrated: its statistics count the N batches.
    ema_counts = {int(v) for k, v in whole_state["ema"].items() if k.endswith("num_batches_tracked")}
    assert ema_counts == {2}


def test_batchnorm_modules_finds_every_kind():
    model = nn.Sequential(nn.BatchNorm1d(2), nn.BatchNorm2d(2), nn.SyncBatchNorm(2), nn.BatchNorm2d(2, track_running_stats=False),
                          nn.GroupNorm(1, 2))
    assert batchnorm_modules(model) == [model[0], model[1], model[2]]


def test_calibration_batches_run_on_into_the_next_epochs_and_end_with_the_data():
    class Epochs:
        """A stand-in data module: epoch e yields (e, 0), (e, 1), ...; epochs past `last` yield nothing."""

        def __init__(self, per_epoch: int, last: int) -> None:
            self.per_epoch, self.last = per_epoch, last

        def train_batches(self, epoch: int, start_step: int = 0):
            return iter([(epoch, s) for s in range(start_step, self.per_epoch)] if epoch <= self.last else [])

    assert list(calibration_batches(Epochs(2, last=9), 3))[:5] == [(3, 0), (3, 1), (4, 0), (4, 1), (5, 0)]
    assert list(calibration_batches(Epochs(2, last=4), 3)) == [(3, 0), (3, 1), (4, 0), (4, 1)]  # ends, no endless loop
