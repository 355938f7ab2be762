"""repl.select=similarity: block scores (weight, cka), the plan that maximises them under the plan rules."""
import copy
import json

import pytest
import torch
import torch.distributed as dist
from torch import nn

from repl import apply_replacement
from repl.errors import ConfigError
from repl.families import BlockInfo, discover_blocks, get_module
from repl.method.config import ReplConfig
from repl.method.plan import Plan, considered, make_plan
from repl.method.similarity import block_scores, linear_cka, unbiased_hsic
from repl.models.cifar_resnet import CifarResNet


def inputs(count: int = 2, batch: int = 8, side: int = 16, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, 3, side, side, generator=g) for _ in range(count)]


def cka(x: torch.Tensor, y: torch.Tensor) -> float:
    k, l = x.flatten(1).double() @ x.flatten(1).double().T, y.flatten(1).double() @ y.flatten(1).double().T
    return linear_cka(float(unbiased_hsic(k, l)), float(unbiased_hsic(k, k)), float(unbiased_hsic(l, l)))


def test_linear_cka_is_invariant_to_rotation_and_scale_and_low_for_unrelated():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 10, generator=g)
    q, _ = torch.linalg.qr(torch.randn(10, 10, generator=g, dtype=torch.float64))
    assert cka(x, x) == pytest.approx(1.0, abs=1e-12)
    assert cka(x, 3 * x.double() @ q) == pytest.approx(1.0, abs=1e-9)  # CKA ignores orthogonal maps and scale
    assert abs(cka(x, torch.randn(64, 10, generator=g))) < 0.2  # independent: the unbiased estimate is near 0
    assert linear_cka(0.5, 0.0, 1.0) == 0.0  # a constant representation has nothing to compare


def test_unbiased_hsic_matches_its_formula_written_out():
    """Song et al. 2012 eq. 5 with explicit loops over i != j, on a 5-sample case."""
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(5, 3, generator=g, dtype=torch.float64), torch.randn(5, 2, generator=g, dtype=torch.float64)
    k, l = x @ x.T, y @ y.T
    n = 5
    kt = [[0.0 if i == j else float(k[i, j]) for j in range(n)] for i in range(n)]
    lt = [[0.0 if i == j else float(l[i, j]) for j in range(n)] for i in range(n)]
    trace = sum(kt[i][j] * lt[j][i] for i in range(n) for j in range(n))
    total = sum(map(sum, kt)) * sum(map(sum, lt)) / ((n - 1) * (n - 2))
    cross = 2 / (n - 2) * sum(sum(kt[i][m] * lt[m][j] for m in range(n)) for i in range(n) for j in range(n))
    assert float(unbiased_hsic(k, l)) == pytest.approx((trace + total - cross) / (n * (n - 3)), rel=1e-10)


def test_weight_similarity_picks_the_block_whose_neighbours_are_equal():
    torch.manual_seed(0)
    model = CifarResNet(32)  # 15 blocks, stages of 5; blocks 6 and 8 are plain blocks of stage 2
    get_module(model, "layer2.3").load_state_dict(get_module(model, "layer2.1").state_dict())
    plan = apply_replacement(model, ratio=0.07, select="similarity", boundary="allow")  # k = 1
    assert plan.blocks == [7]
    assert plan.scores[7] == pytest.approx(1.0)
    assert max(v for i, v in plan.scores.items() if i != 7) < 0.9


def test_cka_similarity_picks_the_block_that_is_the_identity():
    """A BasicBlock whose last BatchNorm is zero computes relu(0 + x) = x on its (non-negative) input: CKA 1."""
    torch.manual_seed(0)
    model = CifarResNet(20)
    with torch.no_grad():
        bn = get_module(model, "layer3.1").bn2
        bn.weight.zero_()
        bn.bias.zero_()
    plan = apply_replacement(model, ratio=0.1, select="similarity", similarity="cka", boundary="allow", inputs=inputs())
    assert plan.blocks == [7]
    assert plan.scores[7] == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("measure", ["weight", "cka"])
