"""repl.start / repl.restore: which phase each epoch is in, the two transitions on a live model, what the Trainer
rebuilds around them (optimizer state by parameter, LR at the same step, EMA), resume across both, and the summary."""
from __future__ import annotations

import copy
import dataclasses
import json

import pytest
import torch

from repl import ReplConfig, apply_replacement
from repl.build import build_run
from repl.config import compose, to_config
from repl.engine import distributed
from repl.engine.checkpoint import load_checkpoint
from repl.engine.config import OptimConfig
from repl.engine.optim import build_optimizer, build_schedule, lr_factor
from repl.engine.phases import carry_state, continue_schedule
from repl.errors import CheckpointError, ConfigError
from repl.export import load_run, trained_model
from repl.families import discover_blocks, get_module
from repl.method.apply import plan_replacement
from repl.method.schedule import Phase, Schedule, replace_planned, restore_surrogates
from repl.method.surrogates import Surrogate
from repl.models.cifar_resnet import CifarResNet
from repl.run import train
from tests import torchrun

# 2 optimizer steps per epoch of 32 images at 8x8: a run of 3 epochs is 6 steps, a few seconds.
TINY = ["trainer.device=cpu", "model=resnet20", "dataset.num_train=64", "dataset.num_eval=32", "dataset.batch_size=32",
        "dataset.image_size=8", "trainer.progress=false", "trainer.log_every=1", "trainer.timing_warmup=1"]
SCHEDULE = ["trainer.epochs=3", "repl.start=1", "repl.restore=1"]  # epoch 1 plain, 2 replaced, 3 restored


def config(*overrides: str):
    return to_config(compose([*TINY, *overrides]))


def surrogates(model) -> list:
    return [path for path, m in model.named_modules() if isinstance(m, Surrogate)]


# ---------------------------------------------------------------------------------------------- the schedule
def test_each_epoch_is_in_the_phase_the_keys_say():
    schedule = Schedule(start=2, restore=1, epochs=6)
    assert [schedule.phase_at(e).value for e in range(6)] == ["backprop"] * 2 + ["method"] * 3 + ["restored"]
    assert schedule.spans() == [(Phase.BACKPROP, 0, 2), (Phase.METHOD, 2, 5), (Phase.RESTORED, 5, 6)]
    assert Schedule(start=0, restore=0, epochs=4).spans() == [(Phase.METHOD, 0, 4)]
    assert not Schedule(0, 0, 4).active and Schedule(0, 1, 4).first is Phase.METHOD
    assert "epochs 1-2" in schedule.describe() and "epoch 6" in schedule.describe()


@pytest.mark.parametrize("overrides, message", [
    (["trainer.epochs=3", "repl.start=2", "repl.restore=1"],
     "repl.start=2 + repl.restore=1 must be less than trainer.epochs=3"),
    (["repl.start=-1"], "repl.start=-1"),
    (["repl.restore=1", "repl.ratio=0"], "repl.restore=1 schedules replaced blocks, and repl.ratio=0 replaces none"),
    (["repl=drop", "repl.start=1"], "repl.start=1 applies to repl.method=repl, not drop"),
    (["repl.start=1", "trainer.checkpointing=true"], "use trainer.checkpointing=false"),
    (["repl.restore=1", "trainer.strategy=fsdp"], "use trainer.strategy=ddp"),
])
def test_a_schedule_the_run_cannot_follow_is_one_line_naming_the_keys(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("+", r"\+")) as info:
        config(*overrides)
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------------------------------------- transitions
def test_start_replaces_exactly_the_planned_blocks_reading_the_trained_neighbours():
    model = CifarResNet(20)
    plan = plan_replacement(model, ReplConfig(ratio=0.25))
    assert plan.blocks and not surrogates(model)  # planned, nothing replaced yet
    with torch.no_grad():  # stands in for the plain-backprop epochs: every weight moved away from its init
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    trained = copy.deepcopy(model)
    blocks = discover_blocks(trained)
    replace_planned(model, plan, ReplConfig(ratio=0.25))
    assert sorted(surrogates(model)) == sorted(plan.paths)
    reference = apply_replacement(trained, ReplConfig(ratio=0.25))  # replacing the trained model from scratch
    assert reference.blocks == plan.blocks and plan.params_replaced == reference.params_replaced > 0
    assert model.state_dict().keys() == trained.state_dict().keys()
    assert all(torch.equal(v, trained.state_dict()[k]) for k, v in model.state_dict().items())
    same_shape = 0
    for index, path in zip(plan.blocks, plan.paths):
        synthesized = get_module(model, path).synthesized()
        assert synthesized.keys() == get_module(trained, path).synthesized().keys()
        assert all(torch.equal(w, get_module(trained, path).synthesized()[k]) for k, w in synthesized.items())
        prev, nxt = (get_module(model, blocks[index + d].path).conv1.weight for d in (-1, 1))
        if prev.shape == nxt.shape == synthesized["conv1.weight"].shape:  # 0.5 * trained prev + 0.5 * trained next
            same_shape += 1
            assert torch.equal(synthesized["conv1.weight"], 0.5 * prev + 0.5 * nxt)
    assert same_shape  # layer1.1 (the other planned block, layer3.0, sits at a stage boundary: tiled)


