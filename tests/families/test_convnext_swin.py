"""RepL on timm ConvNeXt and Swin through the Python API: discovery across stages, ratio 0, accounting by
formula, gradients, the lite sub-layers, bake, FLOPs, the baselines and exact resume.

Small models built from timm configs (no weights): ConvNeXt-atto widths (40, 80, 160, 320) with one or
two blocks per stage at 32 px, in both MLP variants (`conv_mlp`: channels-first norm and 1x1 convs, else
NHWC LayerNorm and Linear); a two-stage Swin (widths 32, 64, heads 2, 4, window 7) at 56 px.
"""
from __future__ import annotations

import copy

import pytest
import timm
import torch
from timm.models.convnext import ConvNeXtBlock
from timm.models.swin_transformer import SwinTransformerBlock
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from repl import ReplConfig, apply_replacement, bake
from repl.baselines import ShortcutOnly
from repl.engine.checkpoint import rng_state, save_checkpoint, set_rng_state
from repl.errors import UnsupportedModelError
from repl.families import discover_blocks, get_module
from repl.models.lite import LiteConvNeXtBlock, LiteTransformerBlock

CONVNEXT_WIDTHS = [40, 80, 80, 160, 160, 320]  # depths (1, 2, 2, 1)
SWIN_WIDTHS, SWIN_HEADS, WINDOW = [32, 32, 64, 64, 64, 64], [2, 2, 4, 4, 4, 4], 7  # depths (2, 4)
REPLACED = [1, 4]  # ConvNeXt: a stage's first block (narrower prev) and a stage's last (wider next); Swin: 1 and 4


def convnext(conv_mlp: bool = True, **kwargs) -> nn.Module:
    return timm.create_model("convnext_atto", pretrained=False, depths=(1, 2, 2, 1), num_classes=10,
                             conv_mlp=conv_mlp, **kwargs)


def swin(**kwargs) -> nn.Module:
    args = dict(embed_dim=32, depths=(2, 4), num_heads=(2, 4), img_size=56, window_size=WINDOW, num_classes=10,
                drop_path_rate=0.0)  # the swin_tiny config's 0.1 would make every training forward random
    return timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, **{**args, **kwargs})


BUILDERS = {"convnext": (convnext, 32), "convnext_linear_mlp": (lambda **kw: convnext(False, **kw), 32),
            "swin": (swin, 56)}
MODELS = list(BUILDERS)


def built(name: str, seed: int = 0, **kwargs):
    builder, size = BUILDERS[name]
    torch.manual_seed(seed)
    model = builder(**kwargs)
    with torch.no_grad():  # trained-like weights: timm's zero biases and 1e-6 layer scale would give exactly-zero
        for p in model.parameters():  # gradients to the coefficients that multiply them
            p.add_(0.1 * torch.randn_like(p))
    return model, torch.randn(2, 3, size, size)


def objective(out: torch.Tensor) -> torch.Tensor:
    return out.logsumexp(-1).mean()


def trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ----------------------------------------------------------------------------- discovery

def test_discovery_lists_every_block_of_every_stage_in_forward_order():
    for name, paths, widths, family in (
        ("convnext", ["stages.0.blocks.0", "stages.1.blocks.0", "stages.1.blocks.1", "stages.2.blocks.0",
                      "stages.2.blocks.1", "stages.3.blocks.0"], CONVNEXT_WIDTHS, "timm_convnext"),
        ("swin", [f"layers.{k}.blocks.{i}" for k, depth in enumerate((2, 4)) for i in range(depth)], SWIN_WIDTHS,
         "timm_swin"),
    ):
        model, _ = built(name)
        blocks = discover_blocks(model)
        assert [b.path for b in blocks] == paths and [b.index for b in blocks] == list(range(len(paths)))
        assert {b.family for b in blocks} == {family} and all(b.stride == 1 for b in blocks)
        assert [b.in_channels for b in blocks] == [b.out_channels for b in blocks] == widths
        # stage boundaries: where a block's neighbour has other shapes (boundary=avoid steers clear of them)
        changes = [i for i in range(1, len(blocks)) if blocks[i].param_shapes != blocks[i - 1].param_shapes]
        assert changes == [i for i in range(1, len(widths)) if widths[i] != widths[i - 1]]


def test_swin_keeps_its_position_table_and_convnext_synthesizes_everything():
    convnext_block = discover_blocks(built("convnext")[0])[2]
    assert all(convnext_block.may_synthesize(n) for n, _ in convnext_block.param_shapes)
    assert dict(convnext_block.param_shapes)["conv_dw.weight"] == (80, 1, 7, 7)
    swin_block = discover_blocks(built("swin")[0])[2]
    kept = [n for n, _ in swin_block.param_shapes if not swin_block.may_synthesize(n)]
    assert kept == ["attn.relative_position_bias_table"]


