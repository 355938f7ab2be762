"""Hugging Face causal LM families: GPT-2 (`GPT2Block`) and the Llama layout (Llama, Mistral, Qwen2 decoder layers).

Both are pre-norm residual blocks, `x + attn(norm(x))` then `+ mlp(norm(x))`, computed by the layer's
own forward (`Residual.FORWARD`), returning the hidden state itself (transformers >= 5). The model may
be the bare HF model (GPT2LMHeadModel, GPT2Model, LlamaForCausalLM, LlamaModel, ...) or any module
holding one (repl.models.hf.HFCausalLM): the blocks are found under the base model's path.

- GPT-2 (`transformer.h.i`): every 2-D weight is a `Conv1D` stored `[in, out]`, declared
  `TensorLayout(out_dim=1, in_dim=0)`; GPT2Model passes the cache, mask and encoder states to a
  block positionally, the rest as keywords: all passed through.
- Llama layout (`model.layers.i`): `nn.Linear` weights `[out, in]` (the default layout); the layer
  needs `position_embeddings=(cos, sin)`, passed through.

Lite: the MLP sub-layer with its norm, `x + mlp(ln_2(x))` / `x + mlp(post_attention_layernorm(x))`
(GPT-2's MLP ends with its residual dropout, as in the full block). Embeddings, the final norm and
the (tied) LM head are not blocks. Nothing here imports transformers unless it is already loaded:
a model of a class transformers defines cannot exist before.
"""
from __future__ import annotations

import functools
import importlib
import sys
from typing import List, Optional, Tuple

from torch import nn

from repl.errors import UnsupportedModelError
from repl.families.contract import BlockInfo, FamilyAdapter, LiteOperator, Residual, TensorLayout, param_shapes
from repl.models.lite import LitePreNormMLP

CONV1D = TensorLayout(out_dim=1, in_dim=0)  # transformers.pytorch_utils.Conv1D: y = x @ W + b, W [in, out]
MIN_TRANSFORMERS = 5  # layers return the hidden state itself (a tuple before 4.54 / 5)

# (module, base model class, block class) of each model of a layout; a module that does not import is skipped
GPT2_MODELS = (("transformers.models.gpt2.modeling_gpt2", "GPT2Model", "GPT2Block"),)
LLAMA_MODELS = (
    ("transformers.models.llama.modeling_llama", "LlamaModel", "LlamaDecoderLayer"),
    ("transformers.models.mistral.modeling_mistral", "MistralModel", "MistralDecoderLayer"),
    ("transformers.models.qwen2.modeling_qwen2", "Qwen2Model", "Qwen2DecoderLayer"),
)


def _classes(models: Tuple[Tuple[str, str, str], ...]) -> Tuple[Tuple[type, ...], Tuple[type, ...]]:
    """(base model classes, block classes) of the importable models; empty without transformers loaded."""
    if "transformers" not in sys.modules:
        return (), ()
    bases, blocks = [], []
    for module_name, base, block in models:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        bases.append(getattr(module, base))
        blocks.append(getattr(module, block))
    return tuple(bases), tuple(blocks)


def _transposed_classes(specs: Tuple[Tuple[str, str], ...]) -> Tuple[type, ...]:
    """The weight-module classes (module, class name) stored `[in, out]`, transformers being loaded."""
    return tuple(getattr(importlib.import_module(module), cls) for module, cls in specs)


def _base(model: nn.Module, bases: Tuple[type, ...]) -> Optional[Tuple[str, nn.Module]]:
    """(path, module) of the first module of `model` (itself included) that is one of the base model classes."""
    if not bases:
        return None
    return next(((path, m) for path, m in model.named_modules() if isinstance(m, bases)), None)


def _check_version(family: str) -> None:
    from packaging.version import Version

    version = sys.modules["transformers"].__version__
    if Version(version).major < MIN_TRANSFORMERS:
        raise UnsupportedModelError(f"{family} needs transformers >= {MIN_TRANSFORMERS} (layers returning the "
                                    f"hidden state); transformers {version} is installed")


def _lite_prenorm_mlp(norm: str, block: nn.Module, info: BlockInfo) -> nn.Module:
    """The lite sub-layer of a layout whose MLP's norm is the block's `norm`: `x + mlp(norm(x))` (block consumed)."""
    return LitePreNormMLP(norm, getattr(block, norm), block.mlp)


# Builders are module-level functions (a partial of one): baselines keep the BlockInfo, hence this operator, in
# the model, and pickle (torch.save(model)) cannot save a function defined inside another.
LITE_GPT2 = LiteOperator(frozenset({"ln_1", "attn", "ln_2", "mlp"}), functools.partial(_lite_prenorm_mlp, "ln_2"))
LITE_LLAMA = LiteOperator(frozenset({"input_layernorm", "self_attn", "post_attention_layernorm", "mlp"}),
                          functools.partial(_lite_prenorm_mlp, "post_attention_layernorm"))


def hf_adapter(name: str, description: str, models: Tuple[Tuple[str, str, str], ...], blocks_attr: str,
               kind: str, norm: str, lite: LiteOperator, transposed: Tuple[Tuple[str, str], ...] = ()) -> FamilyAdapter:
    """A family whose blocks are the children of `<base model>.<blocks_attr>`, in order.

    `norm` is the block's first norm (its width is the hidden size); `transposed` are the (module, class)
    of the weight modules stored `[in, out]`.
    """

    def detect(model: nn.Module) -> bool:
        return _base(model, _classes(models)[0]) is not None

    def enumerate_blocks(model: nn.Module) -> List[BlockInfo]:
        _check_version(name)
        bases, block_classes = _classes(models)
        found = _base(model, bases)
        if found is None:
            raise UnsupportedModelError(f"{type(model).__name__} holds no {description}")
        prefix, base = found
        conv1d = _transposed_classes(transposed)
        infos = []
        for child, block in getattr(base, blocks_attr).named_children():
            path = ".".join(p for p in (prefix, blocks_attr, child) if p)
            if type(block) not in block_classes:
                supported = ", ".join(c.__name__ for c in block_classes)
                raise UnsupportedModelError(f"{name} block {path} is a {type(block).__name__}; supported: {supported}")
            dim = getattr(block, norm).weight.shape[0]
            layouts = tuple((f"{m_path}.weight", CONV1D) for m_path, m in block.named_modules()
                            if isinstance(m, conv1d))
            infos.append(BlockInfo(
                index=len(infos), path=path, family=name, kind=kind, in_channels=dim, out_channels=dim, stride=1,
                has_projection=False, param_shapes=param_shapes(block),
                branch=tuple(n for n, _ in block.named_children()),
                residual=Residual.FORWARD, layouts=layouts, lite=lite,
            ))
        return infos

    return FamilyAdapter(name, description, detect, enumerate_blocks)


HF_GPT2 = hf_adapter("hf_gpt2", "Hugging Face GPT-2 (GPT2Model / GPT2LMHeadModel, model=hf_causal_lm model.name=gpt2)",
                     GPT2_MODELS, "h", "gpt2", "ln_1", LITE_GPT2, transposed=(("transformers.pytorch_utils", "Conv1D"),))
HF_LLAMA = hf_adapter("hf_llama", "Hugging Face Llama, Mistral or Qwen2 decoder (model=hf_causal_lm model.name=llama)",
                      LLAMA_MODELS, "layers", "llama", "input_layernorm", LITE_LLAMA)
