"""RepL on transformers (timm ViTs and the project's GPT): discovery, ratio 0, accounting by formula,
gradients, the operator each surrogate computes, bake, baselines, and causal masking."""
import copy

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

from repl import ReplConfig, apply_replacement, bake
from repl.baselines import ShortcutOnly, StochasticDepthBlock
from repl.errors import UnsupportedModelError
from repl.families import discover_blocks, get_module
from repl.method.surrogates import Surrogate
from repl.models.gpt import GPT, build_lm
from repl.models.lite import LiteTransformerBlock

DIM, HIDDEN, DEPTH, VOCAB, CONTEXT = 32, 64, 6, 50, 12


def vit(**kwargs) -> nn.Module:
    """A small timm ViT built as a user would, nobody configured it for RepL."""
    args = dict(pretrained=False, img_size=32, patch_size=8, embed_dim=DIM, depth=DEPTH, num_heads=2,
                mlp_ratio=HIDDEN / DIM, num_classes=10)
    return timm.create_model("vit_tiny_patch16_224", **{**args, **kwargs})


def gpt() -> GPT:
    return build_lm(VOCAB, CONTEXT, False, context=CONTEXT, layers=DEPTH, dim=DIM, heads=2, mlp_ratio=HIDDEN / DIM,
                    dropout=0.0)


BUILDERS = {"vit": vit, "vit_layerscale": lambda: vit(init_values=0.1), "gpt": gpt}


def built(name):
    torch.manual_seed(0)
    model = BUILDERS[name]()
    x = torch.randint(0, VOCAB, (2, CONTEXT)) if name == "gpt" else torch.randn(2, 3, 32, 32)
    return model, x


def objective(out: torch.Tensor) -> torch.Tensor:
    return out.logsumexp(-1).mean()


def trainable(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("name, family", [("vit", "timm_vit"), ("gpt", "gpt")])
def test_discovery_finds_every_block_in_order(name, family):
    model, _ = built(name)
    blocks = discover_blocks(model)
    assert [b.path for b in blocks] == [f"blocks.{i}" for i in range(DEPTH)]
    assert {b.family for b in blocks} == {family} and {b.kind for b in blocks} == {"transformer"}
    assert all(b.in_channels == b.out_channels == DIM and b.stride == 1 for b in blocks)


def test_default_timm_vit_and_deit_need_no_configuration():
    for arch in ("vit_tiny_patch16_224", "deit_tiny_distilled_patch16_224"):
        model = timm.create_model(arch, pretrained=False)
        plan = apply_replacement(model, ReplConfig(ratio=0.4))
        assert plan.family == "timm_vit" and len(plan.blocks) == 5  # 12 blocks allow floor(11/2) = 5
        assert model(torch.randn(1, 3, 224, 224)).shape == (1, 1000)


def test_other_transformer_block_types_are_refused():
    model = vit(block_fn=timm.models.vision_transformer.ResPostBlock)
    with pytest.raises(UnsupportedModelError, match="ResPostBlock"):
        apply_replacement(model, ratio=0.25)


def sgd_steps(model, x, steps=3):
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(steps):
        opt.zero_grad()
        objective(model(x)).backward()
        opt.step()
    return model


@pytest.mark.parametrize("name", ["vit", "gpt"])
def test_ratio_zero_is_bit_identical_to_no_method(name):
    plain, x = built(name)
    treated = copy.deepcopy(plain)
    plan = apply_replacement(treated, ratio=0.0)
    assert plan.method == "bp" and plan.num_blocks == DEPTH
    sgd_steps(plain, x)
    sgd_steps(treated, x)
    assert list(plain.state_dict()) == list(treated.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), treated.state_dict().values()))


# Per block, written out from the architecture: norm1 2D, qkv 3D^2 + 3D, proj D^2 + D, norm2 2D,
# fc1 HD + H, fc2 DH + D (+ D per LayerScale). lite synthesizes norm2, fc1, fc2 (+ ls2) and drops the
# attention sub-layer; full synthesizes all of them. Nothing stays the block's own.
BLOCK = 2 * DIM + 3 * DIM * DIM + 3 * DIM + DIM * DIM + DIM + 2 * DIM + 2 * HIDDEN * DIM + HIDDEN + DIM
LITE_TENSORS = {"norm2.weight": DIM, "norm2.bias": DIM, "mlp.fc1.weight": HIDDEN, "mlp.fc1.bias": HIDDEN,
                "mlp.fc2.weight": DIM, "mlp.fc2.bias": DIM}  # name: output channels
