"""What a run leaves behind is never lost or falsified: reruns, resumes, crashes, kills, best.pt."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from repl.engine.trainer import Trainer
from repl.engine import rundir
from repl.errors import CheckpointError, ConfigError, ReplError
from tests.engine.test_training import run


def snapshot(root: Path) -> dict:
    """Every file under root (relative path -> bytes)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def summary_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def logged_steps(run_dir: Path) -> list:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["step"] for line in lines if "train/loss" in line]


def test_rerun_of_a_completed_run_changes_no_file_and_returns_its_summary(tmp_path, capsys):
    run(tmp_path, "trainer.max_steps=2")
    before = snapshot(tmp_path)
    capsys.readouterr()
    again = run(tmp_path, "trainer.max_steps=2")
    assert snapshot(tmp_path) == before
    assert again == summary_of(tmp_path) and again["primary"]["value"] is not None  # what a Hydra sweeper gets
    out = capsys.readouterr().out.strip().splitlines()
    assert out == [f"run already completed: {tmp_path} (top1={again['primary']['value']}); nothing to do"]


def test_a_completed_run_is_not_returned_for_a_config_it_was_not_trained_with(tmp_path):
    """Through the API (or a hand-set hydra.run.dir) the directory name does not guard the config: a
    changed lr must not print "nothing to do" and hand back the other run's result."""
    run(tmp_path, "trainer.max_steps=2")
    before = snapshot(tmp_path)
    with pytest.raises(CheckpointError, match=r"optim.lr 0.1 -> 0.05"):
        run(tmp_path, "trainer.max_steps=2", "optim.lr=0.05")
    assert snapshot(tmp_path) == before


def test_resume_false_on_an_existing_run_refuses_until_overwrite_is_asked(tmp_path):
    run(tmp_path, "trainer.max_steps=2")
    before = snapshot(tmp_path)
    with pytest.raises(ConfigError, match="trainer.overwrite=true"):
        run(tmp_path, "trainer.max_steps=2", "trainer.resume=false")
    assert snapshot(tmp_path) == before
    summary = run(tmp_path, "trainer.max_steps=3", "trainer.resume=false", "trainer.overwrite=true")
    assert summary["status"] == "completed" and summary["steps_done"] == 3
    assert logged_steps(tmp_path) == [1, 2, 3]  # from scratch: the discarded run's records are gone, not doubled


def test_a_longer_config_without_a_checkpoint_to_continue_from_is_refused(tmp_path):
    run(tmp_path, "trainer.max_steps=2")
    (tmp_path / "checkpoints" / "last.pt").unlink()
    before = snapshot(tmp_path)
    with pytest.raises(CheckpointError, match="no checkpoints/last.pt"):
        run(tmp_path, "trainer.max_steps=3")
    assert snapshot(tmp_path) == before  # the completed run's results stand


@pytest.mark.parametrize("refused", [("repl.ratio=0.9",), ("dataset=cifar10", "dataset.root=/nonexistent/cifar10")])
def test_overwrite_discards_a_run_only_once_the_new_one_has_passed_every_check(tmp_path, refused):
    """A ratio too large for the model or a mistyped dataset root with trainer.overwrite=true is refused
    (when the model, plan and data are built) before the finished run is deleted."""
    run(tmp_path, "trainer.max_steps=2")
    before = snapshot(tmp_path)
    with pytest.raises(ReplError):
        run(tmp_path, "trainer.max_steps=2", "trainer.overwrite=true", *refused)
    assert snapshot(tmp_path) == before


