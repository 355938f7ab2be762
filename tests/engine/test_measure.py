"""Measurement: counts, byte estimates and FLOPs checked against values derived from shapes."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch import nn

from repl.engine import measure
from repl.engine.measure import env as env_module

F32 = 4  # bytes per float32


class PlainRef(nn.Module):
    """Uses another module's weight through a plain (unregistered) attribute."""

    def __init__(self, owner: nn.Linear) -> None:
        super().__init__()
        self.__dict__["shared"] = owner.weight
        self.bias = nn.Parameter(torch.zeros(owner.out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.shared.t() + self.bias


def _mlp(with_bn: bool = False) -> nn.Sequential:
    layers = [nn.Linear(8, 16)] + ([nn.BatchNorm1d(16)] if with_bn else [])
    return nn.Sequential(*layers, nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 3))


# ---- parameters -------------------------------------------------------------------------------

def test_shared_parameters_are_counted_once() -> None:
    emb, head = nn.Embedding(10, 4), nn.Linear(4, 10, bias=False)
    head.weight = emb.weight  # tied: registered twice
    first = nn.Linear(4, 4)
    alias = nn.Linear(4, 4)
    alias.weight = nn.Parameter(first.weight.data)  # distinct Parameter, same memory
    frozen = nn.Linear(4, 2)
    frozen.requires_grad_(False)
    model = nn.ModuleList([emb, head, first, PlainRef(first), alias, frozen])
    total = 10 * 4 + (16 + 4) + 4 + 4 + (8 + 2)  # emb, first, PlainRef bias, alias bias, frozen
    assert measure.count_parameters(model) == {"total": total, "trainable": total - 10}


def test_wrappers_are_unwrapped(tmp_path) -> None:
    model = _mlp()
    compiled = torch.compile(model)
    assert measure.unwrap_model(compiled) is model
    assert measure.count_parameters(compiled) == measure.count_parameters(model)
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    try:
        ddp = nn.parallel.DistributedDataParallel(model)
        assert measure.unwrap_model(ddp) is model
    finally:
        torch.distributed.destroy_process_group()


# ---- memory -----------------------------------------------------------------------------------

def test_activation_bytes_of_a_known_graph() -> None:
    b, d_in, d_hidden = 5, 8, 16
    model = nn.Sequential(nn.Linear(d_in, d_hidden), nn.ReLU(), nn.Linear(d_hidden, 3))
    x = torch.randn(b, d_in, requires_grad=True)  # so both weights are saved too
    with measure.SavedTensorMeter(model) as meter:
        model(x).sum().backward()
    # saved: x (first Linear), ReLU output == second Linear's input (one storage); weights excluded
    assert meter.bytes == (b * d_in + b * d_hidden) * F32


def test_views_of_one_storage_are_counted_once() -> None:
    y = torch.randn(6, 4, requires_grad=True) * 2  # a non-leaf with one storage of 24 floats
    with measure.SavedTensorMeter() as meter:
        (y[:2] * y[:2]).sum() + (y.view(-1) * y.t().reshape(-1)).sum()
    assert meter.bytes == 6 * 4 * F32 + 6 * 4 * F32  # y, plus the copy made by t().reshape


def test_a_storage_freed_before_the_meter_closes_is_not_counted() -> None:
    """What backward will find in memory: a saved storage resized to 0 (repl.recompute's weights) holds nothing."""
    a = torch.randn(64, requires_grad=True)
    counted = []
    for free in (False, True):
        with measure.SavedTensorMeter() as meter:
            w = torch.randn(64)
            out = a * w  # saves w (for a's gradient)
            if free:
                w.untyped_storage().resize_(0)
        counted.append(meter.bytes)
    assert out.requires_grad and counted == [64 * F32, 0]


def test_memory_estimate_breakdown() -> None:
    model = _mlp()
    model[0].requires_grad_(False)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1, momentum=0.9)
    x = torch.randn(4, 8)
    out = measure.memory_estimate(model, lambda: model(x).sum().backward(), opt)
    param_bytes = (8 * 16 + 16 + 16 * 3 + 3) * F32
    trainable_bytes = (16 * 3 + 3) * F32
    assert out["params"] == param_bytes
    assert out["grads"] == trainable_bytes
    assert out["optimizer"] == trainable_bytes
    # nothing before the last Linear needs a grad, so only its input (Dropout's output) is saved
    assert out["activations"] == 4 * 16 * F32
    assert out["total"] == sum(out[k] for k in ("activations", "params", "grads", "optimizer"))


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_sgd_state_bytes_before_and_after_first_step(momentum: float) -> None:
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=momentum)
    trainable_bytes = (8 * 16 + 16 + 16 * 3 + 3) * F32
    expected = trainable_bytes if momentum else 0
    assert measure.optimizer_state_bytes(opt) == expected  # derived before any step
    model(torch.randn(4, 8)).sum().backward()
    opt.step()
    assert measure.optimizer_state_bytes(opt) == expected  # measured from the real state


