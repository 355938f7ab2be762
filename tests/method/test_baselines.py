"""Baselines on the RepL plan: drop removes exactly the planned parameters, freeze keeps them fixed,
stochastic depth really skips dropped branches and scales them at test time."""
import copy

import pytest
import torch
import torchvision
from torch import nn

from repl.baselines import (
    EvalBatchNorm2d,
    ShortcutOnly,
    StochasticDepthBlock,
    apply_drop,
    apply_freeze,
    apply_stochastic_depth,
    survival_probabilities,
)
from repl import apply_replacement, bake
from repl.errors import ConfigError
from repl.families import discover_blocks, get_module
from repl.method.surrogates import Surrogate
from repl.method.config import ReplConfig
from repl.method.plan import make_plan
from repl.models.cifar_resnet import CifarResNet
from tests.method.models import models

MODELS = models("resnet20", "tv_resnet50", "timm_resnet18")


def numel(params) -> int:
    return sum(p.numel() for p in params)


def explicit(model, method, indices):
    blocks = discover_blocks(model)
    return make_plan(blocks, ReplConfig(method=method, select="explicit", blocks=indices)), blocks


def with_projection_and_identity(blocks):
    """One planned block with a projection shortcut and one without, both replaceable."""
    inner = [b for b in blocks if 0 < b.index < len(blocks) - 1]
    proj = next(b.index for b in inner if b.has_projection)
    ident = next(b.index for b in inner if not b.has_projection and abs(b.index - proj) > 1)
    return sorted([proj, ident])


@pytest.mark.parametrize("name", list(MODELS))
def test_drop_removes_exactly_the_planned_parameters(name):
    build, size = MODELS[name]
    model = build()
    before = model.state_dict()
    plan, blocks = explicit(model, "drop", with_projection_and_identity(discover_blocks(model)))
    planned = [get_module(model, path) for path in plan.paths]
    block_params = numel(p for m in planned for p in m.parameters())
    kept_params = numel(p for m in planned if m.downsample is not None for p in m.downsample.parameters())
    total = numel(model.parameters())

    removed = apply_drop(model, plan, blocks)

    assert removed == block_params - kept_params == total - numel(model.parameters())
    after = model.state_dict()
    for info in (b for b in blocks if b.index in plan.blocks):
        keys = {k for k in after if k.startswith(info.path + ".")}
        expected = {k for k in before if k.startswith(info.path + ".downsample.")} if info.has_projection else set()
        assert keys == expected and isinstance(get_module(model, info.path), ShortcutOnly)
    assert set(after) <= set(before)
    out = model(torch.randn(2, 3, size, size))
    assert out.shape == (2, 10)
    out.sum().backward()


def test_dropped_identity_block_passes_its_input_through_and_projection_keeps_shapes():
    model = CifarResNet(20).eval()
    plan, blocks = explicit(model, "drop", [2, 6])  # layer1.2 (identity), layer3.0 (projection)
    seen = {}
    for path in ("layer1.2", "layer3.0"):
        get_module(model, path).register_forward_hook(lambda m, i, o, p=path: seen.__setitem__(p, (i[0], o)))
    original = copy.deepcopy(model)
    apply_drop(model, plan, blocks)
    for path in ("layer1.2", "layer3.0"):
        get_module(model, path).register_forward_hook(lambda m, i, o, p=path: seen.__setitem__(p, (i[0], o)))
    with torch.no_grad():
        model(torch.randn(2, 3, 16, 16))
    x, y = seen["layer1.2"]
    assert y is x
    x, y = seen["layer3.0"]
    projection = original.layer3[0].downsample
    with torch.no_grad():
        torch.testing.assert_close(y, torch.relu(projection(x)))
    assert y.shape == (2, 64, 4, 4)


