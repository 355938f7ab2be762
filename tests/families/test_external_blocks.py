"""The family contract can describe the next families' blocks: timm ConvNeXt and Swin, HF GPT-2 and Llama.

One block of each is described with the contract types (synthesizable tensors and their layouts, call
convention, residual rule), as its family will declare it (docs/families.md), and everything that can
be checked without the full family is: each declared output/input dim is the channel count the owning
module really produces/reads, the declared hidden-state output is what the model feeds the next
block, and the baselines run the block by the declared rule (same output, same state_dict keys).
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Tuple

import pytest
import timm
import torch
from timm.layers import LayerNorm2d
from torch import nn

from repl.baselines import ShortcutOnly, StochasticDepthBlock
from repl.baselines.layerdrop import LayerDropBlock
from repl.families import BlockInfo, CallConvention, Residual, TensorLayout, param_shapes

TRANSPOSED = TensorLayout(out_dim=1, in_dim=0)  # HF Conv1D stores [in, out]


def describe(block: nn.Module, family: str, dim: int, synthesizable=None, layouts=(), call=CallConvention()) -> BlockInfo:
    """A BlockInfo as a FORWARD-rule family declares one of its blocks."""
    return BlockInfo(
        index=1, path="blocks.1", family=family, kind=type(block).__name__, in_channels=dim, out_channels=dim,
        stride=1, has_projection=False, param_shapes=param_shapes(block),
        branch=tuple(n for n, _ in block.named_children()), residual=Residual.FORWARD, call=call,
        synthesizable=synthesizable, layouts=tuple(layouts),
    )


def channel_counts(block: nn.Module, run) -> Dict[str, Tuple[int, int]]:
    """(output channels, input channels) each weight-owning submodule really produced and read during `run()`."""
    seen: Dict[str, Tuple[int, int]] = {}

    def hook(name, module):
        def record(_, inputs, output):
            x = inputs[0]
            if isinstance(module, (nn.Conv2d, LayerNorm2d)):  # channels first; a grouped conv reads in/groups per output
                seen[name] = (output.shape[1], x.shape[1] // getattr(module, "groups", 1))
            else:  # Linear, HF Conv1D, channels-last norms
                seen[name] = (output.shape[-1], x.shape[-1])
        return record

    hooks = [m.register_forward_hook(hook(n, m)) for n, m in block.named_modules()
             if n and any(True for _ in m.parameters(recurse=False))]
    with torch.no_grad():
        run()
    for h in hooks:
        h.remove()
    return seen


def check_layouts(block: nn.Module, info: BlockInfo, run) -> None:
    """Every synthesizable tensor's declared out (and, rank >= 2, in) dim has the size its module really uses."""
    counts = channel_counts(block, run)
    checked = 0
    for name, p in block.named_parameters():
        owner, _, _ = name.rpartition(".")
        if not info.may_synthesize(name) or owner not in counts:
            continue
        layout, (out_ch, in_ch) = info.layout(name), counts[owner]
        roles = {role: d for d, role in layout.channel_dims(p.dim()).items()}
        assert p.shape[roles["out"]] == out_ch, f"{name}: declared out dim {roles['out']} of {tuple(p.shape)} != {out_ch}"
        if "in" in roles:
            assert p.shape[roles["in"]] == in_ch, f"{name}: declared in dim {roles['in']} of {tuple(p.shape)} != {in_ch}"
            checked += 1
    assert checked >= 2  # at least the two MLP weights


def check_next_block_takes_hidden(model_run, first: nn.Module, second: nn.Module, call: CallConvention) -> None:
    """The declared hidden-state output of one block is exactly what the model passes to the next."""
    seen: Dict[str, Any] = {}

    def taken(module, args, kwargs) -> None:
        seen.setdefault("next", args[0] if args else kwargs["hidden_states"])

    def returned(module, args, out) -> None:
        seen.setdefault("out", out)

    h1 = first.register_forward_hook(returned)
    h2 = second.register_forward_pre_hook(taken, with_kwargs=True)
    with torch.no_grad():
        model_run()
    h1.remove(), h2.remove()
    assert torch.equal(call.hidden(seen["out"]), seen["next"])