FULL_TENSORS = {**LITE_TENSORS, "norm1.weight": DIM, "norm1.bias": DIM, "attn.qkv.weight": 3 * DIM,
                "attn.qkv.bias": 3 * DIM, "attn.proj.weight": DIM, "attn.proj.bias": DIM}


@pytest.mark.parametrize("name", ["vit", "vit_layerscale", "gpt"])
@pytest.mark.parametrize("surrogate", ["lite", "full"])
@pytest.mark.parametrize("fusion", ["scalar", "tensor", "channel"])
def test_trainable_parameters_follow_the_formula(name, surrogate, fusion):
    model, _ = built(name)
    before = trainable(model)
    layerscale = name == "vit_layerscale"
    tensors = dict(LITE_TENSORS if surrogate == "lite" else FULL_TENSORS)
    if layerscale:
        tensors.update({"ls2.gamma": DIM} if surrogate == "lite" else {"ls1.gamma": DIM, "ls2.gamma": DIM})
    per_block = {"scalar": 2, "tensor": 2 * len(tensors), "channel": 2 * sum(tensors.values())}[fusion]
    plan = apply_replacement(model, select="explicit", blocks=[1, 4], surrogate=surrogate, fusion=fusion)
    block = BLOCK + (2 * DIM if layerscale else 0)
    assert (plan.params_replaced, plan.params_fusion) == (2 * block, 2 * per_block)
    assert trainable(model) == before - 2 * block + 2 * per_block


def grads(model, x):
    model.zero_grad(set_to_none=True)
    objective(model(x)).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("name", ["vit", "gpt"])
@pytest.mark.parametrize("neighbor_grad", [True, False])
def test_gradients_reach_exactly_the_intended_tensors(name, neighbor_grad):
    """Reference: the baked model, whose synthesized weights are independent leaves."""
    model, x = built(name)
    plan = apply_replacement(model, select="explicit", blocks=[2], neighbor_grad=neighbor_grad, fusion="tensor")
    got, ref = grads(model, x), grads(bake(model), x)
    assert set(got) == set(dict(model.named_parameters()))
    assert got["blocks.2.fusion.a.mlp_fc1_weight"].abs() > 0 < got["blocks.2.fusion.b.mlp_fc1_weight"].abs()
    assert not any(n.startswith("blocks.2.body.attn") for n in got)  # lite: the attention sub-layer is gone
    surrogate = get_module(model, plan.paths[0])
    weights = surrogate.synthesized()
    through = {}
    if neighbor_grad:  # chain rule: d loss / d neighbour += J^T (d loss / d synthesized weight)
        neighbours = {f"blocks.{i}.{n}": t for i in (1, 3) for n, t in get_module(model, f"blocks.{i}").named_parameters()}
        extra = torch.autograd.grad(list(weights.values()), list(neighbours.values()),
                                    [ref[f"blocks.2.{n}"] for n in weights], allow_unused=True)
        through = {n: g for n, g in zip(neighbours, extra) if g is not None}
        assert through
    for n, g in got.items():
        if ".fusion." not in n:
            expected = ref[n] + through.get(n, 0.0)
            torch.testing.assert_close(g, expected, rtol=1e-4, atol=1e-6 * expected.abs().max().item())


def block_input(model, path, x):
    seen = {}
    hook = get_module(model, path).register_forward_pre_hook(lambda m, a: seen.setdefault("x", a[0].detach().clone()))
    with torch.no_grad():
        model(x)
    hook.remove()
    return seen["x"]


@pytest.mark.parametrize("name", ["vit", "vit_layerscale", "gpt"])
@pytest.mark.parametrize("surrogate", ["lite", "full"])
def test_surrogate_is_the_block_computed_with_synthesized_weights(name, surrogate):
    model, x = built(name)
    original = copy.deepcopy(get_module(model, "blocks.3"))
    apply_replacement(model, select="explicit", blocks=[3], surrogate=surrogate, fusion="channel")
    model.eval()
    module, h = get_module(model, "blocks.3"), block_input(model, "blocks.3", x)
    assert isinstance(module, Surrogate)
    w = module.synthesized()
    with torch.no_grad():
        if surrogate == "lite":  # x + ls2(fc2(gelu(fc1(layer_norm(x)))))
            y = F.layer_norm(h, (DIM,), w["norm2.weight"], w["norm2.bias"], eps=original.norm2.eps)
            y = F.linear(F.gelu(F.linear(y, w["mlp.fc1.weight"], w["mlp.fc1.bias"])), w["mlp.fc2.weight"], w["mlp.fc2.bias"])
            expected = h + (y * w["ls2.gamma"] if "ls2.gamma" in w else y)
        else:  # the original block class, loaded strictly with the synthesized weights
            block = copy.deepcopy(original).eval()
            block.load_state_dict(w, strict=True)
            expected = block(h)
        torch.testing.assert_close(module(h), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["vit_layerscale", "gpt"])