def test_a_timm_model_of_another_family_is_refused_naming_it_and_the_supported_ones():
    model = timm.create_model("efficientnet_b0", pretrained=False, num_classes=10)
    with pytest.raises(UnsupportedModelError) as err:
        apply_replacement(model, ratio=0.25)
    message = str(err.value)
    assert "EfficientNet" in message and "timm_convnext" in message and "timm_swin" in message
    assert apply_replacement(model, ratio=0.0).method == "bp"  # plain backprop trains any model


# ----------------------------------------------------------------------------- ratio 0

def sgd_steps(model: nn.Module, x: torch.Tensor, steps: int = 2) -> nn.Module:
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(steps):
        opt.zero_grad()
        objective(model(x)).backward()
        opt.step()
    return model


@pytest.mark.parametrize("name", ["convnext", "swin"])
def test_ratio_zero_is_bit_identical_to_no_method(name):
    plain, x = built(name)
    treated = copy.deepcopy(plain)
    plan = apply_replacement(treated, ReplConfig(ratio=0.0))
    assert plan.method == "bp" and plan.blocks == []
    assert [type(m) for m in treated.modules()] == [type(m) for m in plain.modules()]
    sgd_steps(plain, x)
    sgd_steps(treated, x)
    assert list(plain.state_dict()) == list(treated.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), treated.state_dict().values()))
    with torch.no_grad():
        assert torch.equal(plain.eval()(x), treated.eval()(x))


# ----------------------------------------------------------------------------- accounting by formula

def convnext_tensors(c: int, surrogate: str):
    """{name: (elements, output channels)} of the tensors a ConvNeXt block of width C synthesizes."""
    lite = {"norm.weight": (c, c), "norm.bias": (c, c), "mlp.fc1.weight": (4 * c * c, 4 * c),
            "mlp.fc1.bias": (4 * c, 4 * c), "mlp.fc2.weight": (4 * c * c, c), "mlp.fc2.bias": (c, c), "gamma": (c, c)}
    return lite if surrogate == "lite" else {**lite, "conv_dw.weight": (49 * c, c), "conv_dw.bias": (c, c)}


def swin_tensors(c: int, surrogate: str):
    lite = {"norm2.weight": (c, c), "norm2.bias": (c, c), "mlp.fc1.weight": (4 * c * c, 4 * c),
            "mlp.fc1.bias": (4 * c, 4 * c), "mlp.fc2.weight": (4 * c * c, c), "mlp.fc2.bias": (c, c)}
    if surrogate == "lite":
        return lite
    return {**lite, "norm1.weight": (c, c), "norm1.bias": (c, c), "attn.qkv.weight": (3 * c * c, 3 * c),
            "attn.qkv.bias": (3 * c, 3 * c), "attn.proj.weight": (c * c, c), "attn.proj.bias": (c, c)}


def convnext_block(c: int) -> int:
    """dw conv 49C + C, norm 2C, fc1 4C^2 + 4C, fc2 4C^2 + C, gamma C (1x1 convs or Linear: same counts)."""
    return 8 * c * c + 58 * c


def swin_block(c: int, heads: int) -> int:
    """norm1 2C, qkv 3C^2 + 3C, proj C^2 + C, position table (2W-1)^2 heads, norm2 2C, fc1 4C^2 + 4C, fc2 4C^2 + C."""
    return 12 * c * c + 13 * c + (2 * WINDOW - 1) ** 2 * heads


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("surrogate", ["lite", "full"])
@pytest.mark.parametrize("fusion", ["scalar", "tensor", "channel"])
def test_trainable_parameters_follow_the_formula(name, surrogate, fusion):
    model, _ = built(name)
    before = trainable(model)
    removed = fused = 0
    for i in REPLACED:
        if name == "swin":
            c, block = SWIN_WIDTHS[i], swin_block(SWIN_WIDTHS[i], SWIN_HEADS[i])
            tensors = swin_tensors(c, surrogate)
            # lite drops the attention sub-layer (table included); full keeps the table as the block's own
            removed += block if surrogate == "lite" else block - (2 * WINDOW - 1) ** 2 * SWIN_HEADS[i]
        else:
            c = CONVNEXT_WIDTHS[i]
            tensors = convnext_tensors(c, surrogate)
            removed += convnext_block(c)  # lite drops conv_dw and synthesizes the rest; full synthesizes all
        fused += {"scalar": 2, "tensor": 2 * len(tensors), "channel": 2 * sum(o for _, o in tensors.values())}[fusion]
    plan = apply_replacement(model, select="explicit", blocks=REPLACED, surrogate=surrogate, fusion=fusion)
    assert (plan.params_replaced, plan.params_fusion) == (removed, fused)
    assert trainable(model) == before - removed + fused


