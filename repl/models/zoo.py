"""Open model zoos: any timm or torchvision classification model by name (`model=timm model.name=convnext_tiny`).

A `ModelSource` turns `model.name` into a network sized for the data: the class count, the input
channels and (for models with a fixed input size, such as ViTs) the input side. The project's curated
names (`resnet32`, `vit_b`, ...) are the `repl` source in `repl/models/__init__.py`; the Hugging Face
causal LMs are the `hf_causal_lm` source in `repl/models/hf.py`. Whether RepL applies to the network
built is its block family's question (repl/families), asked when the method is applied.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, Mapping, Optional

from torch import nn

from repl.errors import ConfigError

Builder = Callable[..., nn.Module]


@dataclass(frozen=True)
class ModelSource:
    """Where `model.name` is looked up and how a model is built from it.

    `build(name, inputs, pretrained, kwargs)` gets the data's inputs (num_classes, in_chans, image_size
    for images; vocab_size, seq_len for token ids: `reads_tokens(name)`) and returns the network.
    """

    name: str
    summary: str  # one line, for --help style listings and errors
    build: Callable[[str, Mapping[str, Any], bool, Dict[str, Any]], nn.Module]
    reads_tokens: Callable[[str], bool] = lambda name: False


def _closest(name: str, names) -> str:
    """A hint of the known names nearest to `name` (difflib), for the unknown-name error."""
    import difflib

    close = difflib.get_close_matches(name, list(names), n=4, cutoff=0.6)
    return f"; did you mean {', '.join(close)}?" if close else ""


def build_timm(name: str, inputs: Mapping[str, Any], pretrained: bool, kwargs: Dict[str, Any]) -> nn.Module:
    """`timm.create_model(name)` with the data's classes and channels; models with a fixed input size
    (ViT, Swin, ...) are built for the data's image side unless `model.kwargs.img_size` says otherwise."""
    import timm

    if not timm.is_model(name):
        raise ConfigError(f"model.name={name!r} is not a timm model (model=timm){_closest(name, timm.list_models())}; "
                          "timm.list_models() lists them all")
    args = dict(num_classes=inputs["num_classes"], in_chans=inputs["in_chans"])
    if _fixed_input_size(name):
        args["img_size"] = inputs["image_size"]
    args.update(kwargs)
    with pretrained_download("timm", name, pretrained):
        return timm.create_model(name, pretrained=pretrained, **args)


def _fixed_input_size(name: str) -> bool:
    """Whether the timm model is built for one input side (its pretrained config says so)."""
    import timm

    cfg = timm.models.get_pretrained_cfg(name, allow_unregistered=True) if hasattr(timm.models, "get_pretrained_cfg") else None
    return bool(getattr(cfg, "fixed_input_size", False))


def build_torchvision(name: str, inputs: Mapping[str, Any], pretrained: bool, kwargs: Dict[str, Any]) -> nn.Module:
    """A torchvision classification model by name, with a new classifier for the data's classes when its
    pretrained one has another size; torchvision ViTs are built for the data's image side."""
    import torchvision

    names = torchvision.models.list_models(module=torchvision.models)  # classification models only
    if name not in names:
        raise ConfigError(f"model.name={name!r} is not a torchvision classification model (model=torchvision)"
                          f"{_closest(name, names)}; torchvision.models.list_models(module=torchvision.models) lists them")
    if inputs["in_chans"] != 3:
        raise ConfigError(f"model=torchvision model.name={name} takes 3 input channels, the dataset has {inputs['in_chans']}")
    builder = torchvision.models.get_model_builder(name)
    args = dict(kwargs)
    if builder.__module__.endswith("vision_transformer"):  # the one torchvision family with a fixed input side
        args.setdefault("image_size", inputs["image_size"])
    if not pretrained:
        return torchvision.models.get_model(name, weights=None, num_classes=inputs["num_classes"], **args)
    with pretrained_download("torchvision", name, pretrained):
        model = torchvision.models.get_model(name, weights="DEFAULT", **args)
    replace_classifier(model, inputs["num_classes"])
    return model


@contextmanager
def pretrained_download(zoo: str, name: str, pretrained: bool) -> Iterator[None]:
    """Around building the `zoo` (timm or torchvision) model `name`: with `pretrained`, a failed download of its
    weights (no network and nothing cached) becomes one ConfigError line saying what to do instead."""
    try:
        yield
    except OSError as err:  # URLError, huggingface_hub's LocalEntryNotFoundError, an HTTP error
        if not pretrained:
            raise
        raise ConfigError(
            f"model.pretrained=true: {zoo}'s weights for {name!r} are not in {_weight_caches(zoo)} and could not be "
            f"downloaded ({_root_cause(err)}); set model.pretrained=false, download them into that cache on a "
            "machine with network, or pass a state_dict file as model.weights=FILE") from None


def _weight_caches(zoo: str) -> str:
    """Where `zoo` looks for downloaded pretrained weights before the network."""
    import torch

    torch_hub = f"the torch hub cache ({os.path.join(torch.hub.get_dir(), 'checkpoints')})"
    if zoo == "torchvision":
        return torch_hub
    from huggingface_hub import constants

    return f"the Hugging Face cache ({constants.HF_HUB_CACHE}; HF_HUB_OFFLINE=1 skips the hub's retries) or {torch_hub}"


def _root_cause(err: BaseException) -> str:
    """The first line of the innermost exception `err` was raised from (the network's own error), shortened."""
    import textwrap

    while err.__cause__ is not None:
        err = err.__cause__
    text = str(err).strip()
    return textwrap.shorten(text.splitlines()[0], 200, placeholder=" ...") if text else type(err).__name__


def classifier_path(model: nn.Module) -> Optional[str]:
    """The module path of the model's classifier head: its last Linear (None if it has none)."""
    last: Optional[str] = None
    for path, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last = path
    return last


def replace_classifier(model: nn.Module, num_classes: int) -> None:
    """Give a pretrained classifier `num_classes` outputs: its last Linear is replaced by a fresh one."""
    last = classifier_path(model)
    if last is None:
        raise ConfigError(f"{type(model).__name__} has no Linear classifier to resize to {num_classes} classes")
    head = model.get_submodule(last)
    if head.out_features == num_classes:
        return
    owner, _, leaf = last.rpartition(".")
    setattr(model.get_submodule(owner) if owner else model, leaf,
            nn.Linear(head.in_features, num_classes, bias=head.bias is not None))


TIMM = ModelSource("timm", "any timm model by its timm name (timm.list_models())", build_timm)
TORCHVISION = ModelSource("torchvision", "any torchvision classification model by name (torchvision.models.list_models())",
                          build_torchvision)
