"""The plug-in: mm ResNet backbones in the block registry, ReplResNet from plain mm configs, the builders."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("mmdet", reason="needs the openmmlab extra (make openmmlab); `make test` installs it")
pytest.importorskip("mmseg", reason="needs the openmmlab extra (make openmmlab); `make test` installs it")

from mmdet.registry import MODELS as MMDET_MODELS
from mmengine.config import Config
from mmseg.registry import MODELS as MMSEG_MODELS

from repl import ReplConfig, apply_replacement, bake
from repl.errors import ConfigError, UnsupportedModelError
from repl.integrations import openmmlab
from repl.method.surrogates import Surrogate

REPO = Path(__file__).resolve().parents[2]
R50 = dict(depth=50, num_stages=4, out_indices=(0, 1, 2, 3), frozen_stages=-1, norm_eval=False, style="pytorch")


def _trainable(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def _build(registry, seed: int, **cfg):
    torch.manual_seed(seed)
    return registry.build(cfg)


def test_repl_resnet_at_ratio_zero_is_the_stock_resnet():
    stock = _build(MMDET_MODELS, 0, type="mmdet.ResNet", **R50)
    stock.init_weights()
    repl = _build(MMDET_MODELS, 0, type="mmdet.ReplResNet", repl=dict(ratio=0.0), **R50)
    assert repl.repl_plan.method == "bp"
    assert stock.state_dict().keys() == repl.state_dict().keys()
    for key, value in stock.state_dict().items():
        assert torch.equal(value, repl.state_dict()[key]), key
    x = torch.randn(1, 3, 64, 64)
    for a, b in zip(stock(x), repl(x)):
        assert torch.equal(a, b)


def test_repl_resnet_replaces_blocks_of_its_own_sequence_and_bakes():
    stock = _build(MMSEG_MODELS, 0, type="mmseg.ResNetV1c", **R50)
    model = _build(MMSEG_MODELS, 0, type="mmseg.ReplResNetV1c", repl=dict(ratio=0.25), **R50)
    plan = model.repl_plan
    assert len(plan.blocks) == 4  # round(0.25 * 16)
    assert all(isinstance(model.get_submodule(p), Surrogate) for p in plan.paths)
    assert _trainable(model) < _trainable(stock)
    assert _trainable(stock) - _trainable(model) == plan.params_replaced - plan.params_fusion
    model.eval()
    x = torch.randn(1, 3, 64, 64)
    before = model(x)
    after = bake(model)(x)
    for a, b in zip(before, after):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)  # float32 re-association of the same sums


def test_detector_blocks_are_listed_under_backbone_and_follow_the_method():
    model = openmmlab.build_detector("faster_rcnn_r50_fpn", num_classes=3, in_chans=3, image_size=64)
    before = _trainable(model.backbone)
    plan = apply_replacement(model, ReplConfig(ratio=0.25, fusion="channel"))
    assert plan.paths and all(p.startswith("backbone.layer") for p in plan.paths)
    assert _trainable(model.backbone) == before - plan.params_replaced + plan.params_fusion
    assert _trainable(model.backbone) < before
    assert model.roi_head.bbox_head.num_classes == 3


def test_blocks_the_lite_operator_cannot_carry_are_refused():
    model = _build(MMDET_MODELS, 0, type="mmdet.ResNet", with_cp=True, **R50)
    with pytest.raises(UnsupportedModelError, match="backbone|layer1.0 uses cp"):
        apply_replacement(model, ReplConfig(ratio=0.25))
    apply_replacement(model, ReplConfig(ratio=0.0))  # plain backprop still trains it


@pytest.mark.parametrize("config,registry", [("faster_rcnn_r50_fpn_repl_1x_coco.py", MMDET_MODELS),
                                             ("deeplabv3_r50_repl_512x1024_80k_cityscapes.py", MMSEG_MODELS)])
def test_plain_mm_configs_use_the_plugin_through_custom_imports(config, registry):
    cfg = Config.fromfile(str(REPO / "configs" / "mm" / config))
    cfg.model.backbone.init_cfg = None  # no download here; the recipe's pretrained backbone otherwise
    cfg.model.pop("pretrained", None)
    model = registry.build(cfg.model)
    assert len(model.backbone.repl_plan.blocks) == 4
    assert sum(isinstance(m, Surrogate) for m in model.backbone.modules()) == 4


def test_mm_checkpoints_with_metadata_load_under_weights_only_torch(tmp_path):
    source = _build(MMDET_MODELS, 1, type="mmdet.ResNet", **R50)
    path = tmp_path / "backbone.pth"
    torch.save({"state_dict": source.state_dict(), "meta": {"epoch": np.int64(12), "hist": np.zeros(3)}}, path)
    model = _build(MMDET_MODELS, 2, type="mmdet.ReplResNet", repl=dict(ratio=0.25),
                   init_cfg=dict(type="Pretrained", checkpoint=str(path)), **R50)
    kept = model.conv1.weight  # the stem is never replaced: it must hold the checkpoint's weights
    assert torch.equal(kept, source.conv1.weight)


def test_importing_the_plugin_leaves_mmengine_checkpoint_loading_as_it_was(tmp_path):
    """Only the places where RepL loads mm weights load metadata-carrying checkpoints; the global loaders
    stay mmengine's own (weights-only under torch >= 2.6), before, between and after those places."""
    from mmengine.runner import CheckpointLoader

    from repl.integrations.mm_checkpoints import full_checkpoint_loading

    path = tmp_path / "with_meta.pth"
    torch.save({"state_dict": {"w": torch.ones(2)}, "meta": {"epoch": np.int64(3)}}, path)
    with pytest.raises(Exception, match="[Ww]eights only load failed"):
        CheckpointLoader.load_checkpoint(str(path))
    with full_checkpoint_loading():
        with full_checkpoint_loading():  # nested: the inner exit keeps the outer one's loaders
            pass
        assert CheckpointLoader.load_checkpoint(str(path))["meta"]["epoch"] == 3
    with pytest.raises(Exception, match="[Ww]eights only load failed"):
        CheckpointLoader.load_checkpoint(str(path))


def test_without_the_extra_the_cli_says_how_to_install_it(tmp_path):
    code = ("import sys; sys.modules['mmdet'] = None; sys.argv = ['train.py', 'task=detection', "
            f"'hydra.run.dir={tmp_path}', 'hydra.output_subdir=null']; from repl.cli import main; main()")
    result = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, cwd=REPO,
                            timeout=300)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "make openmmlab" in lines[0] and "Traceback" not in result.stderr


def test_model_kwargs_reach_the_mm_config():
    model = openmmlab.build_detector("faster_rcnn_r50_fpn", num_classes=2, options={"model.rpn_head.feat_channels": 64})
    assert model.rpn_head.feat_channels == 64 and model.roi_head.bbox_head.num_classes == 2
    with pytest.raises(ConfigError, match="model.kwargs.config"):
        openmmlab.build_segmentor("deeplabv3_r50", num_classes=19, config="no/such/config.py")
    with pytest.raises(ConfigError, match="3-channel"):
        openmmlab.build_segmentor("deeplabv3_r50", num_classes=19, in_chans=1)