@pytest.mark.parametrize("surrogate", ["lite", "full"])
def test_bake_reproduces_eval_outputs(name, surrogate):
    model, x = built(name)
    plan = apply_replacement(model, ratio=0.4, surrogate=surrogate, fusion="channel")
    sgd_steps(model, x, steps=2)
    model.eval()
    with torch.no_grad():
        baked = bake(model)
        torch.testing.assert_close(baked(x), model(x), rtol=1e-5, atol=1e-5)  # same kernels: float reordering only
    assert not any(type(m).__module__.startswith("repl.method") for m in baked.modules())
    for path in plan.paths:
        assert isinstance(get_module(baked, path), LiteTransformerBlock) == (surrogate == "lite")
    if surrogate == "full":  # a plain model of the same architecture loads the baked weights strictly
        plain, _ = built(name)
        plain.load_state_dict(baked.state_dict(), strict=True)


@pytest.mark.parametrize("name", ["vit", "gpt"])
def test_baselines_on_transformer_blocks(name):
    model, x = built(name)
    blocks = [get_module(model, "blocks.2"), get_module(model, "blocks.4")]
    expected = sum(p.numel() for b in blocks for p in b.parameters())
    dropped = copy.deepcopy(model)
    plan = apply_replacement(dropped, method="drop", select="explicit", blocks=[2, 4])
    assert plan.params_replaced == expected and isinstance(get_module(dropped, "blocks.2"), ShortcutOnly)
    h = block_input(dropped, "blocks.2", x)
    assert torch.equal(get_module(dropped, "blocks.2")(h), h)  # a dropped pre-norm block is the identity

    stochastic = copy.deepcopy(model)
    apply_replacement(stochastic, method="stochastic_depth", survival_last=1.0)
    assert list(stochastic.state_dict()) == list(model.state_dict())
    assert all(isinstance(get_module(stochastic, f"blocks.{i}"), StochasticDepthBlock) for i in range(DEPTH))
    with torch.no_grad():  # survival 1: the block's own forward, bit for bit, in training and in eval
        assert torch.equal(stochastic.train()(x), model.train()(x))
        torch.testing.assert_close(stochastic.eval()(x), model.eval()(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("surrogate", [None, "lite", "full"])
def test_causal_masking_a_later_token_never_changes_an_earlier_prediction(surrogate):
    model, tokens = built("gpt")
    if surrogate:
        apply_replacement(model, ratio=0.4, surrogate=surrogate)
    model.eval()
    changed = tokens.clone()
    changed[:, 7:] = (changed[:, 7:] + 1) % VOCAB
    with torch.no_grad():
        a, b = model(tokens), model(changed)
    assert torch.equal(a[:, :7], b[:, :7])
    assert not torch.allclose(a[:, 7:], b[:, 7:])


def test_gpt_ties_its_head_to_the_embedding_and_counts_by_formula():
    model, _ = built("gpt")
    assert model.head.weight is model.tok_emb.weight
    # embeddings V*D + C*D, blocks, final norm 2D; the tied head adds nothing
    assert sum(p.numel() for p in model.parameters()) == VOCAB * DIM + CONTEXT * DIM + DEPTH * BLOCK + 2 * DIM


@pytest.mark.parametrize("method,surrogate", [("repl", "lite"), ("repl", "full"), ("drop", "lite"), ("stochastic_depth", "lite")])
def test_timm_attention_arguments_reach_every_block(method, surrogate):
    """Given a mask, timm runs the blocks one by one as `blk(x, attn_mask=..., is_causal=...)`."""
    model, x = built("vit")
    plan = apply_replacement(model, method=method, ratio=0.34, surrogate=surrogate)
    model.eval()
    tokens = 1 + (32 // 8) ** 2
    with torch.no_grad():
        plain = model.forward_features(x)
        zero_mask = model.forward_features(x, attn_mask=torch.zeros(tokens, tokens))
        causal = model.forward_features(x, is_causal=True)
    torch.testing.assert_close(zero_mask, plain, rtol=0, atol=1e-6)  # an all-zero additive mask changes nothing
    assert not torch.allclose(causal, plain, atol=1e-3)  # the causal flag reached the trained blocks' attention
    if method == "repl":
        block, h = get_module(model, plan.paths[0]), torch.randn(2, tokens, DIM)
        with torch.no_grad():
            same = torch.allclose(block(h, is_causal=True), block(h), atol=1e-6)
        assert same == (surrogate == "lite")  # lite has no attention to mask; full forwards the flag
