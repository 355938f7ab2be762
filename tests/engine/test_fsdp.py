"""trainer.strategy=fsdp: RepL under PyTorch's fully_shard, two gloo processes on this machine's CPU.

The model is a 5-block GPT (LayerNorm only, no dropout) at RepL's largest ratio: blocks 1 and 3 are
surrogates sharing neighbour 2, so their units chain into one. Two ranks with half the batch each see
the same global batch as one process, and FSDP's reduce-scatter averages the two half-batch mean
gradients, which is the full-batch mean: the runs agree up to float summation order.

Tolerances: gradients agree to 1e-5 relative (one forward+backward in float32 summed in another order
is ~1e-7 relative); the weights after 3 AdamW steps to 1e-6 absolute (measured ~2e-8). What the checks
are there to catch is far larger: the surrogate's share of its neighbours' gradients is 2-10% of them
(checked below), and a lost optimizer or schedule state on resume moves the weights by ~lr = 1e-3.
"""
from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from repl.config import compose, to_config
from repl.engine.config import TrainerConfig
from repl.engine.fsdp import fsdp_units, shard_model, surrogate_indices
from repl.errors import ConfigError
from repl.families import discover_blocks
from repl.method.apply import apply_replacement
from repl.method.surrogates import Surrogate
from repl.models.gpt import build_lm
from repl.run import train

LM = ["task=lm", "dataset.num_train=2048", "dataset.num_eval=256", "dataset.seq_len=16", "dataset.batch_size=8",
      "dataset.vocab_size=64", "model.kwargs.layers=5", "model.kwargs.dim=32", "model.kwargs.heads=2",
      "model.kwargs.dropout=0.0", "repl.ratio=0.4", "optim.name=adamw", "optim.lr=1e-3", "trainer.grad_clip=1.0",
      "trainer.device=cpu", "trainer.progress=false", "trainer.log_every=1", "trainer.timing_warmup=1"]
GRAD_RTOL = 1e-5
WEIGHT_ATOL = 1e-6


# ------------------------------------------------------------------ the grouping, without processes
def test_each_surrogate_shares_a_unit_with_both_neighbours_and_shared_neighbours_chain():
    assert fsdp_units(5, []) == [[0], [1], [2], [3], [4]]
    assert fsdp_units(8, [2, 5]) == [[0], [1, 2, 3], [4, 5, 6], [7]]  # no block shared: two units
    assert fsdp_units(7, [1, 3]) == [[0, 1, 2, 3, 4], [5], [6]]  # block 2 serves both
    assert fsdp_units(7, [5, 1, 3]) == [[0, 1, 2, 3, 4, 5, 6]]  # the largest ratio: one chain
    with pytest.raises(ValueError):
        fsdp_units(5, [4])  # the last block has no next neighbour


def test_the_surrogates_are_read_from_the_plan_and_the_model():
    model = build_lm(64, 16, False, layers=5, dim=16, heads=2)
    paths = [b.path for b in discover_blocks(model)]
    plan = apply_replacement(model, ratio=0.4)
    assert surrogate_indices(model, plan, paths) == [1, 3]
    frozen = build_lm(64, 16, False, layers=5, dim=16, heads=2)
    assert surrogate_indices(frozen, apply_replacement(frozen, method="freeze", ratio=0.4), paths) == []


def test_fsdp_refuses_what_it_does_not_compose_with_in_one_line():
    TrainerConfig(strategy="fsdp", precision="bf16", accumulate=2).validate()
    for bad, key in [({"strategy": "zero"}, "trainer.strategy"), ({"compile": True}, "trainer.compile"),
                     ({"ema_decay": 0.99}, "trainer.ema_decay"), ({"precision": "16"}, "trainer.precision"),
                     ({"checkpointing": True}, "trainer.checkpointing")]:
        with pytest.raises(ConfigError, match=key) as err:
            TrainerConfig(**{"strategy": "fsdp", **bad}).validate()
        assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="trainer.strategy=fsdp with repl.method=layerdrop"):
        to_config(compose(LM + ["trainer.strategy=fsdp", "repl=layerdrop"]))


def test_fsdp_on_one_process_says_it_needs_torchrun(tmp_path):
    with pytest.raises(ConfigError, match="torchrun --nproc_per_node"):
        train(to_config(compose(LM + ["trainer.strategy=fsdp", "trainer.max_steps=1"])), tmp_path)


# ------------------------------------------------------------------ two processes
def _model(neighbor_grad: bool = True):
    torch.manual_seed(0)
    model = build_lm(64, 16, False, layers=5, dim=16, heads=2)
    with torch.no_grad():  # biases start at 0, which would give their fusion coefficients zero gradient
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.normal_(std=0.02)
    paths = [b.path for b in discover_blocks(model)]
    plan = apply_replacement(model, ratio=0.4, surrogate="full", fusion="channel", neighbor_grad=neighbor_grad)
    return model, plan, paths