def test_restore_keeps_the_function_exactly_and_the_surviving_tensors():
    model = CifarResNet(20)
    apply_replacement(model, ReplConfig(ratio=0.25, fusion="channel"))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    model.train()(torch.randn(8, 3, 16, 16))  # BatchNorm statistics moved
    model.eval()
    x = torch.randn(4, 3, 16, 16)
    before = dict(model.named_parameters())
    synthesized = {f"{path}.{name}" for path in surrogates(model) for name in get_module(model, path).synthesized()}
    with torch.no_grad():
        expected = model(x)
        assert restore_surrogates(model) == 2 and not surrogates(model)
        # materialize copies the synthesized tensors bit for bit and the body runs the same kernels on them
        assert torch.equal(model(x), expected)
    after = dict(model.named_parameters())
    kept = [name for name in after if name in before]
    assert all(after[n] is before[n] for n in kept)  # neighbours and the bodies' own tensors: the same objects
    new = [n for n in after if all(after[n] is not p for p in before.values())]
    assert set(new) == synthesized and len(new) == 6  # the baked synthesized weights (conv1, bn1 of 2 blocks)
    assert all(after[n].requires_grad for n in new)


def test_optimizer_state_follows_surviving_parameters_and_the_lr_continues_at_its_step():
    cfg = OptimConfig(name="adamw", lr=0.01, warmup_epochs=1.0)
    a, b = torch.nn.Linear(3, 3), torch.nn.Linear(3, 3)
    old = build_optimizer(cfg, torch.nn.Sequential(a, b), torch.device("cpu"))
    old_schedule = build_schedule(cfg, old, total_steps=20, steps_per_epoch=4)
    for _ in range(7):
        a(torch.randn(2, 3)).sum().add(b(torch.randn(2, 3)).sum()).backward()
        old.step()
        old_schedule.step()
    c = torch.nn.Linear(3, 3)  # `b` is gone, `c` is new
    new = build_optimizer(cfg, torch.nn.Sequential(a, c), torch.device("cpu"))
    assert carry_state(old, new) == 2
    assert new.state[a.weight] is old.state[a.weight] and c.weight not in new.state
    schedule = continue_schedule(build_schedule(cfg, new, total_steps=20, steps_per_epoch=4), step=7)
    assert schedule.last_epoch == old_schedule.last_epoch == 7
    assert [g["lr"] for g in new.param_groups] == [g["lr"] for g in old.param_groups] == \
        [0.01 * lr_factor(cfg, 7, 20, 4)] * len(new.param_groups)
    new.step()  # as the Trainer does: the optimizer steps, then its schedule
    schedule.step()
    assert new.param_groups[0]["lr"] == 0.01 * lr_factor(cfg, 8, 20, 4)