def test_same_model_same_plan_and_scores(measure):
    torch.manual_seed(0)
    model = CifarResNet(20)
    copies = [copy.deepcopy(model) for _ in range(2)]
    plans = [apply_replacement(m, ratio=0.34, select="similarity", similarity=measure, boundary="allow",
                               inputs=inputs() if measure == "cka" else None) for m in copies]
    assert plans[0].blocks == plans[1].blocks and plans[0].scores == plans[1].scores
    assert set(plans[0].scores) == {i for i, ok in enumerate(considered(discover_blocks(model))) if ok}


def test_cka_scoring_runs_in_eval_and_restores_each_modules_mode():
    model = CifarResNet(20).train()
    get_module(model, "layer1.0").eval()  # a mixed state, which model.train(True) afterwards would not restore
    seen = []
    model.layer2.register_forward_pre_hook(lambda module, args: seen.append(module.training))
    block_scores(model, discover_blocks(model), "cka", inputs(1))
    assert seen == [False]
    assert model.training and not get_module(model, "layer1.0").training and get_module(model, "layer1.1").training
    assert all(not any(m._forward_hooks.values()) for m in get_module(model, "layer1").children())


def toy_blocks(kinds):
    """Blocks of one shape; a block of kind 'attn' has other tensor names, so fusion pairs it with no conv block."""
    out = []
    for i, kind in enumerate(kinds):
        shapes = (("conv.weight", (8, 8, 3, 3)),) if kind == "conv" else (("attn.weight", (8, 8)),)
        out.append(BlockInfo(i, f"blocks.{i}", "toy", kind, 8, 8, 1, False, shapes))
    return out


def test_the_plan_keeps_every_rule_whatever_the_scores():
    kinds = ["conv"] * 6 + ["attn"] + ["conv"] * 5  # blocks 5, 6, 7 cannot be paired with both neighbours
    blocks = toy_blocks(kinds)
    allowed = considered(blocks)
    # scores that tempt every rule: first/last and the unpaired blocks highest, adjacent pairs next
    scores = {i: (100.0 if not allowed[i] else 10.0 * (i in (2, 3, 9, 10)) + 0.01 * i) for i in range(12)}
    for k_ratio in (0.09, 0.17, 0.25, 0.34):
        plan = make_plan(blocks, ReplConfig(ratio=k_ratio, select="similarity"), lambda: scores)
        chosen = plan.blocks
        assert len(chosen) == round(k_ratio * 12)
        assert all(allowed[i] for i in chosen)  # never first, last or an unpaired block
        assert all(b - a >= 2 for a, b in zip(chosen, chosen[1:]))  # never adjacent
        assert set(plan.scores) == {i for i in range(12) if allowed[i]}
    best_two = make_plan(blocks, ReplConfig(ratio=0.17, select="similarity"), lambda: scores).blocks
    assert best_two == [3, 10]  # of each tempting adjacent pair the higher-indexed (0.01 * i) one
    tied = make_plan(blocks, ReplConfig(ratio=0.09, select="similarity"), lambda: {i: 1.0 for i in range(12)}).blocks
    assert tied == [1]  # ties go to the lowest index


def test_boundary_avoid_comes_before_the_score():
    torch.manual_seed(0)
    model = CifarResNet(32)
    blocks = discover_blocks(model)
    scores = {i: float(i == 5) for i in range(len(blocks))}  # block 5 is a stage's first block: not preferred
    assert make_plan(blocks, ReplConfig(ratio=0.07, select="similarity"), lambda: scores).blocks != [5]
    assert make_plan(blocks, ReplConfig(ratio=0.07, select="similarity", boundary="allow"), lambda: scores).blocks == [5]


def test_scores_are_recorded_in_the_plan_and_survive_json():
    model = CifarResNet(20)
    plan = apply_replacement(model, ratio=0.25, select="similarity")
    assert plan.scores and "scores (similarity=weight" in plan.describe()
    back = Plan.from_dict(json.loads(json.dumps(plan.to_dict())))  # summary.json turns the keys into strings
    assert back.scores == plan.scores and back.same_as(plan)
    assert apply_replacement(CifarResNet(20), ratio=0.25).scores is None