# ----------------------------------------------------------------------------- gradients

@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("surrogate", ["lite", "full"])
@pytest.mark.parametrize("fusion", ["scalar", "channel"])
def test_gradients_reach_every_trainable_tensor(name, surrogate, fusion):
    model, x = built(name)
    plan = apply_replacement(model, select="explicit", blocks=REPLACED, surrogate=surrogate, fusion=fusion)
    objective(model(x)).backward()
    params = dict(model.named_parameters())
    assert any(".fusion." in n for n in params)
    missing = [n for n, p in params.items() if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)]
    assert missing == []
    body = get_module(model, plan.paths[0]).body
    spatial = "conv_dw" if name.startswith("convnext") else "attn"
    assert hasattr(body, spatial) == (surrogate == "full")


# ----------------------------------------------------------------------------- the lite sub-layers

def without_spatial_mixer(block: nn.Module) -> nn.Module:
    """The original block with its spatial mixer (ConvNeXt's conv_dw, Swin's attention sub-layer) made a no-op."""
    block = copy.deepcopy(block)
    if isinstance(block, ConvNeXtBlock):
        block.conv_dw = nn.Identity()
    else:  # x + drop_path1(0) = x exactly; drop_path1 is made the identity so it draws no random numbers
        block.__dict__["_attn"] = torch.zeros_like  # an instance attribute shadows the class's window attention
        block.drop_path1 = nn.Identity()
    return block


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("training", [False, True])
def test_lite_is_the_block_minus_its_spatial_mixer_bit_for_bit(name, training):
    """Same modules, same ops in the same order as the block's own forward (drop-path and dropout included)."""
    model, _ = built(name, drop_path_rate=0.2, proj_drop_rate=0.1) if name == "swin" else built(name, drop_path_rate=0.2)
    info = discover_blocks(model)[4]
    block = get_module(model, info.path)
    reference = without_spatial_mixer(block).train(training)
    lite = info.lite.build(copy.deepcopy(block), info).train(training)
    assert isinstance(lite, LiteTransformerBlock if name == "swin" else LiteConvNeXtBlock)
    h = torch.randn(2, 2, 2, info.in_channels) if name == "swin" else torch.randn(2, info.in_channels, 2, 2)
    for x in (h, h.transpose(1, 2) if name == "swin" else h.transpose(2, 3)):  # contiguous and not (H, W swapped)
        torch.manual_seed(1)
        expected = reference(x)
        torch.manual_seed(1)
        assert torch.equal(lite(x), expected)


# ----------------------------------------------------------------------------- bake

@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("surrogate", ["lite", "full"])
def test_bake_reproduces_eval_outputs(name, surrogate):
    model, x = built(name)
    plan = apply_replacement(model, select="explicit", blocks=REPLACED, surrogate=surrogate, fusion="channel")
    sgd_steps(model, x)
    model.eval()
    with torch.no_grad():
        baked = bake(model)
        # The baked modules run the same kernels on weights equal to the synthesized ones: at most float32
        # reordering, a few ulps (1.2e-7 relative each) over a few dozen ops; 1e-5 leaves room, a wrong
        # weight or a missing sub-layer is off by orders more.
        torch.testing.assert_close(baked(x), model(x), rtol=1e-5, atol=1e-5)
    assert not any(type(m).__module__.startswith("repl.method") for m in baked.modules())
    lite_type = LiteTransformerBlock if name == "swin" else LiteConvNeXtBlock
    full_type = SwinTransformerBlock if name == "swin" else ConvNeXtBlock
    for path in plan.paths:
        assert type(get_module(baked, path)) is (lite_type if surrogate == "lite" else full_type)
    if surrogate == "full":  # a plain model of the same architecture loads the baked weights strictly
        plain, _ = built(name)
        plain.load_state_dict(baked.state_dict(), strict=True)


# ----------------------------------------------------------------------------- FLOPs