def test_adam_state_is_two_moments_plus_step_counters() -> None:
    model = _mlp()
    model[-1].bias.requires_grad_(False)  # never gets a grad: no state
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    trainable_bytes = (8 * 16 + 16 + 16 * 3) * F32
    expected = 2 * trainable_bytes + 3 * F32  # one float32 step counter per trainable tensor
    before = measure.optimizer_state_bytes(opt)
    assert not opt.state and all(p.device.type == "cpu" for p in model.parameters())
    model(torch.randn(4, 8)).sum().backward()
    opt.step()
    assert before == measure.optimizer_state_bytes(opt) == expected


def test_optimizer_that_cannot_step_on_meta_warns_and_counts_zero() -> None:
    opt = torch.optim.LBFGS(_mlp().parameters())  # step() needs a closure
    with pytest.warns(UserWarning, match="LBFGS"):
        assert measure.optimizer_state_bytes(opt) == 0


# ---- FLOPs ------------------------------------------------------------------------------------

def test_linear_train_flops_are_three_matmuls() -> None:
    b, d_in, d_out = 4, 8, 6
    layer = nn.Linear(d_in, d_out)
    x = torch.randn(b, d_in, requires_grad=True)
    assert measure.train_flops(lambda: layer(x).sum().backward()) == 3 * 2 * b * d_in * d_out


# ---- probe ------------------------------------------------------------------------------------

def _train(probe_at: int | None, micro_batches: int = 1) -> tuple[dict, torch.Tensor]:
    torch.manual_seed(0)
    model = _mlp(with_bn=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loss_fn = lambda m, batch: nn.functional.cross_entropy(m(batch[0]), batch[1])  # noqa: E731
    for step in range(3):
        for micro in range(micro_batches):
            batch = (torch.randn(4, 8), torch.randint(0, 3, (4,)))
            if step == probe_at and micro == micro_batches - 1:
                out = measure.probe_step(model, loss_fn, batch, opt)
                assert out["flops"] > 0 and out["memory"]["activations"] > 0
            loss_fn(model, batch).backward()
        opt.step()
        opt.zero_grad()
    return model.state_dict(), torch.random.get_rng_state()


@pytest.mark.parametrize("micro_batches", [1, 2])
def test_training_with_probe_is_bit_identical(micro_batches: int) -> None:
    ref_state, ref_rng = _train(None, micro_batches)
    for probe_at in (0, 2):  # before the first optimizer step (empty state) and later
        state, rng = _train(probe_at, micro_batches)
        assert state.keys() == ref_state.keys()
        assert all(torch.equal(state[k], ref_state[k]) for k in state)
        assert torch.equal(rng, ref_rng)


def test_probe_leaves_grads_buffers_and_rngs_untouched() -> None:
    model = _mlp(with_bn=True)
    model(torch.randn(4, 8)).sum().backward()
    grads = [p.grad for p in model.parameters()]
    grad_values = [g.clone() for g in grads]
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    batch = torch.randn(4, 8)
    py_state, np_state = random.getstate(), np.random.get_state()
    torch_state = torch.get_rng_state()
    out = measure.probe_step(model, lambda m, x: m(x).sum(), batch)
    assert all(p.grad is g for p, g in zip(model.parameters(), grads))
    assert all(torch.equal(g, v) for g, v in zip(grads, grad_values))
    assert all(torch.equal(v, buffers[k]) for k, v in model.named_buffers())
    assert random.getstate() == py_state and torch.equal(torch.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], np_state[1])
    assert out["memory"]["optimizer"] == 0 and out["memory"]["buffers"] == (16 + 16) * F32 + 8


def test_probe_matches_direct_measurements() -> None:
    model, x = _mlp(with_bn=True), torch.randn(4, 8)
    opt = torch.optim.Adam(model.parameters())
    out = measure.probe_step(model, lambda m, batch: m(batch).sum(), x, opt)
    step = lambda: model(x).sum().backward()  # noqa: E731
    assert out["flops"] == measure.train_flops(step)
    assert out["memory"] == measure.memory_estimate(model, step, opt)


# ---- timer ------------------------------------------------------------------------------------

