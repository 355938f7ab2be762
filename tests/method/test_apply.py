"""apply_replacement: shapes, ratio 0 = plain backprop bit for bit, parameter accounting, which tensors get gradient."""
import copy
from typing import Dict

import pytest
import torch
from torch import nn

from repl import ReplConfig, apply_replacement, bake
from repl.errors import ConfigError, UnsupportedModelError
from repl.families import discover_blocks, get_module
from repl.method.surrogates import Surrogate
from tests.method.models import models

MODELS = models("resnet32", "resnet110", "tv_resnet50", "timm_resnet18")  # name: (builder, input size)
BOUNDARY = {"resnet32": [5, 10], "resnet110": [18, 36], "tv_resnet50": [3, 7], "timm_resnet18": [2, 4]}  # first block of a stage


def built(name):
    build, size = MODELS[name]
    torch.manual_seed(0)
    return build(), torch.randn(2, 3, size, size)


def trainable(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("surrogate", ["lite", "full"])
def test_output_shape_unchanged(name, surrogate):
    model, x = built(name)
    expected = model.eval()(x).shape
    plan = apply_replacement(model, ratio=0.25, surrogate=surrogate)
    assert plan.blocks and all(isinstance(get_module(model, p), Surrogate) for p in plan.paths)
    assert model(x).shape == expected


def sgd_steps(model, x, steps=3):
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(steps):
        opt.zero_grad()
        model(x).logsumexp(1).mean().backward()
        opt.step()
    return model


@pytest.mark.parametrize("name", ["resnet32", "timm_resnet18"])
@pytest.mark.parametrize("overrides", [{"ratio": 0.0}, {"method": "bp", "ratio": 0.4}])
def test_plain_backprop_is_bit_identical(name, overrides):
    plain, x = built(name)
    treated = copy.deepcopy(plain)
    plan = apply_replacement(treated, **overrides)
    assert plan.blocks == [] and plan.params_replaced == plan.params_fusion == 0
    sgd_steps(plain, x)
    sgd_steps(treated, x)
    assert list(plain.state_dict()) == list(treated.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), treated.state_dict().values()))
    assert torch.equal(plain(x), treated(x))


def expected_accounting(model, blocks, cfg: ReplConfig):
    """(replaced, fusion) from the block shapes, written out from docs/method.md's rules."""
    replaced = fusion = 0
    for i in blocks:
        prev, block, nxt = (dict(get_module(model, b.path).named_parameters()) for b in discover_blocks(model)[i - 1:i + 2])
        kept = {n: p for n, p in block.items() if n.startswith("downsample.")}
        replaced += sum(p.numel() for p in block.values()) - sum(p.numel() for p in kept.values())
        used = {n: p for n, p in block.items() if n not in kept}
        if cfg.surrogate == "lite":
            used = {n: p for n, p in used.items() if n.split(".")[0] in ("conv1", "bn1", "conv3", "bn3")}
        per_tensor = {"scalar": lambda p: 0, "tensor": lambda p: 2, "channel": lambda p: 2 * p.shape[0]}[cfg.fusion]
        fusion += 2 if cfg.fusion == "scalar" else sum(per_tensor(p) for p in used.values())
        if cfg.adapt == "learned":  # a gain vector per mismatched channel dim of each source
            fusion += sum(p.shape[d] for n, p in used.items() for src in (prev, nxt)
                          for d in range(min(2, p.dim())) if src[n].shape[d] != p.shape[d])
    return replaced, fusion


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("fusion", ["scalar", "tensor", "channel"])
@pytest.mark.parametrize("adapt", ["tile", "learned"])
@pytest.mark.parametrize("surrogate", ["lite", "full"])
def test_trainable_parameters_follow_the_formula(name, fusion, adapt, surrogate):
    model, _ = built(name)
    before = trainable(model)
    cfg = ReplConfig(select="explicit", blocks=BOUNDARY[name], fusion=fusion, adapt=adapt, surrogate=surrogate)
    replaced, fusion_params = expected_accounting(model, cfg.blocks, cfg)
    plan = apply_replacement(model, cfg)
    assert (plan.params_replaced, plan.params_fusion) == (replaced, fusion_params)
    assert trainable(model) == before - replaced + fusion_params


