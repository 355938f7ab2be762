"""Plan rules (docs/method.md): counts, validity, spread, boundary avoidance, explicit checks, serialisation."""
import json
import re

import pytest
import torchvision

from repl.errors import CheckpointError, ConfigError
from repl.families import BlockInfo, discover_blocks
from repl.method.config import ReplConfig
from repl.method.plan import Plan, make_plan, max_replaceable, planned_blocks, replace_count
from repl.models.cifar_resnet import CifarResNet


def same_shape_blocks(n: int):
    """n blocks with identical shapes (no stage boundary)."""
    shapes = (("conv.weight", (8, 8, 3, 3)),)
    return [BlockInfo(i, f"blocks.{i}", "toy", "basic", 8, 8, 1, False, shapes) for i in range(n)]


@pytest.fixture(scope="module")
def resnet32():
    return discover_blocks(CifarResNet(32))


@pytest.fixture(scope="module")
def resnet50():
    return discover_blocks(torchvision.models.resnet50())


def preferred(blocks):
    """Blocks whose both neighbours have the block's own parameter shapes."""
    return {
        i for i in range(1, len(blocks) - 1)
        if blocks[i - 1].param_shapes == blocks[i].param_shapes == blocks[i + 1].param_shapes
    }


def max_independent(positions):
    """Largest set of pairwise non-adjacent positions (greedy from the left is optimal on a line)."""
    taken = []
    for p in sorted(positions):
        if not taken or p > taken[-1] + 1:
            taken.append(p)
    return len(taken)


def assert_valid(plan: Plan, blocks, k: int):
    n = len(blocks)
    assert len(plan.blocks) == k and plan.blocks == sorted(set(plan.blocks))
    assert all(1 <= i <= n - 2 for i in plan.blocks)
    assert all(b - a >= 2 for a, b in zip(plan.blocks, plan.blocks[1:]))
    assert plan.paths == [blocks[i].path for i in plan.blocks]


def test_max_replaceable_counts(resnet32, resnet50):
    assert max_replaceable(len(resnet32)) == 7
    assert max_replaceable(len(resnet50)) == 7
    assert [max_replaceable(n) for n in (0, 1, 2, 3, 4, 5, 12)] == [0, 0, 0, 1, 1, 2, 5]


def test_count_rounds_half_up():
    assert replace_count(0.25, 10) == 3  # 2.5, which float banker's rounding would make 2
    assert replace_count(0.35, 10) == 4
    assert replace_count(0.1, 15) == 2
    assert replace_count(0.24, 10) == 2
    assert replace_count(0.0, 54) == 0


@pytest.mark.parametrize("select", ["uniform", "random"])
@pytest.mark.parametrize("boundary", ["avoid", "allow"])
@pytest.mark.parametrize("n", [3, 4, 9, 15, 16, 54])
def test_every_reachable_count_gives_a_valid_plan(select, boundary, n):
    blocks = same_shape_blocks(n)
    for k in range(1, max_replaceable(n) + 1):
        ratio = k / n
        assert replace_count(ratio, n) == k
        assert_valid(make_plan(blocks, ReplConfig(ratio=ratio, select=select, boundary=boundary)), blocks, k)


def test_real_models_give_valid_plans_up_to_the_maximum(resnet32, resnet50):
    for blocks in (resnet32, resnet50):
        n = len(blocks)
        for k in range(1, max_replaceable(n) + 1):
            for boundary in ("avoid", "allow"):
                assert_valid(make_plan(blocks, ReplConfig(ratio=k / n, boundary=boundary)), blocks, k)


