"""Pretrained weights: a failed zoo download and `model.weights=FILE` of another architecture are one line each."""
from __future__ import annotations

from pathlib import Path
from typing import List
from urllib.error import URLError

import pytest
import torch

import repl.models
from repl.config import compose, to_config
from repl.errors import ConfigError
from repl.models import build_model
from repl.models.config import ModelConfig


def model(name: str, source: str = "repl", classes: int = 10, **cfg) -> torch.nn.Module:
    return build_model(ModelConfig(source=source, name=name, **cfg), num_classes=classes, in_chans=3, image_size=32)


@pytest.fixture
def echoed(monkeypatch) -> List[str]:
    """The lines load_weights prints."""
    lines: List[str] = []
    monkeypatch.setattr(repl.models, "echo", lines.append)
    return lines


# ------------------------------------------------------------------ model.pretrained=true without network or cache
@pytest.fixture
def offline(monkeypatch):
    """Both zoos' downloads fail as they do without network: torchvision's with URLError, timm's (Hugging Face
    hub) with huggingface_hub's LocalEntryNotFoundError raised from the connection error."""
    import timm.models._hub
    import torchvision.models._api
    from huggingface_hub.errors import LocalEntryNotFoundError

    def url(*args, **kwargs):
        raise URLError("[Errno -2] Name or service not known")

    def hub(*args, **kwargs):
        try:
            raise OSError("[Errno -2] Name or service not known")
        except OSError as err:
            raise LocalEntryNotFoundError("An error happened while trying to locate the file on the Hub and we "
                                          "cannot find the requested files in the local cache.") from err

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", url)
    monkeypatch.setattr(timm.models._hub, "hf_hub_download", hub)


@pytest.mark.parametrize("source, name, zoo, arch", [
    ("torchvision", "resnet18", "torchvision", "resnet18"),
    ("timm", "resnet18", "timm", "resnet18"),
    ("repl", "tv_resnet18", "torchvision", "resnet18"),
    ("repl", "resnet18", "timm", "resnet18"),
    ("repl", "vit_t", "timm", "vit_tiny_patch16_224"),
])
def test_a_failed_pretrained_download_is_one_line_saying_what_to_do(offline, source, name, zoo, arch):
    with pytest.raises(ConfigError) as err:
        model(name, source, pretrained=True)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"model.pretrained=true: {zoo}'s weights for '{arch}'")
    assert "Name or service not known" in message  # the network's own error, not the library's wrapper
    assert "cache" in message and "model.pretrained=false" in message and "model.weights=FILE" in message


# ------------------------------------------------------------------ model.weights=FILE
def saved(tmp_path: Path, net: torch.nn.Module, name: str = "w.pt") -> str:
    path = tmp_path / name
    torch.save(net.state_dict(), path)
    return str(path)


def test_weights_of_the_same_model_load_entirely_and_say_so(tmp_path, echoed):
    torch.manual_seed(0)
    source = model("resnet20")
    loaded = model("resnet20", weights=saved(tmp_path, source))
    assert all(torch.equal(a, b) for a, b in zip(source.state_dict().values(), loaded.state_dict().values()))
    assert echoed == [f"model.weights: loaded 128 of the model's 128 tensors from {tmp_path / 'w.pt'}"]


@pytest.mark.parametrize("source, name, head", [("repl", "resnet20", "fc"), ("timm", "vit_tiny_patch16_224", "head")])
def test_a_classifier_head_for_another_number_of_classes_is_skipped_and_named(tmp_path, echoed, source, name, head):
    torch.manual_seed(0)
    pretrained = model(name, source, classes=100)
    path = saved(tmp_path, pretrained)
    torch.manual_seed(1)
    fresh = model(name, source)
    torch.manual_seed(1)
    loaded = model(name, source, weights=path)
    total = len(fresh.state_dict())
    for key, value in loaded.state_dict().items():
        expected = (fresh if key.startswith(f"{head}.") else pretrained).state_dict()[key]
        assert torch.equal(value, expected), key
    assert echoed[0].endswith(f"loaded {total - 2} of the model's {total} tensors from {tmp_path / 'w.pt'}; "
                              f"skipped the classifier head {head}.weight, {head}.bias (another number of classes)")


@pytest.mark.parametrize("saved_name, built_name, problem", [
    ("resnet20", "resnet32", "72 of the model's 200 tensors are not in it or have another shape "
                             "(layer1.3.conv1.weight, layer1.3.bn1.weight, layer1.3.bn1.bias, ...)"),
    ("resnet32", "resnet20", "72 of its 200 tensors are not the model's (layer1.3.conv1.weight, "),
])
def test_weights_of_another_architecture_are_refused_in_one_line(tmp_path, echoed, saved_name, built_name, problem):
    path = saved(tmp_path, model(saved_name))
    with pytest.raises(ConfigError) as err:
        model(built_name, weights=path)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"model.weights={path!r} is for another architecture: ")
    assert problem in message and "set model.weights_strict=false to load the 128 tensors that fit" in message
    assert echoed == []


def test_weights_strict_false_loads_what_fits_and_says_what_was_left(tmp_path, echoed):
    torch.manual_seed(0)
    small = model("resnet20")
    path = saved(tmp_path, small)
    torch.manual_seed(1)
    fresh = model("resnet32")
    torch.manual_seed(1)
    loaded = model("resnet32", weights=path, weights_strict=False)
    assert torch.equal(loaded.state_dict()["layer1.0.conv1.weight"], small.state_dict()["layer1.0.conv1.weight"])
    assert torch.equal(loaded.state_dict()["layer1.3.conv1.weight"], fresh.state_dict()["layer1.3.conv1.weight"])
    assert echoed[0].endswith(f"loaded 128 of the model's 200 tensors from {path}; skipped 72 other tensors left as "
                              "initialised (layer1.3.conv1.weight, layer1.3.bn1.weight, layer1.3.bn1.bias, ...)")


def test_weights_strict_is_a_config_key():
    assert to_config(compose(["model.weights_strict=false"])).model.weights_strict is False
    assert to_config(compose()).model.weights_strict is True


def test_a_file_that_is_not_a_state_dict_is_refused(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], path)
    with pytest.raises(ConfigError, match=r"model.weights=.*list.pt' is not a state_dict: a dict of tensors"):
        model("resnet20", weights=str(path))