def grads(model, x) -> Dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    model(x).logsumexp(1).mean().backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("neighbor_grad", [True, False])
def test_gradients_reach_exactly_the_intended_tensors(name, neighbor_grad):
    """Reference: the baked model, where the surrogate's weights are independent leaves (the surrogate path detached)."""
    model, x = built(name)
    plan = apply_replacement(model, select="explicit", blocks=BOUNDARY[name], neighbor_grad=neighbor_grad, fusion="tensor")
    reference = bake(model)  # train mode kept: same batch statistics, same loss
    got, ref = grads(model, x), grads(reference, x)
    assert set(got) == set(dict(model.named_parameters()))  # every trainable tensor, fusion included, gets gradient
    extra = dict.fromkeys(ref, 0.0)
    for path in plan.paths:
        surrogate = get_module(model, path)
        assert got[f"{path}.fusion.a.conv1_weight"].abs() > 0 < got[f"{path}.fusion.b.conv1_weight"].abs()
        if neighbor_grad:  # chain rule through the fusion: d loss / d neighbour += J^T (d loss / d synthesized)
            weights = surrogate.synthesized()
            neighbours = {f"{p}.{n}": t for p, m in model.named_modules() for k in (0, 1)
                          if m is surrogate._neighbours[k] for n, t in m.named_parameters()}
            through = torch.autograd.grad(list(weights.values()), list(neighbours.values()),
                                          [ref[f"{path}.{n}"] for n in weights], allow_unused=True)
            for n, g in zip(neighbours, through):
                extra[n] = extra[n] + (0.0 if g is None else g)
    for n in got:
        if ".fusion." not in n:
            r = ref[n.replace(".body.", ".")]  # a surrogate's own tensors sit under its body
            torch.testing.assert_close(got[n], r + extra.get(n, 0.0), rtol=1e-4, atol=1e-6 * r.abs().max().item())
    if neighbor_grad:
        assert any(not isinstance(e, float) for e in extra.values())


@pytest.mark.parametrize("name", ["resnet32", "tv_resnet50"])
def test_works_on_a_model_already_converted(name):
    model, x = built(name)
    model = model.to(torch.float64)
    plan = apply_replacement(model, select="explicit", blocks=BOUNDARY[name], fusion="channel", adapt="learned")
    fusion = [p for path in plan.paths for p in get_module(model, path).fusion.parameters()]
    assert fusion and all(p.dtype == torch.float64 for p in fusion)
    assert model(x.double()).dtype == torch.float64


@pytest.mark.parametrize("method", ["drop", "freeze", "stochastic_depth"])
def test_baselines_are_dispatched_and_accounted(method):
    model, x = built("resnet32")
    before = trainable(model)
    plan = apply_replacement(model, method=method, ratio=0.25)
    assert plan.method == method and plan.params_fusion == 0
    assert trainable(model) == before - plan.params_replaced
    assert (plan.params_replaced > 0) == (method != "stochastic_depth")
    assert not any(isinstance(m, Surrogate) for m in model.modules())
    assert model(x).shape == (2, 10)


def test_user_mistakes_name_the_key():
    model, _ = built("resnet32")
    with pytest.raises(ConfigError, match=r"repl\.fusoin"):
        apply_replacement(model, fusoin="tensor")
    with pytest.raises(ConfigError, match=r"repl\.fusion"):
        apply_replacement(model, fusion="matrix")
    with pytest.raises(ConfigError, match=r"repl\.ratio"):
        apply_replacement(model, ratio=0.6)
    with pytest.raises(ConfigError, match=r"^repl\.ratio=2 must be a finite number in \[0, 1\)$"):
        apply_replacement(model, ratio=2)  # an int given for a float key is still described as the key's kind
    with pytest.raises(ConfigError, match="takes the torch.nn.Module to change in place, not a str"):
        apply_replacement("resnet32", ratio=0.25)
    apply_replacement(model)
    with pytest.raises(ConfigError, match="already applied"):
        apply_replacement(model)