def forward_flops(model: nn.Module, x: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.eval()(x)
    return counter.get_total_flops()


@pytest.mark.parametrize("name", ["convnext", "swin"])
def test_lite_costs_fewer_flops_than_full_by_the_spatial_mixer(name):
    """FlopCounterMode counts matmuls and convs at 2 FLOPs per multiply-add; lite saves exactly the mixer's."""
    lite_model, x = built(name)
    full_model = copy.deepcopy(lite_model)
    apply_replacement(lite_model, select="explicit", blocks=REPLACED, surrogate="lite")
    apply_replacement(full_model, select="explicit", blocks=REPLACED, surrogate="full")
    batch = x.shape[0]
    if name == "swin":  # stage 0 at 14x14, stage 1 at 7x7 (patch 4, merging /2); N tokens, C channels:
        tokens = [14 * 14] * 2 + [7 * 7] * 4  # qkv 6NC^2 + proj 2NC^2 + scores and weighted sum 2 * 2N*W^2*C
        mixer = [8 * n * c * c + 4 * n * WINDOW ** 2 * c for n, c in zip(tokens, SWIN_WIDTHS)]
    else:  # stem /4 then /2 per stage: 8, 4, 4, 2, 2, 1 px; depthwise 7x7: 2 * 49 per output element
        sides = [8, 4, 4, 2, 2, 1]
        mixer = [2 * 49 * c * s * s for c, s in zip(CONVNEXT_WIDTHS, sides)]
    lite, full = forward_flops(lite_model, x), forward_flops(full_model, x)
    assert lite < full and full - lite == batch * sum(mixer[i] for i in REPLACED)


# ----------------------------------------------------------------------------- baselines

@pytest.mark.parametrize("name", ["convnext", "swin"])
@pytest.mark.parametrize("method", ["drop", "freeze", "stochastic_depth", "layerdrop"])
def test_baselines_apply_and_train(name, method):
    model, x = built(name)
    paths = [b.path for b in discover_blocks(model)]
    before = copy.deepcopy(model.state_dict())
    if method in ("drop", "freeze"):
        plan = apply_replacement(model, method=method, select="explicit", blocks=REPLACED)
    else:
        plan = apply_replacement(model, method=method, **({"ratio": 0.5} if method == "layerdrop" else {}))
    assert plan.paths == ([paths[i] for i in REPLACED] if method in ("drop", "freeze") else paths)
    model.train()
    objective(model(x)).backward()
    grads = {n for n, p in model.named_parameters() if p.grad is not None}
    assert grads
    if method == "drop":
        for path in plan.paths:
            block = get_module(model, path)
            h = torch.randn(2, 4, 4, 8)
            assert isinstance(block, ShortcutOnly) and torch.equal(block(h), h)  # a dropped x + f(x) block: identity
    elif method == "freeze":
        frozen = {f"{p}.{n}" for p in plan.paths for n, _ in get_module(model, p).named_parameters()}
        assert frozen and not frozen & grads
    else:  # the wrappers hold the blocks' own state under the same keys (gamma; Swin's attn_mask, None in every
        # unshifted block, stage 1 included where the 7x7 window covers the map: the forward reads it all the same)
        assert list(model.state_dict()) == list(before)


# ----------------------------------------------------------------------------- resume

def train_steps(model: nn.Module, opt: torch.optim.Optimizer, steps: range, size: int) -> None:
    model.train()
    for step in steps:
        x = torch.randn(4, 3, size, size, generator=torch.Generator().manual_seed(step))
        opt.zero_grad()
        objective(model(x)).backward()
        opt.step()


def replaced_model(name: str, seed: int):
    """A fresh model with stochastic drop-path (so the saved RNG matters), RepL applied, and its optimizer."""
    model, _ = built(name, seed=seed, drop_path_rate=0.2)
    apply_replacement(model, select="explicit", blocks=REPLACED, surrogate="lite", fusion="channel")
    return model, torch.optim.AdamW(model.parameters(), lr=1e-3)


@pytest.mark.parametrize("name", ["convnext", "swin"])
def test_two_steps_save_load_one_step_equals_three_steps(name, tmp_path):
    size = BUILDERS[name][1]
    whole, opt = replaced_model(name, seed=0)
    torch.manual_seed(5)
    train_steps(whole, opt, range(3), size)

    split, opt = replaced_model(name, seed=0)
    torch.manual_seed(5)
    train_steps(split, opt, range(2), size)
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"model": split.state_dict(), "optim": opt.state_dict(), "rng": rng_state(),
                           "progress": {"step": 2}})
    torch.manual_seed(123)  # whatever the process did in between
    resumed, opt = replaced_model(name, seed=1)  # other initial weights: everything must come from the file
    state = torch.load(path, weights_only=True)  # a hand-made state, not a Trainer's checkpoint
    resumed.load_state_dict(state["model"], strict=True)
    opt.load_state_dict(state["optim"])
    set_rng_state(state["rng"])
    train_steps(resumed, opt, range(state["progress"]["step"], 3), size)

    assert list(resumed.state_dict()) == list(whole.state_dict())
    for key, value in whole.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value), key
