"""RepL on Hugging Face causal LMs (GPT-2, Llama): the model source, discovery, ratio 0, accounting by formula,
gradients, bake, lite cost, baselines, resume parity, the tokenizer option and the command line."""
from __future__ import annotations

import copy
import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

transformers = pytest.importorskip("transformers")

from repl import ReplConfig, apply_replacement, bake  # noqa: E402
from repl.errors import ConfigError  # noqa: E402
from repl.families import TensorLayout, discover_blocks  # noqa: E402
from repl.models import build_model  # noqa: E402
from repl.models.config import ModelConfig  # noqa: E402
from repl.models.hf import HFCausalLM  # noqa: E402
from repl.models.lite import LitePreNormMLP  # noqa: E402
from tests.data.fabricate_text import make_wikitext2  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
D, LAYERS, VOCAB, T, MLP, HEADS, KV_HEADS = 32, 6, 50, 12, 64, 2, 1
HEAD_DIM = D // HEADS
REPLACED = [1, 4]  # the most a 6-block sequence allows: floor((6 - 1) / 2) = 2 blocks, uniformly spread
MAX_RATIO = 2 / LAYERS
SIZE = dict(hidden_size=D, num_hidden_layers=LAYERS, num_attention_heads=HEADS, intermediate_size=MLP)
KWARGS = {"gpt2": dict(SIZE, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0),  # no dropout: runs compare bitwise
          "llama": dict(SIZE, num_key_value_heads=KV_HEADS)}
PREFIX = {"gpt2": "lm.transformer.h", "llama": "lm.model.layers"}
FAMILY = {"gpt2": "hf_gpt2", "llama": "hf_llama"}


def block_params(name: str) -> int:
    """One block's parameters, from the config alone."""
    if name == "gpt2":  # ln_1, c_attn (qkv) and c_proj, ln_2, c_fc and c_proj (MLP), all with biases
        return 2 * D + (D * 3 * D + 3 * D) + (D * D + D) + 2 * D + (D * MLP + MLP) + (MLP * D + D)
    kv = KV_HEADS * HEAD_DIM  # two RMSNorms (weight only), q/k/v/o and gate/up/down without bias
    return 2 * D + D * D + 2 * D * kv + D * D + 3 * D * MLP


def model_params(name: str) -> int:
    """The whole LM's parameters: embeddings, blocks, final norm, LM head (tied for GPT-2, not for Llama)."""
    if name == "gpt2":
        return VOCAB * D + T * D + LAYERS * block_params(name) + 2 * D
    return VOCAB * D + LAYERS * block_params(name) + D + VOCAB * D


def build(name: str, **kwargs) -> HFCausalLM:
    torch.manual_seed(0)
    cfg = ModelConfig(source="hf_causal_lm", name=name, kwargs={**KWARGS[name], **kwargs})
    return build_model(cfg, vocab_size=VOCAB, seq_len=T)


def ids(batch: int = 2) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, T), generator=torch.Generator().manual_seed(1))


def loss_of(model, x) -> torch.Tensor:
    logits = model(x)
    return torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), x[:, 1:].flatten())


