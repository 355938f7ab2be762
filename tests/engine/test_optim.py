"""Learning-rate schedules and parameter groups."""
import math

import pytest
import torch
from torch import nn

from repl.engine.config import OptimConfig
from repl.engine.optim import build_optimizer, build_schedule, lr_factor, param_groups
from repl.errors import ConfigError


def test_cosine_warmup_shape():
    cfg = OptimConfig(schedule="cosine", warmup_epochs=1.0)
    total, warmup = 110, 10
    factors = [lr_factor(cfg, s, total, warmup) for s in range(total)]
    assert factors[:10] == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert factors[10] == pytest.approx(1.0)
    midpoint = 10 + 50
    assert factors[midpoint] == pytest.approx(0.5)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:]))  # monotone decay after warm-up
    assert factors[-1] == pytest.approx(0.5 * (1 + math.cos(math.pi * 99 / 100)))


def test_step_schedule_milestones():
    cfg = OptimConfig(schedule="step", milestones=[0.5, 0.75], gamma=0.1)
    total = 100
    assert lr_factor(cfg, 49, total, 0) == pytest.approx(1.0)
    assert lr_factor(cfg, 50, total, 0) == pytest.approx(0.1)
    assert lr_factor(cfg, 75, total, 0) == pytest.approx(0.01)


def test_schedule_applies_to_optimizer():
    model = nn.Linear(4, 2)
    cfg = OptimConfig(lr=0.2, schedule="step", milestones=[0.5], gamma=0.5)
    opt = build_optimizer(cfg, model, torch.device("cpu"))
    sched = build_schedule(cfg, opt, total_steps=4, steps_per_epoch=2)
    lrs = []
    for _ in range(4):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.2, 0.2, 0.1, 0.1])


def test_no_weight_decay_on_1d_tensors():
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    frozen = nn.Parameter(torch.zeros(3, 3), requires_grad=False)
    model.register_parameter("frozen", frozen)
    groups = param_groups(model, weight_decay=0.1, decay_1d=False)
    decayed = {id(p) for p in groups[0]["params"]}
    undecayed = {id(p) for p in groups[1]["params"]}
    assert decayed == {id(model[0].weight)}
    assert undecayed == {id(model[0].bias), id(model[1].weight), id(model[1].bias)}
    assert groups[1]["weight_decay"] == 0.0
    assert id(frozen) not in decayed | undecayed


@pytest.mark.parametrize("field,value", [("lr", -0.1), ("lr", 0.0), ("schedule", "linear"), ("name", "lamb")])
def test_bad_values_name_the_key(field, value):
    with pytest.raises(ConfigError, match=f"optim.{field}"):
        OptimConfig(**{field: value}).validate()


def test_poly_schedule_matches_mmsegmentations_polylr():
    """lr = (base - eta_min) * (1 - t/T) ** power + eta_min, written out at a few steps."""
    cfg = OptimConfig(schedule="poly", power=0.9, min_lr_ratio=0.01)
    total = 80
    for step in (0, 20, 40, 79):
        expected = (1 - 0.01) * (1 - step / total) ** 0.9 + 0.01
        assert lr_factor(cfg, step, total, 0) == pytest.approx(expected)
    assert lr_factor(cfg, 20, total, 0) > lr_factor(OptimConfig(schedule="poly", power=2.0), 20, total, 0)


