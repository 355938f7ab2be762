"""Fusion maths: tile maps, the fan-in rescale, a * A(prev) + b * A(next) per mode, gradients, parameter counts."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from repl.method.config import ReplConfig
from repl.method.fusion import Fusion, tile_gains, tile_index


class Layer(nn.Module):
    """A stand-in block: a 3x3 conv and a BatchNorm (the tensors a lite BasicBlock synthesizes)."""

    def __init__(self, cin: int, cout: int, kernel: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, kernel, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        nn.init.normal_(self.bn1.weight)
        nn.init.normal_(self.bn1.bias)


def tile_by_hand(source: torch.Tensor, target: torch.Size) -> torch.Tensor:
    """Slice a larger, repeat a smaller source along dims 0 and 1, then scale by sqrt(S_in / T_in)."""
    t = source
    for d in range(min(2, t.dim())):
        s, n = t.shape[d], target[d]
        t = t.narrow(d, 0, n) if s >= n else torch.cat([t] * math.ceil(n / s), d).narrow(d, 0, n)
    return t * math.sqrt(source.shape[1] / target[1]) if source.dim() > 1 else t


def test_tile_index_slices_larger_and_repeats_smaller():
    assert tile_index(4, 8).tolist() == [0, 1, 2, 3]
    assert tile_index(6, 3).tolist() == [0, 1, 2, 0, 1, 2]
    assert tile_index(5, 5).tolist() == [0, 1, 2, 3, 4]


def test_tile_gain_rescales_input_dim_only():
    gains = tile_gains(torch.Size([16, 32, 3, 3]), torch.Size([32, 16, 3, 3]))
    assert gains == {0: 1.0, 1: pytest.approx(math.sqrt(2))}
    assert tile_gains(torch.Size([16]), torch.Size([32])) == {0: 1.0}
    assert tile_gains(torch.Size([8, 8, 3, 3]), torch.Size([8, 8, 3, 3])) == {}


@pytest.mark.parametrize("source_in,target_in", [(32, 16), (16, 32), (64, 16)])
def test_tile_keeps_output_variance_when_fan_in_changes(source_in, target_in):
    """A kaiming-initialised conv adapted to another fan-in still gives outputs of the same variance."""
    torch.manual_seed(1)
    prev, nxt = Layer(source_in, 64), Layer(source_in, 64)
    fusion = Fusion({"conv1.weight": torch.empty(64, target_in, 3, 3)}, (prev, nxt), ReplConfig(init_a=1.0, init_b=0.0))
    for layer in (prev, nxt):
        nn.init.kaiming_normal_(layer.conv1.weight, nonlinearity="linear")
    w = fusion((prev, nxt))["conv1.weight"]
    x_src, x_tgt = torch.randn(64, source_in, 12, 12), torch.randn(64, target_in, 12, 12)
    var_src = F.conv2d(x_src, prev.conv1.weight).var().item()
    var_tgt = F.conv2d(x_tgt, w).var().item()
    assert var_tgt == pytest.approx(var_src, rel=0.15)  # without the rescale the ratio is target/source (x2 or x4)


@pytest.mark.parametrize("mode", ["scalar", "tensor", "channel"])
@pytest.mark.parametrize("adapt", ["tile", "learned"])
def test_synthesized_equals_a_prev_plus_b_next(mode, adapt):
    prev, nxt = Layer(16, 16), Layer(32, 32)  # a stage-boundary block: 16 -> 32 channels
    targets = {"conv1.weight": torch.empty(32, 16, 3, 3), "bn1.weight": torch.empty(32), "bn1.bias": torch.empty(32)}
    fusion = Fusion(targets, (prev, nxt), ReplConfig(fusion=mode, adapt=adapt, init_a=0.3, init_b=0.9))
    with torch.no_grad():  # move the coefficients off their init so a mix-up of a and b shows
        for coef in fusion.a.values():
            coef.mul_(torch.linspace(0.5, 1.5, coef.numel()).view_as(coef))
    weights = fusion((prev, nxt))
    for name, target in targets.items():
        a = fusion.a["block" if mode == "scalar" else name.replace(".", "_")]
        b = fusion.b["block" if mode == "scalar" else name.replace(".", "_")]
        p, n = prev.get_parameter(name), nxt.get_parameter(name)
        expected = a * tile_by_hand(p, target.shape) + b * tile_by_hand(n, target.shape)
        assert weights[name].shape == target.shape
        torch.testing.assert_close(weights[name], expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    "mode,adapt,count",
    [
        ("scalar", "tile", 2),
        ("tensor", "tile", 2 * 3),
        ("channel", "tile", 2 * (32 + 32 + 32)),
        # learned: a gain per mismatched channel dim of each source: prev (16->32 out) conv/bn w/bn b, next (32->16 in) conv
        ("scalar", "learned", 2 + 32 * 3 + 16),
        ("channel", "learned", 2 * 96 + 32 * 3 + 16),
    ],
)
def test_fusion_parameter_count(mode, adapt, count):
    prev, nxt = Layer(16, 16), Layer(32, 32)
    targets = {"conv1.weight": torch.empty(32, 16, 3, 3), "bn1.weight": torch.empty(32), "bn1.bias": torch.empty(32)}
    fusion = Fusion(targets, (prev, nxt), ReplConfig(fusion=mode, adapt=adapt))
    assert sum(p.numel() for p in fusion.parameters()) == count


def test_learned_adapt_starts_at_tile():
    prev, nxt = Layer(16, 16), Layer(32, 32)
    targets = {"conv1.weight": torch.empty(32, 16, 3, 3)}
    tile = Fusion(targets, (prev, nxt), ReplConfig(adapt="tile"))((prev, nxt))
    learned = Fusion(targets, (prev, nxt), ReplConfig(adapt="learned"))((prev, nxt))
    torch.testing.assert_close(learned, tile, rtol=1e-6, atol=0)


@pytest.mark.parametrize("neighbor_grad", [True, False])
def test_neighbor_grad_switch(neighbor_grad):
    prev, nxt = Layer(8, 8), Layer(8, 8)
    fusion = Fusion({"conv1.weight": torch.empty(8, 8, 3, 3)}, (prev, nxt), ReplConfig(neighbor_grad=neighbor_grad, init_a=0.25))
    cotangent = torch.randn(8, 8, 3, 3)
    (fusion((prev, nxt))["conv1.weight"] * cotangent).sum().backward()
    torch.testing.assert_close(fusion.a["block"].grad, (cotangent * prev.conv1.weight).sum())
    torch.testing.assert_close(fusion.b["block"].grad, (cotangent * nxt.conv1.weight).sum())
    if neighbor_grad:
        torch.testing.assert_close(prev.conv1.weight.grad, 0.25 * cotangent)
    else:
        assert prev.conv1.weight.grad is None and nxt.conv1.weight.grad is None


def test_only_adaptable_tensors_are_synthesized():
    """A tensor no neighbour has, or whose kernel differs, is left to the block (not in the fusion)."""
    prev, nxt = Layer(8, 8, kernel=1), Layer(8, 8, kernel=1)
    targets = {"conv1.weight": torch.empty(8, 8, 3, 3), "bn1.weight": torch.empty(8), "downsample.0.weight": torch.empty(8, 8, 1, 1)}
    fusion = Fusion(targets, (prev, nxt), ReplConfig(fusion="tensor"))
    assert set(fusion.sources) == {"bn1.weight"}
    assert set(fusion((prev, nxt))) == {"bn1.weight"}


def test_one_sided_source_uses_that_neighbour_only():
    prev, nxt = Layer(8, 8), nn.Module()
    fusion = Fusion({"bn1.bias": torch.empty(8)}, (prev, nxt), ReplConfig(fusion="tensor", init_a=0.7))
    assert fusion.sources == {"bn1.bias": ("prev",)} and len(fusion.b) == 0
    torch.testing.assert_close(fusion((prev, nxt))["bn1.bias"], 0.7 * prev.bn1.bias)