def test_an_older_plan_without_the_new_switches_still_resumes():
    plan = apply_replacement(CifarResNet(20), ratio=0.25)
    saved = plan.to_dict()
    for key in ("init", "similarity"):
        del saved["settings"][key]
    saved.pop("scores")
    assert Plan.from_dict(saved).same_as(plan)


def test_mistakes_are_refused_in_one_line():
    with pytest.raises(ConfigError, match=r"repl\.similarity=cka scores blocks on data"):
        apply_replacement(CifarResNet(20), select="similarity", similarity="cka")
    with pytest.raises(ConfigError, match=r"repl\.similarity=cka is only used with repl\.select=similarity"):
        ReplConfig(similarity="cka").validate()
    with pytest.raises(ConfigError, match=r"repl\.similarity='cos'"):
        ReplConfig(select="similarity", similarity="cos").validate()
    with pytest.raises(ConfigError, match="batches of 4 examples or more"):
        apply_replacement(CifarResNet(20), select="similarity", similarity="cka", inputs=inputs(batch=3))
    with torch.device("meta"):
        meta = CifarResNet(20)
    with pytest.raises(ConfigError, match="meta device"):
        apply_replacement(meta, select="similarity")
    with pytest.raises(ConfigError, match=r"repl\.ratio=0\.9"):  # the ratio is checked before any input is read
        apply_replacement(CifarResNet(20), ratio=0.9, select="similarity", similarity="cka", inputs=lambda: 1 / 0)


def test_drop_and_freeze_get_the_blocks_repl_would_replace():
    torch.manual_seed(0)
    model = CifarResNet(20)
    plans = [apply_replacement(copy.deepcopy(model), method=m, ratio=0.34, select="similarity", similarity="cka",
                               inputs=inputs()) for m in ("repl", "drop", "freeze")]
    assert plans[0].blocks == plans[1].blocks == plans[2].blocks


def test_cka_scores_are_summed_over_an_initialized_process_group(tmp_path):
    """One gloo process: the all-reduce path runs and leaves the scores as they are."""
    model = CifarResNet(20)
    blocks = discover_blocks(model)
    alone = block_scores(model, blocks, "cka", inputs(1))
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        grouped = block_scores(model, blocks, "cka", inputs(1))
    finally:
        dist.destroy_process_group()
    assert grouped == alone


def test_a_cli_run_scores_on_training_batches_and_records_the_scores_in_summary_json(tmp_path):
    from repl.config import compose, to_config
    from repl.run import train

    tiny = ["model=resnet20", "dataset.num_train=128", "dataset.num_eval=64", "dataset.batch_size=32",
            "dataset.image_size=16", "trainer.progress=false", "trainer.max_steps=1", "trainer.timing_warmup=0"]
    train(to_config(compose(tiny + ["repl.select=similarity", "repl.similarity=cka", "repl.boundary=allow"])), tmp_path)
    plan = json.loads((tmp_path / "summary.json").read_text())["plan"]
    assert plan["settings"]["similarity"] == "cka" and plan["scores"]
    scores = Plan.from_dict(plan).scores
    assert scores == {int(i): v for i, v in plan["scores"].items()}
    again = make_plan(discover_blocks(CifarResNet(20)), ReplConfig(select="similarity", similarity="cka", boundary="allow"),
                      lambda: scores)
    assert plan["blocks"] == again.blocks  # the recorded scores are the ones the blocks were chosen by


def test_scoring_inputs_leave_the_rng_streams_as_they_were():
    from repl.engine.scoring import scoring_inputs
    from repl.data import build_data
    from repl.config import compose, to_config

    cfg = to_config(compose(["dataset.num_train=128", "dataset.batch_size=16", "dataset.image_size=16"]))
    data = build_data(cfg.dataset, seed=0, device=torch.device("cpu"))
    torch.manual_seed(3)
    before = torch.get_rng_state()
    batches = scoring_inputs(data, count=3)
    assert torch.equal(torch.get_rng_state(), before)
    assert len(batches) == 3 and batches[0].shape == (16, 3, 16, 16)
    first = next(iter(data.train_batches(0)))[0]
    assert torch.equal(first, batches[0])  # epoch 0's own first batch: the run trains on the same order
