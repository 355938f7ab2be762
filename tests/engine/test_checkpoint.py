"""Atomic writes and checkpoint loading."""
import errno
import json
import os
import random
import shutil

import numpy as np
import pytest
import torch

from repl.engine.checkpoint import atomic_write_json, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from repl.errors import CheckpointError


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
    state = {"model": {"w": torch.arange(3.0)}, "progress": {"step": 7}}
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
    save_checkpoint(tmp_path / "rng.pt", {"model": {}, "progress": {}, "rng": rng_state()})
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
    assert load_checkpoint(path)["progress"]["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_shared_storages_count_once_against_free_space(tmp_path, monkeypatch):
    weight = torch.zeros(1000)  # 4000 bytes, saved once although referenced twice (tied embeddings)
    monkeypatch.setattr("shutil.disk_usage", lambda _: shutil._ntuple_diskusage(10**9, 10**9 - 6000, 6000))
    save_checkpoint(tmp_path / "last.pt", {"model": {"embed": weight, "head": weight}, "progress": {}})
    assert load_checkpoint(tmp_path / "last.pt")["model"]["head"].numel() == 1000


def test_a_write_that_fails_midway_is_one_line_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"model": {"w": torch.zeros(4)}, "progress": {"step": 1}})

    def disk_fills(*_args, **_kwargs):  # what another process filling the disk looks like to torch.save
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_fills)
    with pytest.raises(CheckpointError, match="No space left on device") as info:
        save_checkpoint(path, {"model": {"w": torch.ones(4)}, "progress": {"step": 2}})
    assert "\n" not in str(info.value) and "previous checkpoint is intact" in str(info.value)
    assert load_checkpoint(path)["progress"]["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]
