"""repl.init=lstsq: the coefficients are the least-squares fit of the replaced block's own tensors.

The expected values are solved here by hand (2x2 normal equations by Cramer's rule, from sums written
out), independent of Fusion.fit's batched pseudo-inverse.
"""
import copy

import pytest
import torch
from torch import nn

from repl import apply_replacement
from repl.errors import ConfigError
from repl.families import get_module
from repl.method.config import ReplConfig
from repl.method.fusion import Fusion
from repl.method.surrogates import Surrogate
from repl.models.cifar_resnet import CifarResNet


class Pair(nn.Module):
    """A stand-in block with a linear weight [out, in] and a 1-d scale, the two layouts fusion sees."""

    def __init__(self, weight: torch.Tensor, scale: torch.Tensor) -> None:
        super().__init__()
        self.fc = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
        self.norm = nn.Module()
        self.norm.weight = nn.Parameter(scale.clone())
        with torch.no_grad():
            self.fc.weight.copy_(weight)


def dot(x: torch.Tensor, y: torch.Tensor) -> float:
    return float((x.detach().double() * y.detach().double()).sum())


def value(t: torch.Tensor) -> float:
    return float(t.detach())


def solve2(pp: float, pn: float, nn_: float, pw: float, nw: float):
    """Cramer's rule for [pp pn; pn nn] [a b]^T = [pw nw]^T."""
    det = pp * nn_ - pn * pn
    return (pw * nn_ - pn * nw) / det, (pp * nw - pn * pw) / det