def trainable(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ----------------------------------------------------------------------------- the model source

@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_source_sizes_the_model_for_the_data(name):
    model = build(name)
    assert isinstance(model, HFCausalLM) and model.config.vocab_size == VOCAB
    assert model.config.max_position_embeddings == T  # the context is the data's sequence length
    assert sum(p.numel() for p in model.parameters()) == model_params(name)
    out = model(ids())
    assert isinstance(out, torch.Tensor) and out.shape == (2, T, VOCAB)


def test_source_builds_from_a_local_config(tmp_path):
    transformers.AutoConfig.for_model("llama", **KWARGS["llama"]).save_pretrained(tmp_path)
    for name in (str(tmp_path), str(tmp_path / "config.json")):
        model = build_model(ModelConfig(source="hf_causal_lm", name=name), vocab_size=VOCAB, seq_len=T)
        assert sum(p.numel() for p in model.parameters()) == model_params("llama")


@pytest.mark.parametrize("name, kwargs, key", [
    ("gpt3", {}, "model.name"),
    ("gpt2", {"n_lyer": 2}, "model.kwargs.n_lyer"),
    ("./no/such/dir", {}, "model.name"),
    ("gpt2", {"n_positions": T - 1}, "model.kwargs.n_positions"),
])
def test_user_mistakes_are_one_config_error_naming_the_key(name, kwargs, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as err:
        build_model(ModelConfig(source="hf_causal_lm", name=name, kwargs=kwargs), vocab_size=VOCAB, seq_len=T)
    assert "\n" not in str(err.value)


def test_pretrained_weights_not_cached_offline_is_one_config_error(monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ConfigError, match="model.pretrained=true") as err:
        build_model(ModelConfig(source="hf_causal_lm", name=str(tmp_path / "absent"), pretrained=True),
                    vocab_size=VOCAB, seq_len=T)
    assert "\n" not in str(err.value)


# ----------------------------------------------------------------------------- discovery

@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_discovery_in_the_wrapper_and_the_bare_models(name):
    model = build(name)
    blocks = discover_blocks(model)
    assert [b.path for b in blocks] == [f"{PREFIX[name]}.{i}" for i in range(LAYERS)]
    assert {b.family for b in blocks} == {FAMILY[name]}
    assert all(b.in_channels == b.out_channels == D and b.stride == 1 for b in blocks)
    assert all(sum(math.prod(shape) for _, shape in b.param_shapes) == block_params(name) for b in blocks)
    bare = model.lm  # GPT2LMHeadModel / LlamaForCausalLM, and their base models
    assert [b.path for b in discover_blocks(bare)] == [p.removeprefix("lm.") for p in (b.path for b in blocks)]
    base = bare.transformer if name == "gpt2" else bare.model
    assert [b.path for b in discover_blocks(base)][0] == ("h.0" if name == "gpt2" else "layers.0")


def test_gpt2_conv1d_weights_are_declared_in_out():
    info = discover_blocks(build("gpt2"))[2]
    transposed = TensorLayout(out_dim=1, in_dim=0)
    for weight in ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight"):
        assert info.layout(weight) == transposed
    assert info.layout("ln_1.weight") == TensorLayout() and dict(info.param_shapes)["mlp.c_fc.weight"] == (D, MLP)


def test_llama_weights_keep_the_linear_layout():
    info = discover_blocks(build("llama"))[2]
    assert info.layouts == () and dict(info.param_shapes)["self_attn.k_proj.weight"] == (KV_HEADS * HEAD_DIM, D)


# ----------------------------------------------------------------------------- the method

@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_ratio_zero_is_bit_identical(name):
    model, reference = build(name), build(name)
    apply_replacement(model, ReplConfig(ratio=0.0))
    x = ids()
    assert torch.equal(model(x), reference(x))


@pytest.mark.parametrize("name", ["gpt2", "llama"])
@pytest.mark.parametrize("surrogate", ["lite", "full"])
def test_trainable_parameters_by_formula_and_gradients_reach_all(name, surrogate):
    model = build(name)
    plan = apply_replacement(model, ReplConfig(ratio=MAX_RATIO, surrogate=surrogate))
    assert plan.blocks == REPLACED
    # every tensor of a replaced block is synthesized (full) or dropped with attention (lite); scalar fusion: a, b
    assert trainable(model) == model_params(name) - len(REPLACED) * block_params(name) + 2 * len(REPLACED)
    assert plan.params_replaced == len(REPLACED) * block_params(name) and plan.params_fusion == 2 * len(REPLACED)
    loss_of(model, ids()).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum())]
    assert missing == []
    if surrogate == "lite":
        body = model.get_submodule(f"{PREFIX[name]}.1").body
        assert isinstance(body, LitePreNormMLP) and not hasattr(body, "attn") and not hasattr(body, "self_attn")


@pytest.mark.parametrize("name", ["gpt2", "llama"])
@pytest.mark.parametrize("surrogate", ["lite", "full"])
def test_bake_equals_the_eval_model(name, surrogate):
    model = build(name)
    apply_replacement(model, ReplConfig(ratio=MAX_RATIO, surrogate=surrogate))
    model.eval()
    baked = bake(model).eval()
    x = ids()
    with torch.no_grad():
        # the same float32 weights computed the same way (a * prev + b * next), then the same modules: equal up to
        # float32 rounding of a few ops on O(1) logits (eps 1.2e-7)
        torch.testing.assert_close(baked(x), model(x), rtol=1e-5, atol=1e-6)
    assert not any("fusion" in k for k in baked.state_dict())


def flops(model) -> int:
    counter = FlopCounterMode(display=False)
    with counter:
        loss_of(model, ids()).backward()
    return counter.get_total_flops()


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_lite_costs_less_than_full_and_full_than_nothing_saved(name):
    costs = {}
    for surrogate in ("lite", "full"):
        model = build(name)
        apply_replacement(model, ReplConfig(ratio=MAX_RATIO, surrogate=surrogate))
        costs[surrogate] = flops(model)
    assert costs["lite"] < costs["full"]
    assert costs["lite"] < flops(build(name))


@pytest.mark.parametrize("name", ["gpt2", "llama"])
@pytest.mark.parametrize("method", ["drop", "freeze", "stochastic_depth", "layerdrop"])
def test_baselines_run_forward_and_backward(name, method):
    model = build(name)
    apply_replacement(model, ReplConfig(method=method, ratio=MAX_RATIO))
    model.train()
    loss = loss_of(model, ids())
    loss.backward()
    assert torch.isfinite(loss) and any(p.grad is not None for p in model.parameters())
    with torch.no_grad():
        assert model.eval()(ids()).shape == (2, T, VOCAB)


@pytest.mark.parametrize("name", ["gpt2", "llama"])
@pytest.mark.parametrize("switches", [dict(method="drop"), dict(method="layerdrop"), dict(method="stochastic_depth"),
                                      dict(method="freeze"), dict(stochastic_depth=True), dict(surrogate="lite"),
                                      dict(surrogate="full")], ids=repr)