def _batch():
    tokens = torch.randint(0, 64, (8, 17), generator=torch.Generator().manual_seed(1))
    return tokens[:, :-1], tokens[:, 1:]


def _loss(model, inputs, targets):
    return F.cross_entropy(model(inputs).flatten(0, 1), targets.flatten())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, ports: list, run_dir: str, results) -> None:
    torch.set_num_threads(1)
    env = {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1"}
    os.environ.update(env, MASTER_PORT=str(ports[0]))
    dist.init_process_group("gloo")
    try:  # one forward+backward of the sharded model on this rank's half of the batch
        model, plan, paths = _model()
        sharded = shard_model(model, plan, paths, torch.device("cpu"))
        inputs, targets = (t.chunk(2)[rank] for t in _batch())
        loss = _loss(model, inputs, targets)
        loss.backward()
        grads = {name: (p.grad.full_tensor() if p.grad is not None else None) for name, p in model.named_parameters()}
        total = loss.detach().clone()
        dist.all_reduce(total)
        if rank == 0:
            results["grads"], results["loss"] = grads, float(total) / 2
            results["units"], results["lifted"] = sharded.units, sorted(sharded.lifted)
    finally:
        dist.destroy_process_group()
    # the trainer: 2 steps, then a resumed run to 3 (train() joins and leaves the group from the environment)
    for port, steps in zip(ports[1:], (2, 3)):
        os.environ["MASTER_PORT"] = str(port)
        train(to_config(compose(LM + ["trainer.strategy=fsdp", f"trainer.max_steps={steps}"])), run_dir)


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("fsdp")
    results = mp.Manager().dict()
    mp.spawn(_worker, args=([_free_port() for _ in range(3)], str(base / "fsdp"), results), nprocs=2)
    return {**results, "dir": base}


def test_the_sharded_forward_and_gradients_equal_one_process(two_ranks):
    model, _, _ = _model()
    inputs, targets = _batch()
    loss = _loss(model, inputs, targets)
    loss.backward()
    loss = loss.detach()
    assert two_ranks["loss"] == pytest.approx(loss.item(), rel=1e-6)
    assert two_ranks["units"] == [["blocks.0", "blocks.1", "blocks.2", "blocks.3", "blocks.4"]]
    grads = two_ranks["grads"]
    assert grads.keys() == dict(model.named_parameters()).keys()
    assert [n for n, g in grads.items() if g is None or not g.any()] == []  # every trainable tensor gets gradient
    for name, param in model.named_parameters():
        got = grads[name].reshape(param.grad.shape)
        assert (got - param.grad).norm() <= GRAD_RTOL * param.grad.norm(), name
    # the surrogates' share of their neighbours' gradients is in what FSDP reduced (repl.neighbor_grad=true)
    detached, _, _ = _model(neighbor_grad=False)
    _loss(detached, inputs, targets).backward()
    neighbour = dict(detached.named_parameters())["blocks.2.mlp.fc1.weight"]
    share = (neighbour.grad - grads["blocks.2.mlp.fc1.weight"]).norm() / neighbour.grad.norm()
    assert share > 100 * GRAD_RTOL


def test_the_scalar_fusion_coefficients_are_sharded_as_vectors_and_saved_as_scalars(two_ranks):
    model, _, _ = _model()
    assert two_ranks["lifted"] == []  # channel fusion has no 0-dim coefficient
    saved = torch.load(two_ranks["dir"] / "fsdp" / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert saved["blocks.1.fusion.a.block"].shape == ()  # repl.fusion=scalar (the trainer run's default)
    assert isinstance(model.blocks[1], Surrogate)


def test_a_resumed_fsdp_run_equals_one_process_trained_straight_through(two_ranks, tmp_path):
    one = train(to_config(compose(LM + ["trainer.max_steps=3"])), tmp_path / "one")
    two = two_ranks["dir"] / "fsdp"
    a = torch.load(tmp_path / "one" / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(two / "checkpoints" / "last.pt", weights_only=True)
    assert b["progress"]["step"] == one["steps_done"] == 3
    assert a["model"].keys() == b["model"].keys()
    for key, value in a["model"].items():
        assert value.shape == b["model"][key].shape, key
        assert (value - b["model"][key]).abs().max() <= WEIGHT_ATOL, key
    # the optimizer state is in the layout of an unsharded model's, so DDP and FSDP checkpoints resume each other
    assert a["optimizer"]["param_groups"] == b["optimizer"]["param_groups"]
    for i, state in a["optimizer"]["state"].items():
        for k, v in state.items():
            assert v.shape == b["optimizer"]["state"][i][k].shape and torch.allclose(v, b["optimizer"]["state"][i][k],
                                                                                     atol=WEIGHT_ATOL), (i, k)