@pytest.mark.parametrize("fusion", ["scalar", "tensor", "channel"])
@pytest.mark.parametrize("adapt", ["tile", "learned"])
@pytest.mark.parametrize("decay_1d", [False, True])
def test_no_fusion_parameter_is_decayed(fusion, adapt, decay_1d):
    """Channel coefficients ([C_out,1,1,1]) and learned gains have >= 2 dims; they are undecayed like scalars."""
    from repl import apply_replacement
    from repl.method.fusion import fusion_parameters
    from repl.models.cifar_resnet import CifarResNet

    model = CifarResNet(20)
    apply_replacement(model, ratio=0.25, boundary="allow", fusion=fusion, adapt=adapt)  # boundary blocks: adapters
    fused = {id(p) for p in fusion_parameters(model)}
    shapes = [p.ndim for p in fusion_parameters(model)]
    assert fused and (max(shapes) >= 2) == (fusion == "channel" or adapt == "learned")  # the case that used to decay
    groups = param_groups(model, weight_decay=0.1, decay_1d=decay_1d)
    decayed = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    assert not fused & decayed
    assert fused <= {id(p) for g in groups for p in g["params"]}  # still optimized
    assert {id(m.conv1.weight) for m in model.modules() if hasattr(m, "conv1") and m.conv1.weight is not None} <= decayed


def _repl_model():
    from repl import apply_replacement
    from repl.models.cifar_resnet import CifarResNet

    torch.manual_seed(0)
    model = CifarResNet(20)
    apply_replacement(model, ratio=0.25, fusion="channel")
    return model


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_fusion_parameters_get_their_own_scheduled_lr(name):
    from repl.method.fusion import fusion_parameters

    model = _repl_model()
    cfg = OptimConfig(name=name, lr=0.2, fusion_lr_scale=5.0, schedule="cosine", warmup_epochs=1.0)
    opt = build_optimizer(cfg, model, torch.device("cpu"))
    fusion_group = opt.param_groups[-1]
    assert {id(p) for p in fusion_group["params"]} == {id(p) for p in fusion_parameters(model)}
    assert fusion_group["weight_decay"] == 0.0 and fusion_group["lr"] == pytest.approx(1.0)
    assert all(id(p) not in {id(q) for q in fusion_group["params"]} for g in opt.param_groups[:-1] for p in g["params"])
    sched = build_schedule(cfg, opt, total_steps=10, steps_per_epoch=2)
    for step in range(10):  # warm-up then cosine: every group follows the same factor of its own initial lr
        factor = lr_factor(cfg, step, 10, 2)
        assert opt.param_groups[0]["lr"] == pytest.approx(0.2 * factor)
        assert fusion_group["lr"] == pytest.approx(1.0 * factor)
        opt.step()
        sched.step()


def test_the_fusion_group_survives_a_checkpoint():
    cfg = OptimConfig(lr=0.1, fusion_lr_scale=3.0, schedule="step", milestones=[0.5], gamma=0.1)
    model = _repl_model()
    opt = build_optimizer(cfg, model, torch.device("cpu"))
    sched = build_schedule(cfg, opt, total_steps=4, steps_per_epoch=2)
    for _ in range(3):
        sum(p.sum() for p in model.parameters()).backward()
        opt.step()
        opt.zero_grad()
        sched.step()
    saved = {"optimizer": opt.state_dict(), "schedule": sched.state_dict()}
    fresh = _repl_model()
    opt2 = build_optimizer(cfg, fresh, torch.device("cpu"))
    sched2 = build_schedule(cfg, opt2, total_steps=4, steps_per_epoch=2)
    opt2.load_state_dict(saved["optimizer"])
    sched2.load_state_dict(saved["schedule"])
    assert [g["lr"] for g in opt2.param_groups] == pytest.approx([g["lr"] for g in opt.param_groups])
    assert opt2.param_groups[-1]["lr"] == pytest.approx(0.3 * 0.1)  # past the milestone, still 3x the others
    assert opt2.param_groups[-1]["initial_lr"] == pytest.approx(0.3)
    momentum = opt2.state[opt2.param_groups[-1]["params"][0]]["momentum_buffer"]
    assert torch.equal(momentum, opt.state[opt.param_groups[-1]["params"][0]]["momentum_buffer"])


def test_fusion_lr_scale_must_be_positive():
    with pytest.raises(ConfigError, match=r"optim\.fusion_lr_scale"):
        OptimConfig(fusion_lr_scale=0.0).validate()