def _fixture(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    prev = Pair(torch.randn(3, 2, generator=g), torch.randn(3, generator=g))
    nxt = Pair(torch.randn(3, 2, generator=g), torch.randn(3, generator=g))
    own = Pair(torch.randn(3, 2, generator=g), torch.randn(3, generator=g))
    targets = {"fc.weight": own.fc.weight, "norm.weight": own.norm.weight}
    return prev, nxt, targets


def _fitted(mode: str, prev, nxt, targets) -> Fusion:
    fusion = Fusion(targets, (prev, nxt), ReplConfig(fusion=mode, init="lstsq"))
    fusion.fit(targets, (prev, nxt))
    return fusion


def test_scalar_fit_solves_the_normal_equations_summed_over_tensors():
    prev, nxt, targets = _fixture()
    fusion = _fitted("scalar", prev, nxt, targets)
    names = list(targets)
    P = {n: prev.get_parameter(n) for n in names}
    N = {n: nxt.get_parameter(n) for n in names}
    a, b = solve2(sum(dot(P[n], P[n]) for n in names), sum(dot(P[n], N[n]) for n in names),
                  sum(dot(N[n], N[n]) for n in names), sum(dot(P[n], targets[n]) for n in names),
                  sum(dot(N[n], targets[n]) for n in names))
    assert value(fusion.a["block"]) == pytest.approx(a, rel=1e-5)
    assert value(fusion.b["block"]) == pytest.approx(b, rel=1e-5)
    # the residual is orthogonal to both sources over the whole block: the gradient of the error is zero
    residual = {n: targets[n] - fusion.weight((prev, nxt), n) for n in names}
    scale = sum(dot(targets[n], targets[n]) for n in names)
    assert abs(sum(dot(residual[n], P[n]) for n in names)) < 1e-5 * scale
    assert abs(sum(dot(residual[n], N[n]) for n in names)) < 1e-5 * scale


def test_tensor_fit_is_per_tensor():
    prev, nxt, targets = _fixture(1)
    fusion = _fitted("tensor", prev, nxt, targets)
    for name, target in targets.items():
        p, n = prev.get_parameter(name), nxt.get_parameter(name)
        a, b = solve2(dot(p, p), dot(p, n), dot(n, n), dot(p, target), dot(n, target))
        key = name.replace(".", "_")
        assert value(fusion.a[key]) == pytest.approx(a, rel=1e-5)
        assert value(fusion.b[key]) == pytest.approx(b, rel=1e-5)
        residual = target - fusion.weight((prev, nxt), name)
        assert abs(dot(residual, p)) < 1e-5 * dot(target, target)
        assert abs(dot(residual, n)) < 1e-5 * dot(target, target)


def test_channel_fit_is_per_output_channel():
    prev, nxt, targets = _fixture(2)
    fusion = _fitted("channel", prev, nxt, targets)
    w, p, n = targets["fc.weight"], prev.fc.weight, nxt.fc.weight
    a, b = fusion.a["fc_weight"], fusion.b["fc_weight"]
    assert a.shape == (3, 1)
    for c in range(3):  # output channel c is row c of a Linear weight
        ea, eb = solve2(dot(p[c], p[c]), dot(p[c], n[c]), dot(n[c], n[c]), dot(p[c], w[c]), dot(n[c], w[c]))
        assert value(a[c]) == pytest.approx(ea, rel=1e-4)
        assert value(b[c]) == pytest.approx(eb, rel=1e-4)
    # a 1-d tensor has one element per channel: two unknowns, one equation; the minimum-norm exact fit
    s, sp, sn = targets["norm.weight"], prev.norm.weight, nxt.norm.weight
    expected_a = s * sp / (sp ** 2 + sn ** 2)
    torch.testing.assert_close(fusion.a["norm_weight"], expected_a.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fusion.weight((prev, nxt), "norm.weight"), s.detach(), rtol=1e-5, atol=1e-6)


def test_one_source_is_the_projection():
    """A tensor only the next block has: b = <N, W> / <N, N>, and no `a` is made for it."""
    g = torch.Generator().manual_seed(3)
    prev, nxt = nn.Module(), nn.Module()
    nxt.extra = nn.Parameter(torch.randn(4, 2, generator=g))
    target = torch.randn(4, 2, generator=g)
    fusion = Fusion({"extra": target}, (prev, nxt), ReplConfig(fusion="tensor", init="lstsq"))
    fusion.fit({"extra": target}, (prev, nxt))
    assert "extra" not in fusion.a
    assert value(fusion.b["extra"]) == pytest.approx(dot(nxt.extra, target) / dot(nxt.extra, nxt.extra), rel=1e-5)


@pytest.mark.parametrize("mode", ["scalar", "tensor", "channel"])
@pytest.mark.parametrize("case", ["collinear", "equal", "zero"])
def test_degenerate_sources_give_the_finite_minimum_norm_fit(mode, case):
    prev, nxt, targets = _fixture(4)
    with torch.no_grad():
        for name in targets:
            p, n = prev.get_parameter(name), nxt.get_parameter(name)
            if case == "zero":
                p.zero_()
                n.zero_()
            else:
                n.copy_(p * (1.0 if case == "equal" else -3.0))
    fusion = _fitted(mode, prev, nxt, targets)
    coefficients = [*fusion.a.values(), *fusion.b.values()]
    assert all(torch.isfinite(c).all() for c in coefficients)
    if case == "zero":
        assert all((c == 0).all() for c in coefficients)
    elif mode != "channel":  # one direction: the minimum-norm (a, b) with a*P + b*N the projection, a:b = 1:k
        k = 1.0 if case == "equal" else -3.0
        key = "block" if mode == "scalar" else "fc_weight"
        names = list(targets) if mode == "scalar" else ["fc.weight"]
        p = {n: prev.get_parameter(n) for n in names}
        coef = sum(dot(p[n], targets[n]) for n in names) / sum(dot(p[n], p[n]) for n in names)  # a + k b
        assert value(fusion.a[key]) == pytest.approx(coef / (1 + k * k), rel=1e-4)
        assert value(fusion.b[key]) == pytest.approx(k * coef / (1 + k * k), rel=1e-4)


def _error(model: nn.Module, original: nn.Module, plan) -> list:
    """Per replaced block, the squared Frobenius distance of its synthesized tensors to the block's own."""
    errors = []
    for path in plan.paths:
        surrogate = get_module(model, path)
        assert isinstance(surrogate, Surrogate)
        block = get_module(original, path)
        errors.append(sum(value(((w - block.get_parameter(name)) ** 2).sum())
                          for name, w in surrogate.synthesized().items()))
    return errors


@pytest.mark.parametrize("mode", ["scalar", "tensor", "channel"])
def test_lstsq_brings_a_resnet_surrogate_closer_to_the_block_than_half(mode):
    """boundary=allow so that stage-boundary blocks (tile adapters, a projection from one neighbour) are fitted too."""
    torch.manual_seed(0)
    original = CifarResNet(20)
    for m in original.modules():  # BatchNorm affine tensors away from 1 / 0, as in a trained network
        if isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.2)
            nn.init.normal_(m.bias, 0.0, 0.2)
    half, fitted = copy.deepcopy(original), copy.deepcopy(original)
    cfg = dict(ratio=0.4, boundary="allow", fusion=mode, surrogate="full")
    plan = apply_replacement(half, **cfg)
    assert plan.blocks == apply_replacement(fitted, init="lstsq", **cfg).blocks
    before, after = _error(half, original, plan), _error(fitted, original, plan)
    assert all(a <= b * (1 + 1e-6) for a, b in zip(after, before))  # (0.5, 0.5) is one of the candidates lstsq minimises over
    assert sum(after) < 0.9 * sum(before)


def test_init_a_is_refused_with_lstsq():
    with pytest.raises(ConfigError, match=r"repl\.init_a=0\.3 applies to repl\.init=half"):
        ReplConfig(init="lstsq", init_a=0.3).validate()
    with pytest.raises(ConfigError, match=r"repl\.init="):
        ReplConfig(init="ols").validate()