def check_baselines(block: nn.Module, info: BlockInfo, x: torch.Tensor, kwargs: Mapping[str, Any]) -> None:
    """Stochastic depth (survival 1) is the block's own forward with the same keys; drop passes the hidden state on."""
    torch.manual_seed(0)
    with torch.no_grad():
        expected = block.eval()(x, **kwargs)
    keys = list(block.state_dict())
    wrapped = StochasticDepthBlock(block, info, survival=1.0).eval()
    assert list(wrapped.state_dict()) == keys
    with torch.no_grad():  # eval: x + 1.0 * (block(x) - x), equal up to float rounding; train: the forward itself
        torch.testing.assert_close(wrapped(x, **kwargs), expected, rtol=1e-5, atol=1e-6)
        wrapped.train()
        torch.testing.assert_close(wrapped(x, **kwargs), expected, rtol=0, atol=0)
    layerdrop = LayerDropBlock(block, info, p=1.0)  # the block's own state (ConvNeXt gamma) kept, tuples kept
    assert list(layerdrop.state_dict()) == keys
    with torch.no_grad():
        torch.testing.assert_close(layerdrop.eval()(x, **kwargs), expected, rtol=0, atol=0)
        skipped = layerdrop.train()(x, **kwargs)
    assert torch.equal(info.call.hidden(skipped), x)
    dropped = ShortcutOnly(block, info)
    assert list(dropped.state_dict()) == []
    out = dropped(x, **kwargs)
    assert torch.equal(info.call.hidden(out), x)
    if info.call.hidden_output is not None:
        assert isinstance(out, tuple) and len(out) == len(expected)


# ----------------------------------------------------------------------------- timm ConvNeXt

def test_convnext_block_with_a_parameter_on_itself():
    """ConvNeXtBlock: dw conv 7x7, norm, 1x1 MLP, `gamma` set on the block itself, returns x + drop_path(...)."""
    torch.manual_seed(0)
    model = timm.create_model("convnext_atto", pretrained=False, num_classes=10).eval()
    stage = model.stages[1]
    block = stage.blocks[0]
    info = describe(block, "timm_convnext", block.gamma.shape[0])  # every tensor synthesizable, PyTorch layout
    assert ("gamma", tuple(block.gamma.shape)) in info.param_shapes and info.layout("conv_dw.weight") == TensorLayout()
    x = torch.randn(2, 3, 64, 64)
    check_layouts(block, info, lambda: model(x))
    check_next_block_takes_hidden(lambda: model(x), stage.blocks[0], stage.blocks[1], info.call)
    h = torch.randn(2, info.in_channels, 8, 8)
    check_baselines(block, info, h, {})
    assert "gamma" in dict(StochasticDepthBlock(block, info, 1.0).named_parameters(recurse=False))


# ----------------------------------------------------------------------------- timm Swin

def swin() -> nn.Module:
    return timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, embed_dim=32, depths=(2, 2),
                             num_heads=(2, 4), img_size=56, window_size=7, num_classes=10, drop_path_rate=0.0).eval()


def test_swin_block_with_a_buffer_on_itself_and_class_methods():
    """SwinTransformerBlock: NHWC in and out, relative position bias (not channel-shaped: not synthesizable),
    an `attn_mask` buffer on the block itself and a forward that calls the class's own `_attn`."""
    torch.manual_seed(0)
    model = swin()
    stage = model.layers[0]
    block = stage.blocks[1]  # the shifted-window block: its mask is a real buffer
    table = "attn.relative_position_bias_table"
    info = describe(block, "timm_swin", block.dim,
                    synthesizable=frozenset(n for n, _ in block.named_parameters() if n != table))
    assert not info.may_synthesize(table) and info.may_synthesize("attn.qkv.weight")
    x = torch.randn(2, 3, 56, 56)
    check_layouts(block, info, lambda: model(x))
    check_next_block_takes_hidden(lambda: model(x), stage.blocks[0], stage.blocks[1], info.call)
    h = torch.randn(2, 14, 14, block.dim)
    check_baselines(block, info, h, {})
    assert "attn_mask" in dict(StochasticDepthBlock(block, info, 1.0).named_buffers(recurse=False))


