"""LayerDrop (repl/baselines/layerdrop.py): found by the registry with no other edit, skips whole blocks per
training batch with probability repl.ratio, runs every block unscaled at eval, keeps every parameter."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

import repl.baselines.layerdrop as layerdrop
from repl import apply_replacement
from repl.config import compose, to_config
from repl.errors import ConfigError
from repl.families import discover_blocks, get_module
from repl.method.config import ReplConfig
from repl.method.registry import get_method
from repl.models.cifar_resnet import CifarResNet
from tests.method.test_transformers import built

ROOT = Path(__file__).resolve().parents[2]


def test_the_record_is_found_from_its_file_alone():
    assert get_method("layerdrop") is layerdrop.METHOD
    assert "layerdrop" not in (ROOT / "repl" / "baselines" / "__init__.py").read_text()


def test_the_yaml_composes_and_validates():
    cfg = to_config(compose(["repl=layerdrop", "repl.ratio=0.3"]))
    assert (cfg.repl.method, cfg.repl.ratio) == ("layerdrop", 0.3)
    with pytest.raises(ConfigError, match=r"repl.select=random applies to repl.method=.*, not layerdrop"):
        to_config(compose(["repl=layerdrop", "repl.select=random"]))
    with pytest.raises(ConfigError, match=r"trainer.accumulate=2 .* per micro-batch"):
        to_config(compose(["repl=layerdrop", "trainer.accumulate=2"]))  # a skip drawn per micro-batch is not per batch
    to_config(compose(["repl=layerdrop", "repl.ratio=0", "trainer.accumulate=2"]))  # ratio 0: nothing skips


def layerdropped(p: float):
    torch.manual_seed(0)
    model = CifarResNet(20)
    reference = copy.deepcopy(model)
    plan = apply_replacement(model, method="layerdrop", ratio=p)
    return model, reference, plan, discover_blocks(reference)


def test_plan_covers_every_block_keeps_every_parameter_and_describes_itself():
    model, reference, plan, blocks = layerdropped(0.3)
    assert plan.method == "layerdrop" and plan.blocks == list(range(9)) and plan.ratio == 0.3
    assert plan.params_replaced == plan.params_fusion == 0 and plan.skips_blocks  # DDP: find_unused_parameters
    assert all(isinstance(get_module(model, b.path), layerdrop.LayerDropBlock) for b in blocks)
    assert list(model.state_dict()) == list(reference.state_dict())
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == sum(p.numel() for p in reference.parameters())
    assert plan.describe() == ("plan: method=layerdrop on all 9 cifar_resnet blocks, each skipped with probability 0.3 "
                               "per training batch (repl.ratio); every block runs at eval")


def test_ratio_zero_is_plain_backprop():
    model, reference, plan, _ = layerdropped(0.0)
    assert plan.method == "bp" and plan.blocks == [] and not plan.skips_blocks
    assert list(model.named_modules()) and type(model.layer1[0]) is type(reference.layer1[0])


def count_branch_calls(model, blocks):
    calls = {b.path: 0 for b in blocks}
    for b in blocks:
        get_module(model, b.path).conv1.register_forward_hook(lambda *_, p=b.path: calls.__setitem__(p, calls[p] + 1))
    return calls


def test_eval_runs_every_block_unscaled_and_training_skips_each_at_the_rate():
    p, steps = 0.3, 300
    model, reference, _, blocks = layerdropped(p)
    calls = count_branch_calls(model, blocks)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), reference.eval()(x), rtol=0, atol=0)
    assert all(c == 1 for c in calls.values())
    calls = count_branch_calls(model, blocks)
    model.train()
    with torch.no_grad():
        for _ in range(steps):
            model(torch.randn(1, 3, 8, 8))
    sigma = (p * (1 - p) / steps) ** 0.5
    for b in blocks:
        assert abs(calls[b.path] / steps - (1 - p)) < 5 * sigma, (b.path, calls[b.path])


def test_the_draws_follow_torchs_seed():
    model, _, _, blocks = layerdropped(0.5)
    model.train()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.manual_seed(7)
        a = model(x)
        torch.manual_seed(7)
        b = model(x)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_a_skipped_block_gets_no_gradient_and_a_transformer_block_takes_keyword_arguments():
    model, x = built("vit")
    reference = copy.deepcopy(model).eval()
    apply_replacement(model, method="layerdrop", ratio=0.5)
    blocks = [m for m in model.modules() if isinstance(m, layerdrop.LayerDropBlock)]
    assert len(blocks) == 6
    tokens = 1 + (32 // 8) ** 2
    mask = torch.zeros(tokens, tokens)
    model.eval()
    with torch.no_grad():  # at eval every block runs its own forward, the mask reaching it
        torch.testing.assert_close(model.forward_features(x, attn_mask=mask), reference.forward_features(x, attn_mask=mask))
    for block in blocks:
        block.p = 1.0  # every block skipped
    model.train()
    out = model.forward_features(x, attn_mask=mask)
    out.sum().backward()
    assert all(p.grad is None for block in blocks for p in block.parameters())


def test_a_tiny_training_run(tmp_path):
    from tests.engine.test_training import run

    summary = run(tmp_path, "repl=layerdrop", "repl.ratio=0.5", "trainer.max_steps=2")
    assert summary["status"] == "completed" and summary["steps_done"] == 2
    assert summary["method"] == "layerdrop" and summary["plan"]["blocks"] == list(range(9))
    assert summary["params"]["trainable"] == summary["params"]["total"] and summary["params"]["replaced"] == 0
