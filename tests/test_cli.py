"""The command line as a user meets it: one-line errors, and a run killed mid-epoch that resumes."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.data.fabricate_text import make_wikitext2
from tests.engine.test_rundir import snapshot
from tests.engine.test_training import TINY, assert_same_weights, weights
from tests.signalled import signal_state, start_paused, wait_for_step

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300, **kwargs)


@pytest.mark.slow
@pytest.mark.parametrize("override,key", [
    ("model.name=resnet1000", "model.name"),
    ("optim.lr=-0.1", "optim.lr"),
    ("repl.ratio=0.9", "repl.ratio"),
])
def test_bad_values_stop_with_one_line(tmp_path, override, key):
    result = _cli(override, f"hydra.run.dir={tmp_path}")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and key in lines[0] and "Traceback" not in result.stderr
    assert not (tmp_path / "checkpoints").exists()  # stopped before any training


@pytest.mark.slow
def test_missing_dataset_stops_with_one_line(tmp_path):
    missing = tmp_path / "nowhere"
    result = _cli("dataset=cifar10", f"dataset.root={missing}", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(missing) in lines[0] and "Traceback" not in result.stderr


@pytest.mark.slow
def test_run_killed_mid_epoch_resumes_and_completes(tmp_path):
    args = TINY + ["trainer.epochs=2", "trainer.checkpoint_every=1", f"hydra.run.dir={tmp_path / 'killed'}"]
    proc = start_paused([sys.executable, str(ROOT / "train.py"), *args], step=2, cwd=ROOT,
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_step(proc, lambda: tmp_path / "killed" / "metrics.jsonl", step=2)  # kill once a mid-epoch step is logged
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    checkpoint = torch.load(tmp_path / "killed" / "checkpoints" / "last.pt", weights_only=True)
    assert checkpoint["progress"]["step"] < 8  # it really died before the end
    result = _cli(*args)
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "killed" / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps_done"] == 8 and summary["epochs_done"] == 2
    whole = tmp_path / "whole"
    assert _cli(*TINY, "trainer.epochs=2", f"hydra.run.dir={whole}").returncode == 0
    assert_same_weights(weights(tmp_path / "killed"), weights(whole))


@pytest.mark.slow
def test_sigterm_checkpoints_and_exits_so_a_requeued_job_resumes(tmp_path):
    args = TINY + ["trainer.epochs=2", f"hydra.run.dir={tmp_path}"]
    proc = start_paused([sys.executable, str(ROOT / "train.py"), *args], step=2, cwd=ROOT,
                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for_step(proc, lambda: tmp_path / "metrics.jsonl", step=2)
    assert proc.poll() is None, "the run finished before it could be signalled"
    state = signal_state(proc.pid)
    proc.send_signal(signal.SIGTERM)  # what SLURM sends before preempting a job
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM and "rerun the same command" in stderr, (state, stderr)
    summary = json.loads((tmp_path / "summary.json").read_text())
    stopped_at = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)["progress"]["step"]
    assert summary["status"] == "running" and 2 <= stopped_at < 8 and summary["steps_done"] == stopped_at
    result = _cli(*args)
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "summary.json").read_text())["steps_done"] == 8


@pytest.mark.slow
def test_ctrl_c_is_one_line_and_a_rerun_resumes_from_the_last_checkpoint(tmp_path):
    args = TINY + ["trainer.epochs=2", "trainer.checkpoint_every=1", f"hydra.run.dir={tmp_path}"]
    proc = start_paused([sys.executable, str(ROOT / "train.py"), *args], step=2, cwd=ROOT,
                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for_step(proc, lambda: tmp_path / "metrics.jsonl", step=2)  # interrupt once a mid-epoch checkpoint is written
    assert proc.poll() is None, "the run finished before it could be interrupted"
    state = signal_state(proc.pid)  # the child's mask and handlers when the signal is sent, should this fail
    proc.send_signal(signal.SIGINT)  # Ctrl-C
    _, stderr = proc.communicate(timeout=120)
    lines = stderr.strip().splitlines()
    assert proc.returncode == 130 and len(lines) == 1, (state, stderr)
    assert lines[0].startswith("interrupted: rerun the same command to resume from the run's last checkpoint"), stderr
    stopped_at = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)["progress"]["step"]
    assert 0 < stopped_at < 8  # a checkpoint of a step, not of the end
    result = _cli(*args)
    assert result.returncode == 0, result.stderr
    assert f"step {stopped_at})" in result.stdout  # "(resumed at epoch E, step S)": from the checkpoint
    assert json.loads((tmp_path / "summary.json").read_text())["steps_done"] == 8


def test_console_script_is_installed_and_documents_the_groups():
    script = Path(sys.executable).with_name("repl-train")  # installed by `pip install -e .`
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    for group in ("dataset", "model", "repl", "trainer", "optim", "experiment"):
        assert f"{group}:" in result.stdout


@pytest.mark.slow
def test_lm_on_wikitext2_files_from_the_command_line(tmp_path):
    make_wikitext2(tmp_path / "wikitext2")
    result = _cli("task=lm", "model=lm", "dataset=wikitext2", f"dataset.root={tmp_path / 'wikitext2'}",
                  "dataset.seq_len=16", "dataset.batch_size=8", "model.kwargs.dim=32", "model.kwargs.layers=4",
                  "trainer.max_steps=3", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["dataset"] == "wikitext2" and summary["method"] == "repl"
    assert summary["primary"]["name"] == "test_ppl" and summary["throughput"]["unit"] == "tokens"


@pytest.mark.slow
def test_vit_b_with_repl_from_the_command_line(tmp_path):
    result = _cli("model=vit_b", "repl.ratio=0.25", "dataset=synthetic", "trainer.max_steps=1",
                  "dataset.batch_size=4", "dataset.num_eval=8", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["model"] == "vit_b" and summary["steps_done"] == 1 and summary["plan"]["blocks"] == [1, 5, 9]
    d = 768  # a ViT-B block: qkv 3d^2+3d, proj d^2+d, fc1 4d^2+4d, fc2 4d^2+d, two norms 4d
    assert summary["params"]["replaced"] == 3 * (12 * d * d + 13 * d) and summary["params"]["fusion"] == 6


@pytest.mark.slow
def test_rerun_of_a_completed_run_leaves_every_file_byte_identical(tmp_path):
    args = [*TINY, "trainer.max_steps=2", f"hydra.run.dir={tmp_path}"]
    assert _cli(*args).returncode == 0
    before = snapshot(tmp_path)
    assert {"summary.json", "metrics.jsonl", "env.json", "checkpoints/last.pt", ".hydra/config.yaml"} <= before.keys()
    result = _cli(*args)
    assert result.returncode == 0, result.stderr
    assert snapshot(tmp_path) == before  # summary, metrics, checkpoint, env, Hydra's own files: byte for byte
    value = json.loads(before["summary.json"])["primary"]["value"]
    assert result.stdout.strip().splitlines() == [f"run already completed: {tmp_path} (top1={value}); nothing to do"]


@pytest.mark.slow
def test_a_rerun_that_trains_nothing_keeps_the_runs_config_record(tmp_path):
    """Hydra writes .hydra/ before the task runs; RepL writes it once the run is built (repl.run.hydra_record),
    so collect.py never reads a refused rerun's config (trainer.epochs=0) as the finished run's."""
    args = [*TINY, "trainer.max_steps=2", f"hydra.run.dir={tmp_path}"]
    assert _cli(*args).returncode == 0
    before = {k: v for k, v in snapshot(tmp_path).items() if k != "train.log"}
    assert "max_steps: 2" in before[".hydra/config.yaml"].decode()
    for changed, code in (("trainer.device=cpu", 0),  # a key that does not change what is trained: "nothing to do"
                          ("repl.ratio=0.4", 2),  # a resume with another plan: refused
                          ("trainer.epochs=0", 2)):  # a value the schema refuses
        assert _cli(*args, changed).returncode == code, changed
        assert {k: v for k, v in snapshot(tmp_path).items() if k != "train.log"} == before, changed