# ---------------------------------------------------------------------------------------------- the Trainer
def test_the_trainer_changes_phase_at_epoch_boundaries_and_carries_the_momentum(tmp_path):
    cfg = config(*SCHEDULE, "trainer.ema_decay=0.9")
    trainer = build_run(cfg, tmp_path, distributed.setup("cpu")).trainer
    model = trainer.model
    assert trainer.phase is Phase.BACKPROP and not surrogates(model)
    trainer.run_steps(2)  # epoch 1: plain backprop
    neighbour = model.layer1[0].conv1.weight  # a neighbour of the planned block layer1.1
    momentum = trainer.optimizer.state[neighbour]["momentum_buffer"]
    trainer.run_steps(1)  # epoch 2 begins: the planned blocks are replaced, then one step
    assert trainer.phase is Phase.METHOD and sorted(surrogates(model)) == sorted(trainer.plan.paths)
    assert sorted(surrogates(trainer.ema.module)) == sorted(trainer.plan.paths)  # the EMA's copy too
    assert trainer.optimizer.state[neighbour]["momentum_buffer"] is momentum  # carried, updated in place
    assert trainer.optimizer.param_groups[0]["lr"] == cfg.optim.lr * lr_factor(cfg.optim, 3, 6, 0)  # no restart
    fusion = [p for path in trainer.plan.paths for p in get_module(model, path).fusion.parameters()]
    assert fusion and all(p in trainer.optimizer.state for p in fusion)  # new parameters are optimized
    trainable_method = sum(p.numel() for p in model.parameters() if p.requires_grad)
    trainer.run_steps(2)  # epoch 3 begins: restored
    assert trainer.phase is Phase.RESTORED and not surrogates(model) and not surrogates(trainer.ema.module)
    assert not any(p in trainer.optimizer.state for p in fusion)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) > trainable_method
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["progress"]["phase"] == "method"  # end of epoch 2


def test_resume_across_both_transitions_is_bit_identical_and_the_summary_reports_the_phases(tmp_path):
    overrides = [*SCHEDULE, "trainer.ema_decay=0.9"]
    whole = train(config(*overrides), tmp_path / "whole")
    # Interrupted before the replacement (2), after it (3), before the restore (4), after it (5), resumed each time.
    for steps in (2, 3, 4, 5, 6):
        split = train(config(*overrides, f"trainer.max_steps={steps}"), tmp_path / "split")
        assert split["steps_done"] == steps
    a, b = (load_checkpoint(tmp_path / d / "checkpoints" / "last.pt") for d in ("whole", "split"))
    for part in ("model", "ema"):
        assert a[part].keys() == b[part].keys()
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part]), part
    assert a["progress"]["phase"] == "restored"
    exported = trained_model(*load_run(tmp_path / "whole"))  # export rebuilds the checkpoint's phase: baked blocks
    assert not surrogates(exported) and exported.state_dict().keys() == a["model"].keys()
    schedule = whole["schedule"]
    assert [(p["phase"], p["epoch"], p["step"]) for p in schedule["entered"]] == \
        [("backprop", 0, 0), ("method", 1, 2), ("restored", 2, 4)]
    assert json.loads((tmp_path / "split" / "summary.json").read_text())["schedule"]["entered"] == schedule["entered"]
    counts = {p["phase"]: p["params"]["trainable"] for p in schedule["entered"]}
    assert whole["params"]["phase"] == "method" and whole["params"]["trainable"] == counts["method"]
    assert counts["method"] < counts["restored"] < counts["backprop"]  # lite bodies keep one conv of two
    assert whole["params"]["replaced"] == counts["backprop"] - counts["method"] + whole["params"]["fusion"]


