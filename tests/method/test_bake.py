"""bake: plain modules with materialized weights, same eval outputs, input untouched, strict load into a plain model."""
import pytest
import torch
from torch import nn

from repl import apply_replacement, bake
from repl.families import get_module
from repl.models.lite import LiteBasicBlock, LiteBottleneck
from tests.method.models import models

MODELS = models("resnet32", "resnet110", "tv_resnet50", "timm_resnet18", "timm_resnet50")
# Synthesized weights are materialized bit for bit and the same kernels run, so outputs agree to the
# last bits; the tolerance only allows float32 reordering (relative 1e-5, ~100 ulp).
TOL = dict(rtol=1e-5, atol=1e-5)


def trained(name, surrogate, steps=2):
    """A model with RepL applied and a few SGD steps taken (weights, coefficients and BN statistics moved)."""
    build, size = MODELS[name]
    model = build()
    plan = apply_replacement(model, ratio=0.25, boundary="allow", surrogate=surrogate, fusion="channel", adapt="learned")
    x = torch.randn(2, 3, size, size)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(steps):
        opt.zero_grad()
        model(x).logsumexp(1).mean().backward()
        opt.step()
    return model.eval(), plan, x


def machinery(module: nn.Module):
    return [type(m).__module__ for m in module.modules() if type(m).__module__.startswith("repl.method")]


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("surrogate", ["lite", "full"])
def test_bake_reproduces_eval_outputs_without_the_machinery(name, surrogate):
    model, plan, x = trained(name, surrogate)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        expected = model(x)
        baked = bake(model)
        torch.testing.assert_close(baked(x), expected, **TOL)
    assert machinery(baked) == []
    assert machinery(model)  # the input keeps its surrogates and weights
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    lite_types = (LiteBasicBlock, LiteBottleneck)
    for path in plan.paths:
        assert isinstance(get_module(baked, path), lite_types) == (surrogate == "lite")
        for name_, buf in get_module(baked, path).named_buffers():
            assert torch.equal(buf, model.get_buffer(f"{path}.body.{name_}"))


@pytest.mark.parametrize("name", list(MODELS))
def test_baked_full_state_dict_loads_strictly_into_a_plain_model(name):
    model, _, x = trained(name, "full")
    baked = bake(model)
    plain = MODELS[name][0]().eval()
    plain.load_state_dict(baked.state_dict(), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(plain(x), model(x), **TOL)


def test_baked_weights_are_independent_of_the_source_model():
    model, plan, x = trained("resnet32", "lite")
    baked = bake(model)
    with torch.no_grad():
        reference = baked(x)
        for p in model.parameters():
            p.add_(0.1)
        assert torch.equal(baked(x), reference)
    assert all(p.requires_grad for p in baked.parameters())