def test_freeze_keeps_planned_parameters_and_statistics_fixed_while_others_train():
    model = CifarResNet(20)
    plan, blocks = explicit(model, "freeze", [3, 6])
    frozen_paths = [blocks[i].path for i in plan.blocks]
    frozen_count = numel(p for path in frozen_paths for p in get_module(model, path).parameters())

    assert apply_freeze(model, plan, blocks) == frozen_count
    frozen = {k: v.clone() for k, v in model.state_dict().items() if any(k.startswith(p + ".") for p in frozen_paths)}
    trained = {k: v.clone() for k, v in model.named_parameters() if k not in frozen}
    assert {k for k in frozen if "running" not in k and "num_batches" not in k} and trained

    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    for _ in range(2):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(torch.randn(4, 3, 16, 16)), torch.randint(0, 10, (4,))).backward()
        optimizer.step()

    state = model.state_dict()
    for key, value in frozen.items():
        assert torch.equal(state[key], value), key
    assert all(not torch.equal(p, trained[k]) for k, p in model.named_parameters() if k in trained)
    for path in frozen_paths:
        norms = [m for m in get_module(model, path).modules() if isinstance(m, nn.BatchNorm2d)]
        assert norms and all(isinstance(m, EvalBatchNorm2d) and not m.training for m in norms)
        assert not any(p.requires_grad for p in get_module(model, path).parameters())
    assert model.layer1[0].bn1.training  # other norms follow model.train()


def test_freeze_keeps_state_dict_keys_and_values():
    model = torchvision.models.resnet50(num_classes=10)
    before = copy.deepcopy(model.state_dict())
    plan, blocks = explicit(model, "freeze", [3, 8])
    apply_freeze(model, plan, blocks)
    after = model.state_dict()
    assert list(after) == list(before)
    assert all(torch.equal(after[k], before[k]) for k in before)


def test_survival_probabilities_decay_linearly_to_the_last():
    p = survival_probabilities(4, 0.5)
    assert p == pytest.approx([0.875, 0.75, 0.625, 0.5])
    p = survival_probabilities(54, 0.2)
    steps = [a - b for a, b in zip(p, p[1:])]
    assert p[-1] == pytest.approx(0.2) and steps == pytest.approx([0.8 / 54] * 53)
    assert survival_probabilities(3, 1.0) == [1.0, 1.0, 1.0]


def stochastic_model(survival_last=0.5):
    model = CifarResNet(20)
    reference = copy.deepcopy(model)
    blocks = discover_blocks(model)
    plan = make_plan(blocks, ReplConfig(method="stochastic_depth", survival_last=survival_last))
    assert apply_stochastic_depth(model, plan, blocks) == 0
    return model, reference, blocks


def count_branch_calls(model, blocks):
    calls = {b.path: 0 for b in blocks}
    for b in blocks:
        get_module(model, b.path).conv1.register_forward_hook(lambda *_, p=b.path: calls.__setitem__(p, calls[p] + 1))
    return calls


def test_stochastic_depth_keeps_state_dict_keys_and_survives_at_the_planned_rate():
    model, reference, blocks = stochastic_model(0.5)
    assert list(model.state_dict()) == list(reference.state_dict())
    survival = survival_probabilities(len(blocks), 0.5)
    assert [get_module(model, b.path).survival for b in blocks] == pytest.approx(survival)
    calls = count_branch_calls(model, blocks)
    model.train()
    steps = 300
    with torch.no_grad():
        for _ in range(steps):
            model(torch.randn(1, 3, 8, 8))
    for b, p in zip(blocks, survival):
        sigma = (p * (1 - p) / steps) ** 0.5
        assert abs(calls[b.path] / steps - p) < 5 * sigma + 1e-9, (b.path, calls[b.path], p)
    assert sum(calls.values()) < steps * len(blocks)