@pytest.mark.slow  # two torchrun processes and one more run: tens of seconds
def test_two_ddp_processes_follow_the_schedule_as_one_process(tmp_path):
    """DDP is wrapped again around each phase's parameters (the fusion coefficients, then the baked weights are
    all-reduced). ViT-T has no batch statistics, so 2 x B/2 and 1 x B agree up to the all-reduce's summation
    order (tests/test_ddp.py: ~2e-6 relative after 4 steps; bound 1e-4)."""
    args = ["model=vit_t", "dataset.image_size=16", "dataset.num_train=16", "dataset.num_eval=16",
            "dataset.batch_size=16", *SCHEDULE, "trainer.deterministic=true", "trainer.device=cpu",
            "trainer.progress=false"]
    for name, nproc in (("two", 2), ("one", None)):
        done = torchrun.train(args, tmp_path / name, nproc=nproc, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
    two, one = (load_checkpoint(tmp_path / d / "checkpoints" / "last.pt") for d in ("two", "one"))
    assert two["progress"]["phase"] == "restored" and two["model"].keys() == one["model"].keys()
    a, b = (torch.cat([s["model"][k].flatten().double() for k in sorted(s["model"])]) for s in (two, one))
    assert (a - b).norm() / b.norm() < 1e-4


def test_a_resume_that_would_go_back_a_phase_is_refused(tmp_path):
    train(config(*SCHEDULE, "trainer.max_steps=5"), tmp_path)  # stopped inside the restored epoch 3
    with pytest.raises(CheckpointError, match="never goes back a phase"):
        train(config("trainer.epochs=4", "repl.start=1", "repl.restore=1"), tmp_path)  # epoch 3 would be 'method'


@pytest.mark.parametrize("measure", ["weight", "cka"])
def test_similarity_after_a_warmup_scores_the_trained_weights(tmp_path, measure):
    """repl.select=similarity with repl.start: the blocks are scored when the method phase begins, on the weights the
    plain-backprop epoch trained (cka: on that epoch's training batches), not on the initial ones."""
    cfg = config("trainer.epochs=2", "repl.start=1", "repl.select=similarity", f"repl.similarity={measure}")
    trainer = build_run(cfg, tmp_path, distributed.setup("cpu")).trainer
    at_build = trainer.plan
    trainer.run_steps(2)  # the warm-up epoch
    warmed = copy.deepcopy(trainer.model)
    inputs = None
    if measure == "cka":
        from repl.engine.scoring import scoring_inputs
        inputs = scoring_inputs(trainer.data, epoch=1)
    expected = plan_replacement(warmed, cfg.repl, inputs=inputs)
    trainer.run_steps(1)  # the method phase begins: planned now
    assert trainer.phase is Phase.METHOD
    assert trainer.plan.blocks == expected.blocks and trainer.plan.scores == expected.scores
    assert trainer.plan.scores != at_build.scores  # scored on other weights than the build-time plan's
    assert sorted(surrogates(trainer.model)) == sorted(trainer.plan.paths)


def test_a_run_planned_after_its_warmup_resumes_bit_identically_with_its_plan(tmp_path):
    overrides = ["trainer.epochs=3", "repl.start=1", "repl.select=similarity"]
    whole = train(config(*overrides), tmp_path / "whole")
    for steps in (2, 3, 6):  # before the plan is made, just after, and to the end
        train(config(*overrides, f"trainer.max_steps={steps}"), tmp_path / "split")
    a, b = (load_checkpoint(tmp_path / d / "checkpoints" / "last.pt") for d in ("whole", "split"))
    assert a["plan"] == b["plan"] and a["plan"]["scores"]
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert whole["plan"] == a["plan"]  # the summary reports the plan chosen after the warm-up


def test_start_with_the_fitted_init_keeps_the_function_where_the_neighbours_span_the_block():
    """repl.start with repl.init=lstsq: a block whose every synthesizable tensor is 0.3 * prev + 0.7 * next (the
    neighbours' same-named tensors) is fitted exactly, so a `full` surrogate computes what the block did and the
    eval-mode outputs are equal before and after the switch (to the float32 rounding of a*P + b*N: ~1e-7 relative
    per weight, below 1e-5 at the logits of a 20-layer net). With the default 0.5/0.5 they differ."""
    cfg = ReplConfig(ratio=0.1, select="explicit", blocks=[1], boundary="allow", surrogate="full")
    x = torch.randn(4, 3, 8, 8)
    outputs = {}
    for init in ("half", "lstsq"):
        torch.manual_seed(0)
        model = CifarResNet(20).eval()
        blocks = discover_blocks(model)
        block, prev, nxt = (get_module(model, blocks[i].path) for i in (1, 0, 2))
        with torch.no_grad():
            for name, p in block.named_parameters():
                if blocks[1].may_synthesize(name):
                    p.copy_(0.3 * prev.get_parameter(name) + 0.7 * nxt.get_parameter(name))
        before = model(x)
        run_cfg = dataclasses.replace(cfg, init=init)
        replace_planned(model, plan_replacement(model, run_cfg), run_cfg)
        outputs[init] = (before, model(x))
    before, after = outputs["lstsq"]
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)
    before, after = outputs["half"]
    assert not torch.allclose(after, before, rtol=1e-3, atol=1e-3)
