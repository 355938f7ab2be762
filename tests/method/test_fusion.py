"""Fusion maths: tile maps, the fan-in rescale, a * A(prev) + b * A(next) per mode, gradients, parameter counts."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from repl.method.config import ReplConfig
from repl.method.fusion import ChannelAdapter, Fusion, tile, tile_gains, tile_index


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


@pytest.mark.parametrize("shape,dim,target", [((8, 4, 3, 3), 0, 16), ((8, 4, 3, 3), 0, 5), ((8, 4, 3, 3), 1, 2),
                                              ((8, 4, 3, 3), 1, 10), ((6, 4), 1, 4), ((7,), 0, 3)])
def test_tile_is_the_gather_of_tile_index(shape, dim, target):
    """Same values as index_select with tile_index, and the same gradient (the sum over the copies): the
    gradient is compared with a float64 reference, since a sum may add the copies in another order."""
    source = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    grad = torch.randn(*shape[:dim], target, *shape[dim + 1:], dtype=torch.float64)
    gathered = source.index_select(dim, tile_index(target, shape[dim]))
    tiled = tile(source, dim, target)
    assert torch.equal(tiled, gathered)
    expected, = torch.autograd.grad(gathered, source, grad)
    got, = torch.autograd.grad(tiled, source, grad)
    torch.testing.assert_close(got, expected, rtol=1e-14, atol=1e-14)
    if target <= shape[dim]:
        assert tiled.data_ptr() == source.data_ptr()  # a cut is a view of the source: no copy to save


@pytest.mark.parametrize("source,target", [((8, 4, 3, 3), (16, 4, 3, 3)), ((8, 4, 3, 3), (8, 2, 3, 3)),
                                           ((8, 4, 3, 3), (16, 2, 3, 3)), ((8, 4, 3, 3), (4, 12, 3, 3)), ((8,), (20,))])
@pytest.mark.parametrize("coefficient", ["scalar", "channel"])
def test_an_adapted_term_is_the_coefficient_times_the_adapted_tensor_and_keeps_no_copy_where_it_can(
        source, target, coefficient):
    """term(t, c) = c * A(t) up to float rounding (the tile factor is folded into c); where c does not span a dim
    the tile grows, c is applied before the repeat, so the product saves the source, not a weight-sized copy."""
    t = torch.randn(source, dtype=torch.float64, requires_grad=True)
    adapter = ChannelAdapter(torch.Size(source), torch.Size(target), learned=False, like=t)
    c_shape = () if coefficient == "scalar" else (target[0],) + (1,) * (len(target) - 1)
    c = torch.randn(c_shape, dtype=torch.float64, requires_grad=True)
    grad = torch.randn(target, dtype=torch.float64)
    expected = adapter(t) * c
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda x: saved.append(x) or x, lambda x: x):
        term = adapter.term(t, c)
    torch.testing.assert_close(term, expected, rtol=1e-14, atol=0)
    for got, want in zip(torch.autograd.grad(term, (t, c), grad), torch.autograd.grad(expected, (t, c), grad)):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)
    grows_out = target[0] > source[0]
    assert adapter.premultiplies(c_shape) == (coefficient == "scalar" or not grows_out)
    if adapter.premultiplies(c_shape):  # nothing saved but the source itself (or a view of it) and small tensors
        assert all(x.untyped_storage().data_ptr() == t.untyped_storage().data_ptr() or x.numel() <= max(target)
                   for x in saved)


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


# ----------------------------------------------------------------------------- parametrized neighbours

def _resnet20():
    from repl.models import CifarResNet

    torch.manual_seed(0)
    return CifarResNet(20)


@pytest.mark.parametrize("neighbour,side", [(0, "before"), (2, "after")])
@pytest.mark.parametrize("surrogate", ["lite", "full"])
def test_a_parametrization_added_to_a_neighbour_after_conversion_is_one_error_naming_the_tensor(neighbour, side,
                                                                                                 surrogate):
    from repl import apply_replacement
    from repl.errors import ReplError

    model = _resnet20()
    apply_replacement(model, select="explicit", blocks=[1], surrogate=surrogate)
    nn.utils.parametrizations.weight_norm(model.layer1[neighbour].conv1)
    x = torch.randn(2, 3, 32, 32)
    for mode in (model.train, model.eval):
        mode()
        with pytest.raises(ReplError, match=rf"^conv1\.weight of the block {side} layer1\.1 was parametrized .*"
                                            r"Apply parametrizations .* before apply_replacement"):
            model(x)


def test_a_neighbour_parameter_set_to_none_after_conversion_is_one_error():
    from repl import apply_replacement
    from repl.errors import UnsupportedModelError

    model = _resnet20()
    apply_replacement(model, select="explicit", blocks=[1])
    model.layer1[2].bn1.weight = None  # layer1.2 still runs (BatchNorm without scale); layer1.1's source is gone
    with pytest.raises(UnsupportedModelError, match=r"^bn1\.weight of the block after layer1\.1 is no longer a parameter"):
        model(torch.randn(2, 3, 32, 32))


@pytest.mark.parametrize("surrogate", ["lite", "full"])
def test_parametrizations_applied_before_conversion_are_synthesized_by_their_own_tensors(surrogate):
    """weight_norm on every conv, then conversion: the surrogate synthesizes each parametrized weight's
    magnitude and direction (`original0`, `original1`) from the neighbours', its conv weight is weight_norm of
    those, gradients reach the neighbours' originals, and the baked model computes the same."""
    from repl import apply_replacement, bake
    from repl.method.surrogates import Surrogate

    model = _resnet20()
    for module in list(model.modules()):
        if isinstance(module, nn.Conv2d):
            nn.utils.parametrizations.weight_norm(module)
    apply_replacement(model, select="explicit", blocks=[1], surrogate=surrogate)
    surrogate_module = model.layer1[1]
    assert isinstance(surrogate_module, Surrogate)
    assert {"conv1.parametrizations.weight.original0", "conv1.parametrizations.weight.original1"} <= set(
        surrogate_module.fusion.sources)
    x = torch.randn(2, 3, 32, 32)
    model.train()
    model(x).logsumexp(-1).mean().backward()
    assert model.layer1[0].conv1.parametrizations.weight.original1.grad is not None
    assert all(p.grad is not None for p in surrogate_module.fusion.parameters())
    model.eval()
    with torch.no_grad():
        synthesized = surrogate_module.synthesized()
        g, v = synthesized["conv1.parametrizations.weight.original0"], synthesized["conv1.parametrizations.weight.original1"]
        fusion = surrogate_module.fusion
        prev, nxt = model.layer1[0].conv1.parametrizations.weight, model.layer1[2].conv1.parametrizations.weight
        a, b = fusion.a["block"], fusion.b["block"]
        torch.testing.assert_close(v, a * prev.original1 + b * nxt.original1)
        torch.testing.assert_close(g, a * prev.original0 + b * nxt.original0)
        baked = bake(model).eval()
        torch.testing.assert_close(baked(x), model(x))
