"""Hugging Face causal LMs (`model=hf_causal_lm`): any `transformers` decoder, built from its config, sized for the data.

`model.name` is either a `model_type` (gpt2, llama, qwen2, mistral, ...: `AutoConfig.for_model`) or a
local directory holding a `config.json` (or the path of that file). `model.kwargs` set fields of that
config; HF's common size names (hidden_size, num_hidden_layers, num_attention_heads,
max_position_embeddings) work for every type through the config's own `attribute_map` (GPT-2:
n_embd, n_layer, n_head, n_positions), and `intermediate_size` is the MLP width of any type
(GPT-2: n_inner), so one set of size keys serves GPT-2 and Llama alike. A key the config does not
know is refused. The vocabulary comes from the data; the context (max_position_embeddings) is
dataset.seq_len unless model.kwargs set it, and must hold seq_len.

`model.pretrained=true` loads weights with `from_pretrained(model.name)` (a hub id or a local
directory), from the local cache first, then the hub; neither gives one ConfigError line. The
network is wrapped in `HFCausalLM`, whose forward is what task=lm calls: [B, T] ids -> [B, T, V] logits.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Set, Tuple

import torch
from torch import nn

from repl.errors import ConfigError, install_hint
from repl.models.zoo import ModelSource

CONTEXT = "max_position_embeddings"  # every causal LM config answers to it (GPT-2 maps it to n_positions)
MLP_WIDTHS = ("intermediate_size", "n_inner")  # the MLP width, by the first of these names a config has


class HFCausalLM(nn.Module):
    """A Hugging Face causal LM as task=lm calls a model: [B, T] token ids in, [B, T, V] logits out.

    No attention mask is needed (every position is a real token; the model is causal) and no KV cache
    is kept (`use_cache=False`). The HF model is `self.lm`, so its blocks are at `lm.transformer.h.i`
    (GPT-2) or `lm.model.layers.i` (Llama and its kin).
    """

    def __init__(self, lm: nn.Module) -> None:
        super().__init__()
        self.lm = lm

    @property
    def config(self) -> Any:
        """The HF model's config."""
        return self.lm.config

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.lm(input_ids=ids, use_cache=False).logits


def _transformers() -> Any:
    try:
        import transformers
    except ImportError:
        raise ConfigError(f"model.source=hf_causal_lm needs transformers: {install_hint('hf')}") from None
    return transformers


def _hint(name: str, names) -> str:
    """A hint of the known names nearest to `name`, for an unknown-name error."""
    import difflib

    close = difflib.get_close_matches(name, list(names), n=4, cutoff=0.6)
    return f"; did you mean {', '.join(close)}?" if close else ""


def _is_path(name: str) -> bool:
    """Whether model.name is meant as a local path (a directory or a .json file) rather than a model_type."""
    return name.endswith(".json") or "/" in name or name.startswith(".") or Path(name).expanduser().is_dir()


def accepted_keys(config_class: type) -> Set[str]:
    """The config fields `model.kwargs` may set for this config class (its fields, their aliases, the MLP width)."""
    names = set(config_class().to_dict()) | set(getattr(config_class, "attribute_map", {}))
    if names & set(MLP_WIDTHS):
        names |= set(MLP_WIDTHS)
    return names - {"model_type", "transformers_version", "architectures", "_name_or_path"}


def _check_kwargs(config_class: type, name: str, kwargs: Mapping[str, Any]) -> Dict[str, Any]:
    """`kwargs` with `intermediate_size` under the config's own MLP-width name; ConfigError for an unknown key."""
    accepted = accepted_keys(config_class)
    for key in kwargs:
        if key not in accepted:
            raise ConfigError(f"model.kwargs.{key} is not a field of {config_class.__name__} (model.name={name})"
                              f"{_hint(key, accepted)}")
    width = next((w for w in MLP_WIDTHS if w in set(config_class().to_dict())), None)
    return {(width if key in MLP_WIDTHS and width else key): value for key, value in kwargs.items()}


