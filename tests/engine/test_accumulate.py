"""trainer.accumulate: k micro-batches per optimizer step give the gradient of the whole batch.

Tolerance: accumulation adds k partial gradient sums where one backward sums all samples at once.
That reorders float32 additions of at most 16 terms per element, a difference of a few ulp
(eps = 1.2e-7) relative to the terms' magnitudes; after two SGD steps at lr 0.1 the weights agree to
rtol 1e-5 / atol 1e-6, far below the change one step makes (asserted).
"""
from __future__ import annotations

import copy
from types import SimpleNamespace

import re

import pytest
import torch
from torch import nn

from repl.build import build_run
from repl.config import TrainConfig, compose, to_config
from repl.engine.config import TaskConfig, TrainerConfig
from repl.engine.distributed import DistInfo
from repl.engine.optim import build_optimizer, build_schedule
from repl.engine.trainer import Trainer
from repl.errors import ConfigError
from repl.method.plan import Plan
from repl.tasks.classification import ClassificationTask
from repl.tasks.lm import LanguageModelTask

CPU = torch.device("cpu")
VOCAB = 11


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(48, 32), nn.ReLU(), nn.Linear(32, 5))  # BatchNorm-free


def tiny_lm() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Embedding(VOCAB, 16), nn.Tanh(), nn.Linear(16, VOCAB))


def trainer(tmp_path, model: nn.Module, task, accumulate: int) -> Trainer:
    cfg = TrainConfig()
    cfg.trainer = TrainerConfig(device="cpu", accumulate=accumulate, progress=False)
    cfg.optim.weight_decay = 0.0
    plan = Plan(method="bp", family="", num_blocks=0, ratio=0.0, blocks=[], paths=[], max_ratio=0.0)
    data = SimpleNamespace(steps_per_epoch=10)
    run = build_run(cfg, tmp_path / f"run{accumulate}", DistInfo(0, 1, 0, CPU), apply=lambda model, cfg: plan,
                    model=model, data=data, task=task)
    return run.trainer


def image_batches(n: int, steps: int = 2):
    gen = torch.Generator().manual_seed(1)
    return [(torch.randn(n, 3, 4, 4, generator=gen), torch.randint(0, 5, (n,), generator=gen)) for _ in range(steps)]


def token_batches(n: int, steps: int = 2):
    gen = torch.Generator().manual_seed(2)
    batches = []
    for _ in range(steps):
        inputs = torch.randint(0, VOCAB, (n, 6), generator=gen)
        targets = torch.randint(0, VOCAB, (n, 6), generator=gen)
        targets[0, 1:] = -100  # padding: the first rows score far fewer tokens than the rest
        targets[1, 3:] = -100
        batches.append((inputs, targets))
    return batches


def train(tmp_path, model, task, accumulate, batches, seed=0):
    t = trainer(tmp_path, model, task, accumulate)
    torch.manual_seed(seed)  # mixup/CutMix draws
    losses = [t.train_step(b) for b in batches]
    return t.model, torch.stack(losses)


def assert_weights_close(a: nn.Module, b: nn.Module, start: nn.Module) -> None:
    for (name, pa), pb, p0 in zip(a.named_parameters(), b.parameters(), start.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6, msg=name)
        assert (pa - p0).abs().max() > 1e-4  # the steps moved every tensor far more than the tolerance


@pytest.mark.parametrize("accumulate,batch", [(2, 8), (4, 8), (4, 10)])  # 10 = 3 + 3 + 2 + 2: uneven micro-batches
@pytest.mark.parametrize("mixing", [{}, {"mixup": 0.8}, {"cutmix": 1.0}, {"mixup": 0.8, "cutmix": 1.0}])
def test_micro_batches_equal_one_batch_of_k_times_the_size(tmp_path, accumulate, batch, mixing):
    task = ClassificationTask(TaskConfig(label_smoothing=0.1, **mixing))
    batches = image_batches(batch)
    whole, whole_loss = train(tmp_path, mlp(), task, 1, batches)
    split, split_loss = train(tmp_path, mlp(), task, accumulate, batches)
    torch.testing.assert_close(split_loss, whole_loss, rtol=1e-5, atol=1e-6)
    assert_weights_close(split, whole, mlp())


