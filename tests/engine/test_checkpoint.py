"""Atomic writes and checkpoint loading."""
import copy
import errno
import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from repl.config import compose, to_config
from repl.engine.checkpoint import atomic_write_json, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from repl.errors import CheckpointError
from repl.run import train
from tests.engine.test_training import TINY


def training_state(step: int = 7, **extra) -> dict:
    """The smallest state with every key a resume reads (what Trainer.state_dict writes)."""
    return {"model": {"w": torch.arange(3.0)}, "optimizer": {"state": {}, "param_groups": []}, "schedule": {},
            "plan": {"method": "none"}, "config": {"seed": 0},
            "progress": {"epoch": 0, "step_in_epoch": step, "step": step, "train_s": 1.5, "best": None,
                         "eval_metrics": {}, "eval_step": None, "phase": "method", "phases_entered": []},
            "rng": rng_state(), **extra}


def saved_step(path: Path) -> int:
    """The step of a (possibly partial) state as saved: for the tests of writing, not of loading."""
    return torch.load(path, weights_only=True)["progress"]["step"]


def test_failed_write_leaves_previous_file_intact(tmp_path):
    path = tmp_path / "summary.json"
    atomic_write_json(path, {"status": "running", "epochs_done": 1})

    class Unserialisable:
        pass

    with pytest.raises(TypeError):
        atomic_write_json(path, {"status": "completed", "bad": Unserialisable()})
    assert json.loads(path.read_text()) == {"status": "running", "epochs_done": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]  # no temporary file left behind


def test_checkpoint_round_trip(tmp_path):
    path = tmp_path / "checkpoints" / "last.pt"
    state = training_state(step=7)
    save_checkpoint(path, state)
    loaded = load_checkpoint(path)
    assert torch.equal(loaded["model"]["w"], state["model"]["w"]) and loaded["progress"]["step"] == 7


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", None])
def test_corrupt_checkpoint_is_one_clear_error(tmp_path, content):
    path = tmp_path / "last.pt"
    if content is None:  # a valid torch file that is not a training checkpoint
        torch.save({"weights": torch.zeros(1)}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=str(path)) as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value)


def test_rng_state_round_trip_through_a_weights_only_file(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    random.gauss(0, 1)  # leaves a cached gaussian in python's state
    save_checkpoint(tmp_path / "rng.pt", training_state())
    expected = (random.random(), random.gauss(0, 1), np.random.rand(), torch.rand(2).tolist())
    set_rng_state(load_checkpoint(tmp_path / "rng.pt")["rng"])
    assert (random.random(), random.gauss(0, 1), np.random.rand(), torch.rand(2).tolist()) == expected


def test_written_files_get_the_usual_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_json(tmp_path / "summary.json", {})
        save_checkpoint(tmp_path / "last.pt", {"model": {}, "progress": {}})
    finally:
        os.umask(old)
    for name in ("summary.json", "last.pt"):  # readable by collaborators, like any file open() creates
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644


def test_a_full_disk_is_refused_before_writing(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"model": {"w": torch.zeros(4)}, "progress": {"step": 1}})
    free = 1000  # bytes: less than the next state's 4000 bytes of tensors, more than the first's 16
    monkeypatch.setattr("shutil.disk_usage", lambda _: shutil._ntuple_diskusage(10**9, 10**9 - free, free))
    with pytest.raises(CheckpointError, match=f"no room for checkpoint {path}") as info:
        save_checkpoint(path, {"model": {"w": torch.zeros(1000)}, "progress": {"step": 2}})
    assert "\n" not in str(info.value)
    assert saved_step(path) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_shared_storages_count_once_against_free_space(tmp_path, monkeypatch):
    weight = torch.zeros(1000)  # 4000 bytes, saved once although referenced twice (tied embeddings)
    monkeypatch.setattr("shutil.disk_usage", lambda _: shutil._ntuple_diskusage(10**9, 10**9 - 6000, 6000))
    save_checkpoint(tmp_path / "last.pt", {"model": {"embed": weight, "head": weight}, "progress": {}})
    assert torch.load(tmp_path / "last.pt", weights_only=True)["model"]["head"].numel() == 1000