def test_dropped_branch_is_not_computed_and_shortcut_still_applies():
    model, reference, blocks = stochastic_model()
    for b in blocks:
        get_module(model, b.path).survival = 0.0
    calls = count_branch_calls(model, blocks)
    x = torch.randn(2, 3, 16, 16)
    model.train()
    with torch.no_grad():
        out = model(x)
        stem = reference.relu(reference.bn1(reference.conv1(x)))
        h = stem
        for b in blocks:
            block = get_module(reference, b.path)
            h = torch.relu(block.downsample(h)) if b.has_projection else h
        expected = reference.fc(torch.flatten(reference.avgpool(h), 1))
    assert sum(calls.values()) == 0
    torch.testing.assert_close(out, expected)


def test_eval_scales_the_branch_by_its_survival_probability():
    model, reference, blocks = stochastic_model(0.5)
    for b in blocks:  # the branch ends in bn2: scaling its affine scales the branch
        bn = get_module(reference, b.path).bn2
        with torch.no_grad():
            bn.weight.mul_(get_module(model, b.path).survival)
            bn.bias.mul_(get_module(model, b.path).survival)
    x = torch.randn(2, 3, 16, 16)
    calls = count_branch_calls(model, blocks)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), reference.eval()(x))
    assert all(c == 1 for c in calls.values())


def test_stochastic_depth_with_survival_one_equals_the_plain_model_in_training():
    model, reference, _ = stochastic_model(1.0)
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(model.train()(x), reference.train()(x))


@pytest.mark.parametrize("name", ["tv_resnet50", "timm_resnet18"])
def test_stochastic_depth_wraps_every_block_of_other_families(name):
    build, size = MODELS[name]
    model = build()
    reference = copy.deepcopy(model)
    blocks = discover_blocks(model)
    apply_stochastic_depth(model, make_plan(blocks, ReplConfig(method="stochastic_depth", survival_last=1.0)), blocks)
    assert all(isinstance(get_module(model, b.path), StochasticDepthBlock) for b in blocks)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), reference.eval()(x))


def test_repl_with_stochastic_depth_wraps_the_trained_blocks_only():
    torch.manual_seed(0)
    model = CifarResNet(20)
    plan = apply_replacement(model, ReplConfig(ratio=0.25, survival_last=1.0, stochastic_depth=True))  # no skips: grads show
    kinds = [type(m) for m in (model.get_submodule(p) for p in ("layer1.0", "layer1.1", "layer3.2"))]
    assert plan.method == "repl" and plan.blocks == [1, 6]
    assert kinds == [StochasticDepthBlock, Surrogate, StochasticDepthBlock]
    assert plan.settings["stochastic_depth"] is True
    assert [isinstance(model.get_submodule(b.path), StochasticDepthBlock) for b in discover_blocks(CifarResNet(20))] == \
        [i not in plan.blocks for i in range(9)]
    x = torch.randn(4, 3, 16, 16)
    model.train()(x).sum().backward()  # the surrogate still reaches its wrapped neighbours' weights
    neighbour = model.get_submodule("layer1.0")
    assert neighbour.survival == 1.0 and neighbour.conv1.weight.grad is not None
    model.eval()
    with torch.no_grad():
        assert torch.allclose(bake(model)(x), model(x), atol=1e-5)
        assert torch.equal(copy.deepcopy(model)(x), model(x))


def test_stochastic_depth_composes_with_repl_only():
    with pytest.raises(ConfigError, match="repl.stochastic_depth"):
        apply_replacement(CifarResNet(20), ReplConfig(method="drop", stochastic_depth=True))


def test_stochastic_depth_at_ratio_zero_is_refused_not_dropped():
    """Ratio 0 is plain backprop; the switch would be recorded as on while nothing skips."""
    with pytest.raises(ConfigError, match=r"repl.stochastic_depth=true .* repl.ratio=0"):
        apply_replacement(CifarResNet(20), ReplConfig(ratio=0.0, stochastic_depth=True))
    apply_replacement(CifarResNet(20), ReplConfig(select="explicit", blocks=[2], ratio=0.0, stochastic_depth=True))
