"""Model factory: `model.source` says where `model.name` is looked up, for every task's networks.

Sources: `repl`, the project's curated names below (`resnet32`, `vit_b`, `lm`, the mm models);
`timm` and `torchvision`, any model of those zoos by name (repl/models/zoo.py); `hf_causal_lm`, a
Hugging Face causal LM built from its config (repl/models/hf.py). One Hydra file per source
(`model=timm model.name=convnext_tiny`); the curated names are shortcuts with their own files.
"""
from __future__ import annotations

import importlib
from typing import Callable, Dict, List, Optional

import torch
from torch import nn

from repl.engine.console import echo
from repl.errors import ConfigError
from repl.models.cifar_resnet import CifarResNet
from repl.models.config import ModelConfig
from repl.models.zoo import TIMM, TORCHVISION, ModelSource, classifier_path, pretrained_download

Builder = Callable[..., nn.Module]


def _cifar(depth: int) -> Builder:
    def build(num_classes: int, in_chans: int, image_size: int, pretrained: bool, **kwargs) -> nn.Module:
        if pretrained:
            raise ConfigError(f"model.pretrained=true: no pretrained weights exist for resnet{depth}; use model.weights=FILE")
        return CifarResNet(depth, num_classes=num_classes, in_chans=in_chans, **kwargs)

    return build


def _timm(arch: str) -> Builder:
    def build(num_classes: int, in_chans: int, image_size: int, pretrained: bool, **kwargs) -> nn.Module:
        import timm

        with pretrained_download("timm", arch, pretrained):
            return timm.create_model(arch, pretrained=pretrained, num_classes=num_classes, in_chans=in_chans, **kwargs)

    return build


def _torchvision(arch: str) -> Builder:
    def build(num_classes: int, in_chans: int, image_size: int, pretrained: bool, **kwargs) -> nn.Module:
        import torchvision

        if in_chans != 3:
            raise ConfigError(f"model.name=tv_{arch} takes 3 input channels, the dataset has {in_chans}")
        weights = "DEFAULT" if pretrained else None
        with pretrained_download("torchvision", arch, pretrained):
            model = torchvision.models.get_model(arch, weights=weights, **kwargs)
        if model.fc.out_features != num_classes:
            model.fc = nn.Linear(model.fc.in_features, num_classes)
        return model

    return build


def _lazy(target: str, *args) -> Builder:
    """A builder imported on first use ("module:function", called with `args` first): optional extras stay optional."""

    def build(**kwargs) -> nn.Module:
        module, _, function = target.partition(":")
        return getattr(importlib.import_module(module), function)(*args, **kwargs)

    return build


def _reads_tokens(builder: Builder) -> Builder:
    """Mark a builder of a model that reads token ids: it takes vocab_size and seq_len instead of image inputs."""
    builder.reads_tokens = True  # type: ignore[attr-defined]
    return builder


MODELS: Dict[str, Builder] = {
    "resnet20": _cifar(20),
    "resnet32": _cifar(32),
    "resnet56": _cifar(56),
    "resnet110": _cifar(110),
    "resnet18": _timm("resnet18"),
    "resnet50": _timm("resnet50"),
    "resnet101": _timm("resnet101"),
    "tv_resnet18": _torchvision("resnet18"),
    "tv_resnet50": _torchvision("resnet50"),
    "tv_resnet101": _torchvision("resnet101"),
    "vit_t": _lazy("repl.models.vit:build_vit", "vit_t"),
    "vit_s": _lazy("repl.models.vit:build_vit", "vit_s"),
    "vit_b": _lazy("repl.models.vit:build_vit", "vit_b"),
    "vit_l": _lazy("repl.models.vit:build_vit", "vit_l"),
    "lm": _reads_tokens(_lazy("repl.models.gpt:build_lm")),
    "faster_rcnn_r50_fpn": _lazy("repl.integrations.openmmlab:build_detector", "faster_rcnn_r50_fpn"),
    "deeplabv3_r50": _lazy("repl.integrations.openmmlab:build_segmentor", "deeplabv3_r50"),
}


def _curated(name: str, inputs, pretrained: bool, kwargs: Dict) -> nn.Module:
    if name not in MODELS:
        raise ConfigError(f"model.name={name!r} is unknown; choose one of {', '.join(sorted(MODELS))}, "
                          "or any timm / torchvision model by name with model=timm / model=torchvision")
    return MODELS[name](pretrained=pretrained, **inputs, **kwargs)


CURATED = ModelSource("repl", "the project's curated models: " + ", ".join(MODELS), _curated,
                      reads_tokens=lambda name: getattr(MODELS.get(name), "reads_tokens", False))


def _hf_causal_lm() -> ModelSource:
    from repl.models.hf import HF_CAUSAL_LM

    return HF_CAUSAL_LM