def test_a_rerun_that_cannot_measure_again_writes_null_not_zero(tmp_path):
    """summary.json lost after the run finished: the rerun resumes the last checkpoint with no step left, so it
    evaluates but times and probes nothing; what nobody measured is null, never a measured-looking 0."""
    first = run(tmp_path, "trainer.max_steps=2")
    (tmp_path / "summary.json").unlink()
    again = run(tmp_path, "trainer.max_steps=2")
    assert again["status"] == "completed" and again["steps_done"] == 2
    assert again["primary"]["value"] == first["primary"]["value"]  # the final evaluation runs again, same weights
    assert again["flops"]["train_step"] is None and again["memory"]["estimate_bytes"] is None
    assert again["time"]["step_s"] is None and again["throughput"]["train_per_s"] is None
    assert first["flops"]["train_step"] > 0 and first["time"]["step_s"] > 0  # a run that trained measures them
    assert summary_of(tmp_path) == again


def test_an_unwritable_run_directory_is_refused_before_anything_is_built(tmp_path, monkeypatch):
    """(As root, chmod does not stop a write: the refusal of the OS is simulated where the check asks it.)"""
    run(tmp_path, "trainer.max_steps=2")
    before = snapshot(tmp_path)

    def refuse(*args, dir=None, **kwargs):
        raise PermissionError(13, "Permission denied", str(dir))

    monkeypatch.setattr(rundir.tempfile, "mkstemp", refuse)
    monkeypatch.setattr("repl.run.build_run", lambda *a, **k: pytest.fail("built before the directory was checked"))
    with pytest.raises(ConfigError, match=f"cannot write the run directory {tmp_path}: Permission denied"):
        run(tmp_path, "trainer.max_steps=3")
    assert snapshot(tmp_path) == before


class Killed(BaseException):
    """A kill: nothing in the run catches it."""


@pytest.mark.parametrize("length", ["trainer.max_steps=2", "trainer.epochs=1"])
def test_a_death_right_after_the_last_checkpoint_loses_no_measurement(tmp_path, monkeypatch, length):
    save = Trainer.save

    def save_then_die(self):
        save(self)
        if self.step == self.total_steps:  # rank 0 dies between the final checkpoint and the final summary
            raise Killed

    monkeypatch.setattr(Trainer, "save", save_then_die)
    with pytest.raises(Killed):
        run(tmp_path, length)
    left = summary_of(tmp_path)
    monkeypatch.undo()
    resumed = run(tmp_path, length)  # resumes at the last step: no step, so neither probe nor timer runs
    assert resumed == summary_of(tmp_path) and resumed["status"] == "completed"
    for section in ("flops", "memory", "time", "throughput", "metrics", "params"):
        assert resumed[section] == left[section], section
    assert resumed["flops"]["train_step"] > 0 and resumed["memory"]["estimate_bytes"] > 0
    assert resumed["time"]["step_s"] > 0 and resumed["throughput"]["train_per_s"] > 0


def test_a_crash_after_a_resume_keeps_the_summary_and_adds_the_failure(tmp_path, monkeypatch):
    first = run(tmp_path, "trainer.epochs=2", "trainer.max_steps=4")  # one epoch: a full summary on disk

    def crash(self, batch):
        raise RuntimeError("device lost")

    monkeypatch.setattr(Trainer, "train_step", crash)
    with pytest.raises(RuntimeError, match="device lost"):
        run(tmp_path, "trainer.epochs=2", "trainer.max_steps=6")  # resumes at step 4, dies on the next
    failed = summary_of(tmp_path)
    assert failed["status"] == "failed" and failed["error"] == "RuntimeError: device lost"
    assert failed["steps_done"] == 4 and failed["epochs_done"] == 1
    for key in ("params", "flops", "memory", "time", "metrics", "primary", "plan", "env"):
        assert failed[key] == first[key], key