def test_a_converted_model_pickles_whole(name, switches):
    """torch.save(model) keeps every wrapper, including the BlockInfo (and its lite operator) that baselines hold."""
    model = build(name)
    apply_replacement(model, ReplConfig(ratio=MAX_RATIO, **switches))
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert type(loaded) is type(model) and loaded is not model
    assert [type(m) for m in loaded.modules()] == [type(m) for m in model.modules()]
    with torch.no_grad():
        assert torch.equal(loaded.eval()(ids()), model.eval()(ids()))
    grads = []
    for m in (model, loaded):  # a training step too, the same skips drawn: neighbours and fusion are still tied
        torch.manual_seed(3)
        loss_of(m.train(), ids()).backward()
        grads.append({n: p.grad for n, p in m.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and grads[0]
    assert all(torch.equal(grads[0][n], grads[1][n]) for n in grads[0])


def train(model, optimizer, steps: int) -> None:
    for _ in range(steps):
        optimizer.zero_grad()
        loss_of(model, ids(4)).backward()
        optimizer.step()


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_resume_is_bitwise_the_uninterrupted_run(name):
    def fresh():
        model = build(name)
        apply_replacement(model, ReplConfig(ratio=MAX_RATIO))
        return model, torch.optim.AdamW(model.parameters(), lr=1e-2)

    straight, opt = fresh()
    train(straight, opt, 3)
    first, opt = fresh()
    train(first, opt, 2)
    state = copy.deepcopy({"model": first.state_dict(), "optim": opt.state_dict()})
    resumed, opt = fresh()
    resumed.load_state_dict(state["model"])
    opt.load_state_dict(state["optim"])
    train(resumed, opt, 1)
    for (key, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), key


# ----------------------------------------------------------------------------- the tokenizer option

def text_config(root: Path, hf_tokenizer: str):
    from repl.data.config import TextDataConfig

    return TextDataConfig(name="wikitext2", root=str(root), tokenizer="hf", hf_tokenizer=hf_tokenizer,
                          vocab_size=300, seq_len=16, batch_size=2)


def test_hf_tokenizer_not_cached_falls_back_to_the_projects_bpe(tmp_path, capsys, caplog):
    from repl.data.text import build_text_data, vocabulary_size

    make_wikitext2(tmp_path, "raw")
    cfg = text_config(tmp_path, str(tmp_path / "no-tokenizer-here"))
    vocab = vocabulary_size(cfg)
    data = build_text_data(cfg, seed=0, device=torch.device("cpu"))
    printed = capsys.readouterr()  # printed, or logged (into train.log) where logging is configured
    lines = printed.out.splitlines() + printed.err.splitlines() + [r.getMessage() for r in caplog.records]
    notice = [line for line in lines if "dataset.tokenizer=hf" in line]
    assert len(notice) == 1 and "bpe" in notice[0]  # once: the corpus is tokenized once per process
    assert vocab == data.vocab_size == 300  # the project's byte-level BPE of dataset.vocab_size


def test_a_cached_hf_tokenizer_is_used(tmp_path):
    """A tokenizer saved with save_pretrained (what the hub cache holds) is read offline and used as is."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    from repl.data.text import build_text_data

    lines = make_wikitext2(tmp_path / "data", "raw")
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(lines["train"], trainers.BpeTrainer(vocab_size=120, special_tokens=["<unk>", "<|end|>"],
                                                                show_progress=False))
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|end|>", unk_token="<unk>")
    fast.save_pretrained(tmp_path / "tok")
    data = build_text_data(text_config(tmp_path / "data", str(tmp_path / "tok")), seed=0, device=torch.device("cpu"))
    assert data.vocab_size == len(fast)
    expected = [i for line in lines["test"] for i in fast(line.strip(), add_special_tokens=False)["input_ids"]
                + [fast.eos_token_id]]
    assert data.eval_tokens["test"] == len(expected) - 1


# ----------------------------------------------------------------------------- the command line

def test_gpt2_and_llama_train_from_the_command_line(tmp_path):
    """One multirun: model.name=gpt2 and llama with the same size keys (GPT-2 reads them by its own names)."""
    args = ["task=lm", "model=hf_causal_lm", "model.name=gpt2,llama", "model.kwargs.hidden_size=32",
            "model.kwargs.num_hidden_layers=4", "model.kwargs.num_attention_heads=2", "model.kwargs.intermediate_size=64",
            "dataset.seq_len=16", "dataset.batch_size=4", "dataset.num_train=2000", "dataset.num_eval=200",
            "repl.ratio=0.25", "trainer.max_steps=1", f"hydra.sweep.dir={tmp_path}",
            "hydra.sweep.subdir=${hydra.job.num}"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    result = subprocess.run([sys.executable, str(ROOT / "train.py"), "-m", *args], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    for job, family in (("0", "hf_gpt2"), ("1", "hf_llama")):
        summary = json.loads((tmp_path / job / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["steps_done"] == 1
        assert summary["plan"]["family"] == family and summary["plan"]["blocks"] == [1]
        assert summary["primary"]["name"] == "test_ppl"
