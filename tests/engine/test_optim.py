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
