"""The contract's fields are what the generic tools act on: layouts steer fusion, `synthesizable` limits
what a surrogate synthesizes, `lite` is the only source of the lite operator, and families register
in one visible list without importing optional frameworks."""
from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
import torch
from torch import nn

from repl.errors import ConfigError
from repl.families import BUILTIN, FAMILIES, CallConvention, TensorLayout, discover_blocks, get_module
from repl.method.config import ReplConfig
from repl.method.fusion import Fusion, compatible, tile_gains
from repl.method.surrogates import check_operator, make_surrogate
from repl.models.gpt import build_lm

TRANSPOSED = TensorLayout(out_dim=1, in_dim=0)


class Holder(nn.Module):
    """A neighbour holding one weight under `w`."""

    def __init__(self, t: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(t)


@pytest.mark.parametrize("fusion", ["scalar", "tensor", "channel"])
@pytest.mark.parametrize("adapt", ["tile", "learned"])
def test_a_transposed_layout_fuses_the_transpose_of_the_default(fusion, adapt):
    """[in, out] storage declared as such synthesizes exactly the transpose of the [out, in] synthesis."""
    torch.manual_seed(0)
    prev, nxt = torch.randn(24, 8), torch.randn(16, 12)  # [out, in] neighbours of different widths
    cfg = ReplConfig(fusion=fusion, adapt=adapt, init_a=0.3, init_b=0.9)
    default = Fusion({"w": torch.empty(32, 16)}, (Holder(prev), Holder(nxt)), cfg)
    stored = Fusion({"w": torch.empty(16, 32)}, (Holder(prev.T.contiguous()), Holder(nxt.T.contiguous())), cfg,
                    layouts={"w": TRANSPOSED})
    mine = dict(stored.named_parameters())
    with torch.no_grad():  # random coefficients and gains, the same per channel in both, laid out per layout
        for name, theirs in default.named_parameters():
            theirs.uniform_(0.5, 1.5)
            mine[name].copy_(theirs.reshape(mine[name].shape))
    expected = default((Holder(prev), Holder(nxt)))["w"]
    got = stored((Holder(prev.T.contiguous()), Holder(nxt.T.contiguous())))["w"]
    exact = adapt == "tile"  # learned gains multiply in dim order, so out/in swap their order: rounding only
    torch.testing.assert_close(got, expected.T, rtol=0 if exact else 1e-5, atol=0 if exact else 1e-6)
    if fusion == "channel":  # one coefficient per output channel, along the declared output dim
        assert stored.a["w"].shape == (1, 32) and default.a["w"].shape == (32, 1)


def test_layout_decides_which_dims_may_differ_and_which_is_rescaled():
    assert compatible(torch.Size([16, 8, 3, 3]), torch.Size([32, 4, 3, 3]))  # default: dims 0 and 1 are channels
    assert not compatible(torch.Size([16, 8, 3, 3]), torch.Size([32, 4, 3, 3]), TensorLayout(out_dim=0, in_dim=2))
    assert not compatible(torch.Size([8, 4, 3]), torch.Size([8, 4, 5]))  # a kernel dim differs
    assert compatible(torch.Size([8, 4]), torch.Size([16, 2]), TRANSPOSED)
    # fan-in is dim 0 of an [in, out] tensor: only it is rescaled, by sqrt(S/T)
    assert tile_gains(torch.Size([8, 4]), torch.Size([2, 16]), TRANSPOSED) == {0: 2.0, 1: 1.0}
    assert tile_gains(torch.Size([8, 4]), torch.Size([2, 16])) == {0: 1.0, 1: 0.5}
    with pytest.raises(ValueError):
        TensorLayout(out_dim=1, in_dim=1)


def gpt():
    torch.manual_seed(0)
    return build_lm(50, 8, False, layers=4, dim=16, heads=2, mlp_ratio=2.0, dropout=0.0)


def test_only_synthesizable_tensors_are_synthesized():
    model = gpt()
    info = discover_blocks(model)[1]
    kept = "attn.qkv.weight"
    info = dataclasses.replace(info, synthesizable=frozenset(n for n, _ in info.param_shapes if n != kept))
    blocks = [get_module(model, f"blocks.{i}") for i in range(3)]
    own = blocks[1].get_parameter(kept)
    surrogate = make_surrogate(blocks[1], info, (blocks[0], blocks[2]), ReplConfig(surrogate="full"))
    assert kept not in surrogate.fusion.sources and "attn.proj.weight" in surrogate.fusion.sources
    assert surrogate.body.get_parameter(kept) is own  # stays the block's own, trained as it is


def test_lite_comes_from_the_block_description_only():
    info = discover_blocks(gpt())[1]
    check_operator(info, ReplConfig(surrogate="lite"))
    with pytest.raises(ConfigError, match=r"repl.surrogate=lite has no operator for transformer blocks \(blocks.1\)"):
        check_operator(dataclasses.replace(info, lite=None), ReplConfig(surrogate="lite"))
    check_operator(dataclasses.replace(info, lite=None), ReplConfig(surrogate="full"))


def test_call_convention_of_a_tuple_returning_block():
    call = CallConvention(hidden_output=0, skipped_extras=lambda kwargs: (None,) if kwargs.get("use_cache") else ())
    h, other = torch.ones(2), torch.zeros(2)
    assert call.hidden((h, other)) is h
    replaced = call.with_hidden((h, other), other)
    assert replaced[0] is other and replaced[1] is other and isinstance(replaced, tuple)
    assert call.skipped(h, {}) == (h,) and call.skipped(h, {"use_cache": True}) == (h, None)
    assert CallConvention().skipped(h, {"use_cache": True}) is h


def test_builtin_families_are_registered_once_in_their_listed_order():
    assert [f.name for f in FAMILIES[:len(BUILTIN)]] == [
        "cifar_resnet", "torchvision_resnet", "timm_resnet", "timm_vit", "timm_convnext", "timm_swin", "gpt",
        "openmmlab_resnet", "hf_gpt2", "hf_llama"]


def test_the_families_import_no_optional_framework():
    """Detecting an mm model must not import mm (slow, and optional): registration has no side effects."""
    code = ("import sys, torch; from repl.families import discover_blocks\n"
            "try:\n    discover_blocks(torch.nn.Linear(2, 2))\nexcept Exception as e:\n    print(type(e).__name__)\n"
            "print(sorted(m for m in ('mmdet', 'mmseg', 'mmengine', 'timm', 'torchvision', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0] == "UnsupportedModelError"
    assert "mmdet" not in out[1] and "mmseg" not in out[1] and "mmengine" not in out[1]
    assert "transformers" not in out[1]  # the HF families answer no without it: no model of its classes exists


def test_every_builtin_lite_operator_pickles():
    """Baselines keep a block's BlockInfo, lite operator included, so torch.save(model) pickles it: a builder
    defined inside a function (a closure) cannot be. The copy builds what the original builds."""
    import importlib
    import pickle
    import pkgutil

    import repl.families as families
    from repl.families.contract import LiteOperator

    operators = {}
    for module_info in pkgutil.iter_modules(families.__path__):
        module = importlib.import_module(f"repl.families.{module_info.name}")
        operators.update({f"{module_info.name}.{name}": value for name, value in vars(module).items()
                          if isinstance(value, LiteOperator)})
    assert {"hf.LITE_GPT2", "hf.LITE_LLAMA", "resnet.LITE_BASIC", "transformer.LITE_TRANSFORMER"} <= operators.keys()
    for name, operator in operators.items():
        copy = pickle.loads(pickle.dumps(operator))
        assert copy.known == operator.known, name
        assert pickle.dumps(copy.build) == pickle.dumps(operator.build), name  # the same function (and arguments)