def test_unsupported_model_is_refused():
    with pytest.raises(UnsupportedModelError, match="supported"):
        apply_replacement(nn.Sequential(nn.Linear(4, 4)))


@pytest.mark.parametrize("overrides", [{"method": "bp"}, {"ratio": 0.0}, {"method": "drop", "ratio": 0.0}])
def test_plain_backprop_needs_no_block_sequence(overrides):
    model = nn.Sequential(nn.Linear(4, 4))
    before = copy.deepcopy(model.state_dict())
    plan = apply_replacement(model, **overrides)
    assert plan.method == "bp" and plan.blocks == [] and plan.num_blocks == 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_ratio_zero_of_any_method_is_reported_as_backprop():
    model, _ = built("resnet32")
    plan = apply_replacement(model, ratio=0.0)
    assert plan.method == "bp" and plan.num_blocks == 15 and plan.family == "cifar_resnet"


@pytest.mark.parametrize("assign", [False, True])
def test_meta_device_init_then_load_gives_the_real_model(assign):
    """Build on meta, apply, to_empty, load a real state_dict: the outputs are the real model's.

    ResNet-50 at the default ratio replaces a stage-boundary block, so channel adapters (whose gather
    indices no state_dict carries) are exercised. Same ops on the same values on CPU: equal bit for bit.
    """
    from repl.method.fusion import ChannelAdapter

    build, size = MODELS["tv_resnet50"]
    torch.manual_seed(0)
    real = build()
    apply_replacement(real, ratio=0.25)
    assert any(isinstance(m, ChannelAdapter) for m in real.modules())
    with torch.device("meta"):
        lazy = build()
    apply_replacement(lazy, ratio=0.25)
    lazy.to_empty(device="cpu")
    lazy.load_state_dict(real.state_dict(), assign=assign)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        assert torch.equal(lazy.eval()(x), real.eval()(x))


@pytest.mark.parametrize("surrogate", ["lite", "full"])
def test_one_block_per_stage_synthesizes_the_projection_from_the_next_block_alone(surrogate):
    """In ResNet(BasicBlock, [1, 1, 1, 1]) every block past the first owns a projection shortcut, so a
    replaced block's `downsample` has a same-shaped tensor in its successor only: W = b * A(next)."""
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet.ResNet(torchvision.models.resnet.BasicBlock, [1, 1, 1, 1], num_classes=10)
    plan = apply_replacement(model, ratio=0.25, surrogate=surrogate, fusion="tensor", init_b=0.3)
    surrogate_module = get_module(model, plan.paths[0])
    assert plan.paths == ["layer2.0"]
    fusion = surrogate_module.fusion
    assert fusion.sources["downsample.0.weight"] == ("next",) and fusion.sources["downsample.1.weight"] == ("next",)
    assert "downsample_0_weight" not in fusion.a and "downsample_0_weight" in fusion.b
    nxt = get_module(model, "layer3.0").downsample[0].weight  # [256, 128, 1, 1] -> [128, 64, 1, 1]: sliced, x sqrt(128/64)
    # the adapter's op order, exact: the cut view times the coefficient with the tile factor folded in
    expected = nxt[:128, :64] * (fusion.b["downsample_0_weight"] * (128 / 64) ** 0.5)
    assert float(fusion.b["downsample_0_weight"]) == pytest.approx(0.3)
    assert torch.equal(surrogate_module.synthesized()["downsample.0.weight"], expected)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    assert nxt.grad is not None and fusion.b["downsample_0_weight"].grad is not None