# ----------------------------------------------------------------------------- HF GPT-2 and Llama

def gpt2_call(transformers) -> CallConvention:
    """GPT2Block returns the hidden state itself from transformers 5 (attentions are recorded by hooks);
    before, (hidden_states,) + (attention weights,) when output_attentions."""
    from packaging.version import Version

    if Version(transformers.__version__) >= Version("5"):
        return CallConvention(hidden_output=None)
    return CallConvention(hidden_output=0,
                          skipped_extras=lambda kwargs: (None,) if kwargs.get("output_attentions") else ())


def test_hf_gpt2_block_transposed_weights_and_tuple_output():
    transformers = pytest.importorskip("transformers")
    from transformers.models.gpt2.modeling_gpt2 import GPT2Model

    torch.manual_seed(0)
    config = transformers.GPT2Config(n_embd=32, n_layer=3, n_head=2, n_positions=16, vocab_size=50,
                                     attn_pdrop=0.0, resid_pdrop=0.0, embd_pdrop=0.0)
    model = GPT2Model(config).eval()
    block = model.h[1]
    info = describe(block, "hf_gpt2", config.n_embd, call=gpt2_call(transformers),
                    layouts=[(n, TRANSPOSED) for n, p in block.named_parameters() if p.dim() == 2])
    assert info.layout("attn.c_attn.weight") == TRANSPOSED and info.layout("ln_1.weight") == TensorLayout()
    ids = torch.randint(0, 50, (2, 10))
    check_layouts(block, info, lambda: model(ids))
    check_next_block_takes_hidden(lambda: model(ids), model.h[1], model.h[2], info.call)
    h = torch.randn(2, 10, config.n_embd)
    for kwargs in ({}, {"output_attentions": True}):
        check_baselines(block, info, h, kwargs)


def llama_setup():
    transformers = pytest.importorskip("transformers")
    from transformers.models.llama.modeling_llama import LlamaModel

    torch.manual_seed(0)
    config = transformers.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                                      num_key_value_heads=2, vocab_size=50, max_position_embeddings=16)
    return transformers, config, LlamaModel(config).eval()


def llama_call(transformers) -> CallConvention:
    """LlamaDecoderLayer returns the hidden state itself from transformers 4.54, a 1-tuple before."""
    from packaging.version import Version

    return CallConvention(hidden_output=None if Version(transformers.__version__) >= Version("4.54") else 0)


def test_hf_llama_decoder_layer_needs_position_embeddings():
    transformers, config, model = llama_setup()
    layer = model.layers[1]
    info = describe(layer, "hf_llama", config.hidden_size, call=llama_call(transformers))
    # GQA: k/v project to num_key_value_heads * head_dim = 16 outputs, q/o keep 32; all [out, in] like nn.Linear
    assert dict(info.param_shapes)["self_attn.k_proj.weight"] == (16, 32)
    ids = torch.randint(0, 50, (2, 10))
    check_layouts(layer, info, lambda: model(ids))
    check_next_block_takes_hidden(lambda: model(ids), model.layers[1], model.layers[2], info.call)
    h = torch.randn(2, 10, config.hidden_size)
    position_ids = torch.arange(10).unsqueeze(0)
    kwargs = {"position_embeddings": model.rotary_emb(h, position_ids), "position_ids": position_ids}
    check_baselines(layer, info, h, kwargs)