SOURCES: Dict[str, Callable[[], ModelSource]] = {
    "repl": lambda: CURATED,
    "timm": lambda: TIMM,
    "torchvision": lambda: TORCHVISION,
    "hf_causal_lm": _hf_causal_lm,  # imports transformers on first use
}


def model_source(name: str) -> ModelSource:
    """The source `model.source` names; ConfigError listing the sources otherwise."""
    if name not in SOURCES:
        raise ConfigError(f"model.source={name!r} is unknown; choose one of {', '.join(SOURCES)}")
    return SOURCES[name]()


def reads_tokens(cfg: ModelConfig) -> bool:
    """Whether the configured model reads token ids (else images)."""
    return model_source(cfg.source).reads_tokens(cfg.name)


def build_model(cfg: ModelConfig, *, num_classes: Optional[int] = None, in_chans: int = 3, image_size: int = 32,
                vocab_size: Optional[int] = None, seq_len: Optional[int] = None) -> nn.Module:
    """Build the configured network, randomly initialised unless pretrained or weights are given.

    Its inputs come from the data (repl.data.model_inputs): num_classes, in_chans and image_size for
    images, vocab_size and seq_len for token ids. A token model called with the image names (the older
    call) reads num_classes as its vocabulary and image_size as its sequence length.
    """
    source = model_source(cfg.source)
    if source.reads_tokens(cfg.name):
        inputs = {"vocab_size": num_classes if vocab_size is None else vocab_size,
                  "seq_len": image_size if seq_len is None else seq_len}
    elif num_classes is None:
        raise ConfigError(f"model.name={cfg.name} reads images; the data gives token ids (vocab_size={vocab_size}): "
                          "choose a token model (model=lm, model=hf_causal_lm) or an image dataset")
    else:
        inputs = {"num_classes": num_classes, "in_chans": in_chans, "image_size": image_size}
    try:
        model = source.build(cfg.name, inputs, cfg.pretrained, dict(cfg.kwargs))
    except TypeError as err:  # an unknown model.kwargs entry
        raise ConfigError(f"model.kwargs for {cfg.name!r} not accepted: {err}") from None
    if cfg.weights:
        load_weights(model, cfg.weights, strict=cfg.weights_strict)
    return model


def load_weights(model: nn.Module, path: str, strict: bool = True) -> None:
    """Load a state_dict file into a model, skipping a classifier head of another shape (another number of classes).

    Any other tensor of the model missing from the file or of another shape, or a tensor of the file the
    model does not have, means the file is for another architecture: ConfigError, unless `strict` is false
    (`model.weights_strict=false`), which loads what fits. One line says what was loaded and skipped.
    """
    from pathlib import Path

    if not Path(path).is_file():
        raise ConfigError(f"model.weights={path!r}: no such file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is a user error here
        raise ConfigError(f"model.weights={path!r} is not a readable state_dict: {type(err).__name__}") from None
    state = state.get("model", state) if isinstance(state, dict) else state
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"model.weights={path!r} is not a state_dict: a dict of tensors (or a checkpoint with "
                          "one under 'model') is accepted")
    own = model.state_dict()
    compatible = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not compatible:
        raise ConfigError(f"model.weights={path!r} shares no tensor with model; is it for another architecture?")
    head = classifier_path(model)
    head_keys = {f"{head}.weight", f"{head}.bias"} if head is not None else set()
    not_loaded = [k for k in own if k not in compatible]
    skipped_head = [k for k in not_loaded if k in head_keys]
    missing = [k for k in not_loaded if k not in head_keys]
    unused = [k for k in state if k not in own and k not in head_keys]
    if strict and (missing or unused):
        problems = [f"{len(missing)} of the model's {len(own)} tensors are not in it or have another shape"
                    f"{_examples(missing)}"] if missing else []
        problems += [f"{len(unused)} of its {len(state)} tensors are not the model's{_examples(unused)}"] if unused else []
        raise ConfigError(f"model.weights={path!r} is for another architecture: {' and '.join(problems)}; set "
                          f"model.weights_strict=false to load the {len(compatible)} tensors that fit and leave the "
                          "others as initialised")
    model.load_state_dict(compatible, strict=False)
    skipped = []
    if skipped_head:
        skipped.append(f"the classifier head {', '.join(skipped_head)} (another number of classes)")
    if missing:
        skipped.append(f"{len(missing)} other tensors left as initialised{_examples(missing)}")
    if unused:
        skipped.append(f"{len(unused)} tensors of the file the model does not have{_examples(unused)}")
    echo(f"model.weights: loaded {len(compatible)} of the model's {len(own)} tensors from {path}"
         + (f"; skipped {'; '.join(skipped)}" if skipped else ""))


def _examples(names: List[str], count: int = 3) -> str:
    """A few of `names` for a one-line message, e.g. " (layer1.3.conv1.weight, ...)"; nothing when empty."""
    if not names:
        return ""
    return f" ({', '.join(names[:count])}{', ...' if len(names) > count else ''})"
