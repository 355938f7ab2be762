"""`blend`: the two-term synthesis as one autograd node (repl/method/blend.py), against mul/addcmul."""
import pytest
import torch

from repl.method.blend import MIN_ELEMENTS, blend, blendable
from repl.method.config import ReplConfig
from repl.method.fusion import Fusion
from tests.method.test_fusion import Layer


def leaves(shape=(16, 8, 3, 3), dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    p, n = (torch.randn(shape, generator=g, dtype=dtype).requires_grad_() for _ in range(2))
    a, b = (torch.tensor(v, dtype=dtype, requires_grad=True) for v in (0.7, -0.3))
    return p, a, n, b


def test_forward_is_the_bits_of_mul_and_addcmul():
    p, a, n, b = leaves()
    with torch.no_grad():
        reference = torch.addcmul(p * a, n, b)
    assert torch.equal(blend(p, a, n, b), reference)


def test_gradients_are_those_of_mul_and_addcmul():
    """Neighbour gradients are the same op (g * coefficient), so the same bits; coefficient gradients are the same
    sum in a dot product's order: equal within float32 rounding of a 1152-term sum (|g|, |p| ~ 1, so the absolute
    error is at most ~1152 * 2^-24 * max|g p| ~ 1e-4, far below the sum's size ~ 30)."""
    p, a, n, b = leaves()
    g = torch.randn(p.shape, generator=torch.Generator().manual_seed(1))
    fused = torch.autograd.grad(blend(p, a, n, b), (p, a, n, b), g)
    plain = torch.autograd.grad(torch.addcmul(p * a, n, b), (p, a, n, b), g)
    assert torch.equal(fused[0], plain[0]) and torch.equal(fused[2], plain[2])
    torch.testing.assert_close(fused[1], plain[1], rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(fused[3], plain[3], rtol=1e-5, atol=1e-4)


def test_backward_and_double_backward_match_finite_differences():
    p, a, n, b = leaves((3, 2, 2), torch.float64)
    assert torch.autograd.gradcheck(blend, (p, a, n, b))
    assert torch.autograd.gradgradcheck(blend, (p, a, n, b))


def test_detached_neighbours_get_no_gradient_and_coefficients_still_do():
    p, a, n, b = leaves()
    w = blend(p.detach(), a, n.detach(), b)
    w.sum().backward()
    assert p.grad is None and n.grad is None
    assert a.grad is not None and b.grad is not None


def test_blendable_needs_same_shapes_scalar_coefficients_and_one_dtype():
    p, a, n, b = leaves()
    assert blendable(p, a, n, b)
    assert not blendable(p, a.reshape(1), n, b)
    assert not blendable(p, a, n[:8], b)
    assert not blendable(p, a, n.double(), b)


def synthesized_node(mode: str, prev: Layer, nxt: Layer, target: Layer, **cfg) -> str:
    fusion = Fusion(dict(target.named_parameters()), (prev, nxt), ReplConfig(method="repl", fusion=mode, **cfg))
    return type(fusion((prev, nxt))["conv1.weight"].grad_fn).__name__  # (node.name() raises for a custom Function on torch 2.11)


WIDE = 96  # a 96-channel 3x3 conv weight: 82,944 elements, above MIN_ELEMENTS
assert WIDE * WIDE * 9 >= MIN_ELEMENTS > 64 * 64 * 9


@pytest.mark.parametrize("mode", ["scalar", "tensor"])
def test_fusion_blends_two_same_shaped_neighbours_with_scalar_coefficients(mode):
    torch.manual_seed(0)
    assert "Blend" in synthesized_node(mode, Layer(WIDE, WIDE), Layer(WIDE, WIDE), Layer(WIDE, WIDE))


@pytest.mark.parametrize("mode,prev,width", [("channel", WIDE, WIDE), ("scalar", WIDE // 2, WIDE), ("scalar", 64, 64)])
def test_fusion_keeps_the_plain_graph_for_channel_coefficients_adapted_sources_and_small_tensors(mode, prev, width):
    """A per-channel coefficient's gradient is a per-channel sum, and an adapted source is a gather: neither is a
    dot product of two whole tensors. A tensor below MIN_ELEMENTS (a 64-channel 3x3 conv) is cheaper plain."""
    torch.manual_seed(0)
    assert "Blend" not in synthesized_node(mode, Layer(prev, prev), Layer(width, width), Layer(width, width))


def test_fusion_rebuild_into_storage_is_the_bits_of_the_blended_forward():
    """repl.recompute rebuilds a freed weight under no_grad with mul/addcmul_ into its storage: the same bits."""
    torch.manual_seed(0)
    prev, nxt, target = Layer(WIDE, WIDE), Layer(WIDE, WIDE), Layer(WIDE, WIDE)
    fusion = Fusion(dict(target.named_parameters()), (prev, nxt), ReplConfig(method="repl"))
    blended = fusion.weight((prev, nxt), "conv1.weight")
    into = torch.empty_like(blended)
    with torch.no_grad():
        fusion.weight((prev, nxt), "conv1.weight", out=into)
    assert "Blend" in type(blended.grad_fn).__name__ and torch.equal(into, blended.detach())