def hf_config(name: str, kwargs: Mapping[str, Any]) -> Tuple[Any, Set[str]]:
    """The `transformers` config of `model.name` (a model_type or a local config) with `model.kwargs` set,
    and the names of the fields set explicitly (by the local config file or by model.kwargs)."""
    transformers = _transformers()
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    if _is_path(name):
        path = Path(name).expanduser()
        file = path / "config.json" if path.is_dir() else path
        if not file.is_file():
            raise ConfigError(f"model.name={name!r}: no config file at {file} (a model_type such as gpt2, or a "
                              "directory with config.json)")
        try:
            values = json.loads(file.read_text())
            model_type = values.pop("model_type")
        except (ValueError, KeyError):
            raise ConfigError(f"model.name={name!r}: {file} is not a transformers config (no model_type)") from None
    else:
        model_type, values = name, {}
    if model_type not in CONFIG_MAPPING:
        raise ConfigError(f"model.name={name!r} is not a transformers model_type nor a local config"
                          f"{_hint(model_type, CONFIG_MAPPING.keys())}")
    config_class = CONFIG_MAPPING[model_type]
    values.update(_check_kwargs(config_class, name, kwargs))
    aliases = getattr(config_class, "attribute_map", {})
    return transformers.AutoConfig.for_model(model_type, **values), {aliases.get(k, k) for k in values}


def _pretrained(name: str, kwargs: Mapping[str, Any]) -> nn.Module:
    """`AutoModelForCausalLM.from_pretrained(name)`: the local cache first, then the hub unless offline."""
    transformers = _transformers()
    from huggingface_hub import constants

    failure: Optional[Exception] = None
    for local_only in (True, False):
        if not local_only and constants.HF_HUB_OFFLINE:
            break
        try:
            return transformers.AutoModelForCausalLM.from_pretrained(name, local_files_only=local_only, **kwargs)
        except (OSError, ValueError) as err:
            failure = err
    reason = str(failure).strip().splitlines()[0] if failure else "offline"
    raise ConfigError(f"model.pretrained=true: no weights for model.name={name!r} in the Hugging Face cache and "
                      f"the hub gave none ({reason[:160]}); use model.pretrained=false or model.weights=FILE")


def build_hf_causal_lm(name: str, inputs: Mapping[str, Any], pretrained: bool, kwargs: Dict[str, Any]) -> nn.Module:
    """The HF causal LM of `model.name` for the data's vocabulary and sequence length, wrapped in `HFCausalLM`."""
    vocab, seq_len = int(inputs["vocab_size"]), int(inputs["seq_len"])
    transformers = _transformers()
    if pretrained:
        model = _pretrained(name, kwargs)
        config = model.config
        if model.get_input_embeddings().num_embeddings != vocab:
            model.resize_token_embeddings(vocab)
    else:
        config, explicit = hf_config(name, kwargs)
        config.vocab_size = vocab
        if config.attribute_map.get(CONTEXT, CONTEXT) not in explicit:
            setattr(config, CONTEXT, seq_len)
    context = getattr(config, CONTEXT, None)
    if context is not None and context < seq_len:
        key = next((k for k in kwargs if config.attribute_map.get(k, k) == config.attribute_map.get(CONTEXT, CONTEXT)),
                   None)
        where = f"model.kwargs.{key}" if key else f"the context of model.name={name}"
        raise ConfigError(f"{where}={context} is shorter than dataset.seq_len={seq_len}")
    if not pretrained:
        try:
            model = transformers.AutoModelForCausalLM.from_config(config)
        except ValueError as err:
            raise ConfigError(f"model.name={name!r} ({config.model_type}) is not a causal LM: "
                              f"{str(err).splitlines()[0][:160]}") from None
    return HFCausalLM(model)


HF_CAUSAL_LM = ModelSource("hf_causal_lm", "any Hugging Face causal LM by model_type (gpt2, llama, qwen2, mistral) "
                           "or local config directory", build_hf_causal_lm, reads_tokens=lambda name: True)