@pytest.mark.parametrize("accumulate", [2, 3])
def test_lm_micro_batches_weigh_scored_tokens_not_rows(tmp_path, accumulate):
    task = LanguageModelTask(TaskConfig(name="lm"))
    batches = token_batches(6)
    whole, whole_loss = train(tmp_path, tiny_lm(), task, 1, batches)
    split, split_loss = train(tmp_path, tiny_lm(), task, accumulate, batches)
    torch.testing.assert_close(split_loss, whole_loss, rtol=1e-5, atol=1e-6)
    assert_weights_close(split, whole, tiny_lm())


def test_accumulate_one_is_the_plain_step_bit_for_bit(tmp_path):
    task = ClassificationTask(TaskConfig(mixup=0.8))
    batches = image_batches(8)
    model, losses = train(tmp_path, mlp(), task, 1, batches)
    reference = mlp()  # the step as written before trainer.accumulate existed
    cfg = TrainConfig().optim
    cfg.weight_decay = 0.0
    opt = build_optimizer(cfg, reference, CPU)
    schedule = build_schedule(cfg, opt, 4 * 10, 10)
    torch.manual_seed(0)
    expected = []
    for batch in batches:
        loss = task.loss(reference, batch)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        schedule.step()
        expected.append(loss.detach())
    assert torch.equal(losses, torch.stack(expected))
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), reference.parameters()))


def test_bad_accumulate_is_refused_in_one_line():
    with pytest.raises(ConfigError, match=r"^trainer.accumulate=0 must be an integer >= 1"):
        to_config(compose(["trainer.accumulate=0"]))
    assert to_config(compose(["trainer.accumulate=4"])).trainer.accumulate == 4
    assert to_config(compose(["trainer.accumulate=16", "dataset.batch_size=16"])).trainer.accumulate == 16
    with pytest.raises(ConfigError, match=r"^trainer.accumulate=32 would split each batch of dataset.batch_size=16 into "
                                          r"32 micro-batches, some of them empty; use at most 16$"):
        to_config(compose(["trainer.accumulate=32", "dataset.batch_size=16"]))
    with pytest.raises(ConfigError, match="trainer.accumulate=2 splits classification and lm batches only, not task.name=detection"):
        TrainerConfig(accumulate=2).validate_with("detection", per_batch_skips=None)
    for method, named in ((["repl=stochastic_depth"], "repl.method=stochastic_depth"),
                          (["repl=layerdrop"], "repl.method=layerdrop"),
                          (["repl.stochastic_depth=true"], "repl.method=repl with repl.stochastic_depth=true")):
        with pytest.raises(ConfigError, match=rf"^trainer.accumulate=2 with {re.escape(named)}, which skips blocks per "
                                              r"training batch, .* per micro-batch"):
            to_config(compose(["trainer.accumulate=2", *method]))


def test_the_probe_measures_one_micro_batch_of_activations_and_the_whole_steps_flops(tmp_path):
    """Under accumulation only one micro-batch's activations are alive at a time: the summary's memory
    estimate must say so, while the FLOPs stay those of the whole optimizer step."""
    task = ClassificationTask(TaskConfig(name="classification"))
    (batch,) = image_batches(8, steps=1)
    whole = trainer(tmp_path, mlp(), task, accumulate=1).probe(batch)
    split = trainer(tmp_path, mlp(), task, accumulate=4).probe(batch)
    assert split["flops"] == whole["flops"]  # linear layers: FLOPs are linear in the rows
    quarter = trainer(tmp_path, mlp(), task, accumulate=1).probe(tuple(t[:2] for t in batch))
    assert split["memory"]["activations"] == quarter["memory"]["activations"] < whole["memory"]["activations"]