@pytest.mark.parametrize("n", [9, 15, 16, 33, 54])
def test_uniform_hits_segment_centres_when_there_is_room(n):
    blocks = same_shape_blocks(n)
    for k in range(1, n // 3 + 1):
        plan = make_plan(blocks, ReplConfig(ratio=k / n, select="uniform"))
        targets = [(j + 0.5) * n / k - 0.5 for j in range(k)]
        assert all(abs(p - t) <= 0.5 for p, t in zip(plan.blocks, targets)), (k, plan.blocks, targets)


def test_uniform_is_deterministic(resnet32):
    cfg = ReplConfig(ratio=0.3)
    assert make_plan(resnet32, cfg).blocks == make_plan(resnet32, cfg).blocks


def test_random_is_seeded(resnet32):
    plans = {seed: make_plan(resnet32, ReplConfig(ratio=0.3, select="random", seed=seed)).blocks for seed in range(12)}
    assert plans[3] == make_plan(resnet32, ReplConfig(ratio=0.3, select="random", seed=3)).blocks
    assert len({tuple(p) for p in plans.values()}) > 1


@pytest.mark.parametrize("select", ["uniform", "random"])
def test_boundary_avoid_takes_only_preferred_blocks_when_possible(resnet32, resnet50, select):
    for blocks in (resnet32, resnet50):
        good, n = preferred(blocks), len(blocks)
        for k in range(1, max_independent(good) + 1):
            plan = make_plan(blocks, ReplConfig(ratio=k / n, select=select, boundary="avoid"))
            assert set(plan.blocks) <= good, (k, plan.blocks, good)


def test_boundary_avoid_falls_back_to_the_fewest_other_blocks(resnet32, resnet50):
    for blocks in (resnet32, resnet50):
        good, n = preferred(blocks), len(blocks)
        assert max_independent(good) < max_replaceable(n)  # both need the fallback at the maximum
        for k in range(max_independent(good) + 1, max_replaceable(n) + 1):
            plan = make_plan(blocks, ReplConfig(ratio=k / n, boundary="avoid"))
            assert_valid(plan, blocks, k)
            assert len(set(plan.blocks) - good) == k - max_independent(good)


def test_boundary_allow_does_pick_boundary_blocks(resnet32):
    n, good = len(resnet32), preferred(resnet32)
    allowed = make_plan(resnet32, ReplConfig(ratio=4 / n, boundary="allow")).blocks
    avoided = make_plan(resnet32, ReplConfig(ratio=4 / n, boundary="avoid")).blocks
    assert not set(allowed) <= good and set(avoided) <= good


def test_explicit_blocks_are_taken_sorted(resnet32):
    plan = make_plan(resnet32, ReplConfig(select="explicit", blocks=[9, 2, 5]))
    assert plan.blocks == [2, 5, 9] and plan.paths == ["layer1.2", "layer2.0", "layer2.4"]
    assert plan.ratio == pytest.approx(3 / 15)


@pytest.mark.parametrize(
    "indices, reason",
    [([3, 15], "out of range"), ([-1, 3], "out of range"), ([0, 3], "first or last"), ([3, 14], "first or last"),
     ([3, 4], "adjacent"), ([6, 3, 6], "twice"), ([2.5], "integers"), ([True], "integers")],
)
def test_explicit_blocks_are_checked(resnet32, indices, reason):
    with pytest.raises(ConfigError, match=reason) as err:
        make_plan(resnet32, ReplConfig(select="explicit", blocks=indices))
    assert str(err.value).startswith("repl.blocks=") and "\n" not in str(err.value)


def test_too_large_ratio_names_the_key_and_the_largest_allowed(resnet32):
    with pytest.raises(ConfigError) as err:
        make_plan(resnet32, ReplConfig(ratio=0.6))
    message = str(err.value)
    assert message.startswith("repl.ratio=0.6") and "9 of 15" in message and "at most 7" in message
    largest = float(re.search(r"repl\.ratio <= ([0-9.]+)", message).group(1))
    assert replace_count(largest, 15) == 7
    assert len(make_plan(resnet32, ReplConfig(ratio=largest)).blocks) == 7


def test_ratio_that_rounds_to_nothing_is_refused(resnet32):
    with pytest.raises(ConfigError) as err:
        make_plan(resnet32, ReplConfig(ratio=0.01))
    smallest = float(re.search(r"repl\.ratio >= ([0-9.]+)", str(err.value)).group(1))
    assert replace_count(smallest, 15) == 1


def test_bp_and_ratio_zero_give_empty_plans(resnet32):
    for cfg in (ReplConfig(method="bp"), ReplConfig(ratio=0.0), ReplConfig(method="drop", ratio=0.0)):
        plan = make_plan(resnet32, cfg)
        assert plan.blocks == [] and plan.paths == [] and plan.num_blocks == 15


def test_baselines_act_on_the_same_blocks_as_repl(resnet50):
    for select in ("uniform", "random"):
        cfgs = [ReplConfig(method=m, ratio=0.3, select=select, seed=4) for m in ("repl", "drop", "freeze")]
        plans = [make_plan(resnet50, cfg) for cfg in cfgs]
        assert plans[0].blocks == plans[1].blocks == plans[2].blocks


def test_stochastic_depth_covers_the_whole_sequence(resnet32):
    plan = make_plan(resnet32, ReplConfig(method="stochastic_depth", survival_last=0.5))
    assert plan.blocks == list(range(15)) and plan.settings["survival_last"] == 0.5


def test_plan_round_trips_through_json(resnet32):
    plan = make_plan(resnet32, ReplConfig(ratio=0.25, fusion="channel", neighbor_grad=False))
    plan.params_replaced, plan.params_fusion = 1234, 8
    back = Plan.from_dict(json.loads(json.dumps(plan.to_dict())))
    assert back == plan and back.same_as(plan)
    assert back.settings["fusion"] == "channel" and back.settings["neighbor_grad"] is False


def test_same_as_sees_blocks_and_settings(resnet32):
    base = make_plan(resnet32, ReplConfig(ratio=0.25))
    assert not base.same_as(make_plan(resnet32, ReplConfig(ratio=0.3)))
    assert not base.same_as(make_plan(resnet32, ReplConfig(ratio=0.25, fusion="tensor")))
    assert not base.same_as(make_plan(resnet32, ReplConfig(method="drop", ratio=0.25)))
    counted = make_plan(resnet32, ReplConfig(ratio=0.25))
    counted.params_replaced = 99
    assert base.same_as(counted)


def test_from_dict_refuses_an_incomplete_plan(resnet32):
    d = make_plan(resnet32, ReplConfig()).to_dict()
    del d["blocks"]
    with pytest.raises(CheckpointError, match="blocks"):
        Plan.from_dict(d)


def test_describe_names_count_and_paths(resnet32):
    plan = make_plan(resnet32, ReplConfig(ratio=0.25))
    text = plan.describe()
    assert f"{len(plan.blocks)} of 15" in text and all(p in text for p in plan.paths) and "repl" in text
    assert "15" in make_plan(resnet32, ReplConfig(method="bp")).describe()


def test_planned_blocks_refuses_a_plan_for_another_model(resnet32, resnet50):
    plan = make_plan(resnet32, ReplConfig(ratio=0.25))
    assert [b.index for b in planned_blocks(plan, resnet32)] == plan.blocks
    with pytest.raises(ConfigError):
        planned_blocks(plan, resnet50)


# ----------------------------------------------------------------------------- mixed block kinds

def hybrid_resnet():
    """A timm ResNet whose stages mix block kinds: BasicBlock stages, then Bottleneck stages (nobody configured it)."""
    from timm.models.resnet import BasicBlock, Bottleneck, ResNet

    return ResNet(block=(BasicBlock, BasicBlock, Bottleneck, Bottleneck), layers=(2, 2, 3, 2), num_classes=10)


def toy_blocks(kinds):
    """One toy block per kind letter: "c" blocks share a 3x3 conv, "a" blocks a linear layer (no shared name)."""
    shapes = {"c": (("conv.weight", (8, 8, 3, 3)),), "a": (("qkv.weight", (24, 8)),)}
    return [BlockInfo(i, f"blocks.{i}", "toy", k, 8, 8, 1, False, shapes[k]) for i, k in enumerate(kinds)]


def test_mixed_kinds_plan_only_across_neighbours_fusion_can_pair():
    blocks = discover_blocks(hybrid_resnet())
    kinds = [b.kind for b in blocks]
    assert kinds == ["basic"] * 4 + ["bottleneck"] * 5
    change = kinds.index("bottleneck")  # a BasicBlock's 3x3 conv1 cannot pair with a Bottleneck's 1x1 conv1
    for select in ("uniform", "random"):
        plan = make_plan(blocks, ReplConfig(ratio=0.3, select=select, boundary="allow"))
        assert plan.unpaired == [change - 1, change]
        assert not set(plan.blocks) & {change - 1, change} and len(plan.blocks) == replace_count(0.3, 9)
    # the most a plan can take: runs 1..2 and 5..7 of pairable blocks, ceil(2/2) + ceil(3/2) = 3
    assert make_plan(blocks, ReplConfig(ratio=3 / 9)).max_ratio == pytest.approx(3 / 9)
    with pytest.raises(ConfigError, match=r"allows at most 3: 2 inner blocks have a neighbour of another kind"):
        make_plan(blocks, ReplConfig(ratio=4 / 9))
    with pytest.raises(ConfigError, match=rf"block {change} \(layer3.0\) has a neighbour fusion cannot pair"):
        make_plan(blocks, ReplConfig(select="explicit", blocks=[change]))
    assert "not considered" in make_plan(blocks, ReplConfig(ratio=0.2)).describe()


def test_blocks_with_no_tensor_in_common_are_never_paired():
    blocks = toy_blocks("ccccaaaa")
    plan = make_plan(blocks, ReplConfig(ratio=0.25, boundary="allow"))
    assert plan.unpaired == [3, 4] and set(plan.blocks) <= {1, 2, 5, 6}
    assert make_plan(blocks, ReplConfig(select="explicit", blocks=[1, 5])).blocks == [1, 5]


def test_a_single_kind_model_considers_every_inner_block(resnet50):
    plan = make_plan(resnet50, ReplConfig(ratio=0.25, boundary="allow"))
    assert plan.unpaired == [] and plan.max_ratio == max_replaceable(len(resnet50)) / len(resnet50)


def test_mixed_model_trains_with_repl_through_the_api():
    import torch

    from repl import apply_replacement

    torch.manual_seed(0)
    model = hybrid_resnet()
    plan = apply_replacement(model, ratio=0.3)
    assert plan.unpaired == [3, 4] and plan.blocks
    model(torch.randn(2, 3, 32, 32)).logsumexp(-1).mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
