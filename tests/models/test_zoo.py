"""The open model zoo: timm and torchvision models nobody configured, by name, from the API and the command line."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from repl import ReplConfig, apply_replacement
from repl.errors import ConfigError, UnsupportedModelError
from repl.models import build_model
from repl.models.config import ModelConfig

ROOT = Path(__file__).resolve().parents[2]
RUN = ["repl.ratio=0.25", "trainer.max_steps=1", "dataset.batch_size=4", "dataset.num_eval=8", "trainer.progress=false"]


def built(source: str, name: str, size: int = 32, classes: int = 7, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(ModelConfig(source=source, name=name, kwargs=kwargs), num_classes=classes, in_chans=3,
                       image_size=size)


@pytest.mark.parametrize("source, name, family", [
    ("timm", "resnet34", "timm_resnet"), ("timm", "resnet26d", "timm_resnet"), ("timm", "seresnet18", "timm_resnet"),
    ("torchvision", "resnet34", "torchvision_resnet"), ("torchvision", "resnext50_32x4d", "torchvision_resnet"),
])
def test_zoo_models_are_sized_for_the_data_and_take_repl(source, name, family):
    model = built(source, name)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)
    plan = apply_replacement(model, ReplConfig(ratio=0.25, surrogate="full"))
    assert plan.family == family and plan.blocks
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 7)
    out.logsumexp(-1).mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_fixed_size_models_are_built_for_the_data_side():
    vit = built("timm", "vit_tiny_patch16_224", size=48)  # timm: fixed input size, built at 48 px
    assert vit(torch.randn(1, 3, 48, 48)).shape == (1, 7)
    tv_vit = built("torchvision", "vit_b_16", size=32)  # torchvision: image_size from the data
    assert tv_vit(torch.randn(1, 3, 32, 32)).shape == (1, 7)


@pytest.mark.parametrize("source, name, expected, hint", [
    ("timm", "resnet3x", "model.name='resnet3x' is not a timm model", "did you mean resnet34"),
    ("torchvision", "resnet3x", "model.name='resnet3x' is not a torchvision classification model", "did you mean resnet34"),
    ("hub", "resnet34", "model.source='hub' is unknown", "timm, torchvision"),
])
def test_unknown_names_are_refused_naming_the_key(source, name, expected, hint):
    with pytest.raises(ConfigError, match=expected) as err:
        built(source, name)
    assert "\n" not in str(err.value) and hint in str(err.value)  # one line, with what is accepted


def test_a_model_without_a_supported_family_trains_with_backprop_and_refuses_repl_in_one_line():
    model = built("timm", "efficientnet_b0")
    assert apply_replacement(model, ReplConfig(ratio=0)).blocks == []  # plain backprop needs no block family
    with pytest.raises(UnsupportedModelError) as err:
        apply_replacement(model, ReplConfig(ratio=0.25))
    message = str(err.value)
    assert "\n" not in message and "timm.models.efficientnet.EfficientNet" in message
    assert "timm_resnet" in message and "repl=none" in message


def multirun(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "train.py"), "-m", *args, f"hydra.sweep.dir={tmp_path}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)


def summaries(tmp_path: Path) -> dict:
    found = {}
    for path in tmp_path.rglob("summary.json"):
        summary = json.loads(path.read_text())
        found[summary["model"]] = summary
    return found


@pytest.mark.slow
@pytest.mark.parametrize("source, names", [
    ("timm", ("resnet34", "resnet26d", "convnext_atto", "swin_tiny_patch4_window7_224")),
    ("torchvision", ("resnet34", "resnext50_32x4d")),
])
def test_zoo_models_train_with_repl_from_the_command_line(tmp_path, source, names):
    result = multirun(tmp_path, f"model={source}", f"model.name={','.join(names)}", *RUN)
    assert result.returncode == 0, result.stderr[-3000:]
    found = summaries(tmp_path)
    assert sorted(found) == sorted(names)
    for name, summary in found.items():
        assert summary["status"] == "completed" and summary["model_source"] == source and summary["method"] == "repl"
        assert summary["plan"]["blocks"] and summary["params"]["replaced"] > 0, name


@pytest.mark.slow
def test_an_unsupported_zoo_model_is_refused_in_one_line_from_the_command_line(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "train.py"), "model=timm", "model.name=efficientnet_b0", *RUN,
                             f"hydra.run.dir={tmp_path}"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "EfficientNet" in lines[0] and "Traceback" not in result.stderr
    assert not (tmp_path / "checkpoints").exists()