@pytest.mark.parametrize("checkpoint", [False, True])
def test_a_kill_leaves_nothing_a_rerun_doubles_or_keeps(tmp_path, checkpoint):
    whole = tmp_path / "whole"
    run(whole, "trainer.max_steps=3")
    killed = tmp_path / "killed"
    if checkpoint:  # killed while saving the checkpoint after step 2
        run(killed, "trainer.max_steps=2")
        (killed / "summary.json").unlink()
    else:  # killed after logging 2 steps, before the first checkpoint
        (killed / "checkpoints").mkdir(parents=True)
        records = (whole / "metrics.jsonl").read_text().splitlines()[:2]
        (killed / "metrics.jsonl").write_text("".join(f"{line}\n" for line in records) + '{"step": 3, "tr')
    stale = [killed / "checkpoints" / ".last.pt.k1ll3d.tmp", killed / ".summary.json.k1ll3d.tmp"]
    for path in stale:
        path.write_bytes(b"\0" * 4096)
    summary = run(killed, "trainer.max_steps=3")
    assert summary["status"] == "completed" and summary["steps_done"] == 3
    assert logged_steps(killed) == [1, 2, 3]
    assert not any(path.exists() for path in stale)
    assert sorted(p.name for p in (killed / "checkpoints").iterdir()) == ["last.pt"]


def test_best_checkpoint_is_the_state_at_the_best_eval(tmp_path):
    run(tmp_path / "off", "trainer.epochs=2")
    assert not (tmp_path / "off" / "checkpoints" / "best.pt").exists()  # opt-in
    summary = run(tmp_path / "on", "trainer.epochs=3", "trainer.save_best=true", "optim.lr=0.05")
    evals = [json.loads(line) for line in (tmp_path / "on" / "metrics.jsonl").read_text().splitlines()
             if "eval/top1" in line]
    assert len(evals) == 3
    best_value = max(e["eval/top1"] for e in evals)
    best_step = next(e["step"] for e in evals if e["eval/top1"] == best_value)  # the first eval that reached it
    best = torch.load(tmp_path / "on" / "checkpoints" / "best.pt", weights_only=True)
    assert best["progress"]["step"] == best_step and best["progress"]["best"] == best_value
    assert best["progress"]["eval_metrics"]["top1"] == best_value == summary["metrics"]["top1_best"]
    last = torch.load(tmp_path / "on" / "checkpoints" / "last.pt", weights_only=True)
    if best_step != last["progress"]["step"]:  # an earlier eval was best: its weights, not the last ones
        assert any(not torch.equal(best["model"][k], v) for k, v in last["model"].items())
    # Stopped by trainer.max_steps mid-epoch, then continued: the stop's eval is logged at its fractional epoch,
    # is not an epoch's eval (no best), so the continued run reports what the uninterrupted one does.
    run(tmp_path / "split", "trainer.epochs=3", "trainer.save_best=true", "optim.lr=0.05", "trainer.max_steps=6")
    stop_eval = [json.loads(line) for line in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()
                 if "eval/top1" in line][-1]
    assert (stop_eval["step"], stop_eval["epoch"]) == (6, 1.5)
    split = run(tmp_path / "split", "trainer.epochs=3", "trainer.save_best=true", "optim.lr=0.05")
    assert split["metrics"] == summary["metrics"]
    split_best = torch.load(tmp_path / "split" / "checkpoints" / "best.pt", weights_only=True)
    assert split_best["progress"]["step"] == best_step
    history = rundir.read_history(tmp_path / "split")  # one line per process, what changed between them
    assert [(h["start"], h["step"], h["changed"]) for h in history] == [
        ("fresh", 0, None), ("resume", 6, {"trainer.max_steps": [6, None]})]
    assert history[1]["world_size"] == 1 and {"time", "hostname", "torch", "git_sha", "git_dirty"} <= history[1].keys()


def test_history_lines_are_appended_whole_after_a_cut_one(tmp_path):
    rundir.append_history(tmp_path, {"step": 0})
    with (tmp_path / rundir.HISTORY).open("a") as handle:
        handle.write('{"step": 5, "cut')  # a kill mid-write
    rundir.append_history(tmp_path, {"step": 5})
    assert rundir.read_history(tmp_path) == [{"step": 0}, {"step": 5}]
    assert rundir.read_history(tmp_path / "absent") == []