class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_timer_excludes_warmup_and_paused_time() -> None:
    clock = FakeClock()
    timer = measure.StepTimer(device="cpu", warmup_steps=2, clock=clock)
    assert timer.epoch_elapsed() == 0.0
    timer.start_epoch()
    for duration in (5.0, 3.0, 0.1, 0.3, 0.2):  # two slow warm-up steps
        clock.now += duration
        timer.step(items=10)
        if duration == 0.3:
            with timer.paused():
                clock.now += 100.0  # e.g. evaluation, or a mid-epoch checkpoint, which stores the time so far
                assert timer.epoch_elapsed() == pytest.approx(8.4)
            assert timer.epoch_elapsed() == pytest.approx(8.4)
    assert timer.end_epoch() == pytest.approx(8.6)
    assert timer.epoch_elapsed() == 0.0  # between epochs: all of it is in the epoch times
    summary = timer.summary()
    assert summary["warmup_steps"] == 2 and summary["steps"] == 5
    assert summary["step_s"] == pytest.approx(0.2)
    assert summary["step_mean_s"] == pytest.approx(0.2)
    assert summary["throughput"] == pytest.approx(30 / 0.6)
    assert summary["train_s"] == summary["epoch_s"] == pytest.approx(8.6)


def test_timer_keeps_last_step_of_a_short_run() -> None:
    clock = FakeClock()
    timer = measure.StepTimer(device="cpu", warmup_steps=5, clock=clock)
    timer.start_epoch()
    for duration in (2.0, 1.0):
        clock.now += duration
        timer.step(items=4)
    timer.end_epoch()
    assert timer.summary()["warmup_steps"] == 1 and timer.summary()["step_s"] == 1.0


# ---- device and environment -------------------------------------------------------------------

def test_device_helpers_are_noops_on_cpu() -> None:
    measure.reset_peak_memory("cpu")
    assert measure.peak_memory_bytes("cpu") == 0
    assert measure.device_name("cpu") == "cpu"


def test_environment_info(monkeypatch, tmp_path) -> None:
    info = measure.environment_info("cpu")
    keys = {"torch", "device", "git_sha", "git_dirty", "hostname", "python", "cuda", "num_threads"}
    assert keys <= info.keys()
    assert info["device"] == "cpu" and isinstance(info["git_dirty"], bool)
    monkeypatch.setattr(env_module, "_PACKAGE_DIR", tmp_path)  # not a git checkout
    assert measure.git_revision() == ("unknown", False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no git executable at all
    monkeypatch.setattr(env_module, "_PACKAGE_DIR", env_module.Path(measure.__file__).parents[2])
    assert measure.git_revision() == ("unknown", False)
    assert env_module.git_patch() == ""


def test_an_untracked_module_is_dirty_and_the_patch_recreates_the_checkout(monkeypatch, tmp_path) -> None:
    import subprocess

    def git(*args, cwd=tmp_path / "repo"):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, check=True,
                       capture_output=True)
    package = tmp_path / "repo" / "pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("x = 1\n")
    (tmp_path / "repo" / ".gitignore").write_text("*.log\n")
    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "c")
    monkeypatch.setattr(env_module, "_PACKAGE_DIR", package)
    assert measure.git_revision()[1] is False and env_module.git_patch() == ""
    (package / "run.log").write_text("ignored\n")
    assert measure.git_revision()[1] is False  # ignored files are not part of the code
    (package / "new_module.py").write_text("y = 2\n")
    (package / "__init__.py").write_text("x = 3\n")
    assert measure.git_revision()[1] is True
    patch = env_module.git_patch()
    assert "# untracked: pkg/new_module.py" in patch and "run.log" not in patch
    git("clone", "-q", str(tmp_path / "repo"), str(tmp_path / "copy"), cwd=tmp_path)
    (tmp_path / "copy.patch").write_text(patch)
    git("apply", str(tmp_path / "copy.patch"), cwd=tmp_path / "copy")
    for name in ("__init__.py", "new_module.py"):
        assert (tmp_path / "copy" / "pkg" / name).read_text() == (package / name).read_text()


@pytest.mark.parametrize("groups", [1, 4, 16])
def test_conv_train_flops_are_three_forwards_whatever_the_groups(groups: int) -> None:
    """A conv's backward is two convolutions with the forward's multiply-adds (grad input, grad weight), so a
    training step on it counts exactly 3x the forward; torch's own backward rule ignores groups and counted a
    depthwise conv's backward `groups` times too high. The forward is 2 * N * C_out * H_out * W_out * C_in/g * k*k."""
    n, c, hw, k = 2, 16, 9, 3
    conv = nn.Conv2d(c, c, k, padding=1, groups=groups, bias=False)
    x = torch.randn(n, c, hw, hw, requires_grad=True)
    forward = 2 * n * c * hw * hw * (c // groups) * k * k
    assert measure.train_flops(lambda: conv(x)) == forward
    assert measure.train_flops(lambda: conv(x).sum().backward()) == 3 * forward
    x_frozen = x.detach()  # no input gradient asked for: the weight's only
    assert measure.train_flops(lambda: conv(x_frozen).sum().backward()) == 2 * forward