def test_a_write_that_fails_midway_is_one_line_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"model": {"w": torch.zeros(4)}, "progress": {"step": 1}})

    def disk_fills(*_args, **_kwargs):  # what another process filling the disk looks like to torch.save
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_fills)
    with pytest.raises(CheckpointError, match="No space left on device") as info:
        save_checkpoint(path, {"model": {"w": torch.ones(4)}, "progress": {"step": 2}})
    assert "\n" not in str(info.value) and "previous checkpoint is intact" in str(info.value)
    assert saved_step(path) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def _without(state: dict, dotted: str) -> dict:
    state = copy.deepcopy(state)
    *parents, leaf = dotted.split(".")
    holder = state
    for part in parents:
        holder = holder[part]
    del holder[leaf]
    return state


def _with(state: dict, dotted: str, value) -> dict:
    state = copy.deepcopy(state)
    *parents, leaf = dotted.split(".")
    holder = state
    for part in parents:
        holder = holder[part]
    holder[leaf] = value
    return state


@pytest.mark.parametrize("key", ["optimizer", "schedule", "plan", "rng", "rng.numpy", "rng.torch", "progress.step",
                                 "progress.eval_step", "rng.python.internal"])
def test_a_checkpoint_lacking_a_key_the_resume_reads_names_it(tmp_path, key):
    path = tmp_path / "last.pt"
    torch.save(_without(training_state(), key), path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert message.startswith(f"checkpoint {path} lacks '{key}'") and "trainer.overwrite=true" in message
    assert "\n" not in message


@pytest.mark.parametrize("key, value, expected", [
    ("progress.step", "x", "progress.step='x' (str) where an int is expected"),
    ("progress.epoch", True, "progress.epoch=True (bool) where an int is expected"),
    ("progress.best", "high", "where an int or a float or None is expected"),
    ("progress.eval_metrics", [1.0], "progress.eval_metrics=[1.0] (list) where a dict is expected"),
    ("rng.torch", [1, 2], "rng.torch=[1, 2] (list) where a tensor is expected"),
    ("model", torch.zeros(2), "model=tensor(2,) (Tensor) where a dict is expected"),
    ("config", "seed=0", "config='seed=0' (str) where a dict is expected"),
    ("progress.phase", "warmup", "progress.phase='warmup' where one of backprop, method, restored is expected"),
    ("progress.phases_entered", [{"phase": "method"}], "progress.phases_entered[0]="),
])
def test_a_checkpoint_with_a_mistyped_key_names_it_and_what_is_accepted(tmp_path, key, value, expected):
    path = tmp_path / "last.pt"
    torch.save(_with(training_state(), key, value), path)
    with pytest.raises(CheckpointError, match=str(path)) as info:
        load_checkpoint(path)
    assert expected in str(info.value) and "\n" not in str(info.value)


def test_optional_keys_may_be_absent_but_are_checked_when_present(tmp_path):
    path = tmp_path / "last.pt"
    older = _without(_without(_without(training_state(), "config"), "progress.phase"), "progress.phases_entered")
    torch.save(older, path)  # a checkpoint from before configs and schedules were stored
    assert load_checkpoint(path)["progress"]["step"] == 7
    entered = [{"phase": "backprop", "epoch": 0, "step": 0, "params": {"total": 1}}]
    torch.save(training_state(ema={"n_averaged": torch.tensor(1)}, scaler={"scale": 1.0},
                              progress={**training_state()["progress"], "phases_entered": entered}), path)
    assert load_checkpoint(path, mmap=True)["progress"]["phases_entered"] == entered
    torch.save(training_state(ema=[1.0]), path)
    with pytest.raises(CheckpointError, match="ema=.*where a dict is expected"):
        load_checkpoint(path)


@pytest.fixture(scope="module")
def completed_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("completed") / "run"
    train(to_config(compose(TINY + ["trainer.max_steps=2"])), run_dir)
    return run_dir


def _files(run_dir: Path) -> dict:
    return {p.relative_to(run_dir): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("damage", [lambda s: s.pop("rng"), lambda s: s["progress"].update(step="x")])
def test_resuming_from_a_broken_checkpoint_stops_before_anything_is_written(completed_run, tmp_path, damage):
    run_dir = tmp_path / "run"
    shutil.copytree(completed_run, run_dir)
    last = run_dir / "checkpoints" / "last.pt"
    state = torch.load(last, weights_only=True)
    assert load_checkpoint(last)["progress"]["step"] == 2  # what the trainer writes passes the check
    damage(state)
    torch.save(state, last)
    before = _files(run_dir)
    with pytest.raises(CheckpointError, match=f"checkpoint {last} (lacks 'rng'|has progress.step='x')"):
        train(to_config(compose(TINY + ["trainer.max_steps=3"])), run_dir)  # longer: resumes from last.pt
    assert _files(run_dir) == before  # the completed run's summary is not turned into a failure
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"
