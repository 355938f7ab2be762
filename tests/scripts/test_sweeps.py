"""Multiruns: a failed job does not stop the others; a preempted submitit job checkpoints, requeues, resumes."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.engine.test_rundir import snapshot
from tests.signalled import start_paused, wait_for_step

ROOT = Path(__file__).resolve().parents[2]
TINY = ["experiment=smoke", "dataset.num_train=128", "dataset.num_eval=64", "dataset.image_size=16",
        "trainer.max_steps=1", "trainer.progress=false"]


def _unreadable_weights(folder: Path) -> Path:
    """A model.weights file no job can load: a failure only the job itself meets (the sweep's pre-check builds
    models, plans and locates data, but loads no weights)."""
    path = folder / "not_weights.pt"
    path.write_bytes(b"not a state_dict")
    return path


def test_a_failed_job_does_not_stop_the_sweep(tmp_path):
    # Hydra's basic launcher runs the jobs one after another: the bad weights come first
    bad = _unreadable_weights(tmp_path)
    sweep = tmp_path / "sweep"
    result = subprocess.run([sys.executable, str(ROOT / "train.py"), "-m", *TINY, f"model.weights={bad},null",
                             f"hydra.sweep.dir={sweep}"], cwd=ROOT, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "WANDB_MODE": "offline"}, check=False)
    assert result.returncode == 1, result.stderr[-2000:]
    summaries = [json.loads(p.read_text()) for p in sweep.rglob("summary.json")]
    assert sorted(s["status"] for s in summaries) == ["completed", "failed"]
    failed = next(s for s in summaries if s["status"] == "failed")
    completed = next(s for s in summaries if s["status"] == "completed")
    assert "model.weights" in failed["error"] and "not_weights.pt" in failed["error"]
    assert completed["steps_done"] == 1
    assert "1 job(s) failed" in result.stderr and "not_weights.pt" in result.stderr
    assert "Traceback" not in result.stderr  # a user error stays one line, in a sweep too


def _sweep(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "train.py"), "-m", *TINY, *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, env={**os.environ, "WANDB_MODE": "offline"}, check=False)


def test_relaunching_a_sweep_leaves_completed_jobs_byte_identical_and_finishes_the_others(tmp_path):
    bad = _unreadable_weights(tmp_path)
    sweep = tmp_path / "sweep"
    args = ["repl.ratio=0,0.25", f"model.weights=null,{bad}", f"hydra.sweep.dir={sweep}"]
    assert _sweep(*args).returncode == 1  # the two jobs with the bad weights fail, the other two complete
    runs = {json.loads(p.read_text())["plan"]["ratio"]: p.parent for p in sweep.rglob("summary.json")
            if json.loads(p.read_text())["status"] == "completed"}
    completed, partial = runs[0.0], runs[0.25]
    done = json.loads((partial / "summary.json").read_text())  # as if killed between its last checkpoint and summary
    (partial / "summary.json").write_text(json.dumps({**done, "status": "running"}))
    before = snapshot(completed)
    result = _sweep(*args)
    assert result.returncode == 1 and "2 job(s) failed" in result.stderr
    assert snapshot(completed) == before  # every file of the completed job, Hydra's included, byte for byte
    assert f"run already completed: {completed} (top1=" in result.stdout
    resumed = json.loads((partial / "summary.json").read_text())
    assert resumed["status"] == "completed" and resumed["steps_done"] == 1
    for section in ("flops", "memory", "time", "throughput", "metrics"):  # resumed with no step left: nothing zeroed
        assert resumed[section] == done[section], section


def _children(pid: int) -> list[int]:
    """Direct child processes of pid (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the job's process through /proc")
def test_submitit_preemption_checkpoints_requeues_and_resumes(tmp_path):
    # SLURM's warning before a time limit or preemption is SIGUSR2 to the job's process (submitit)
    proc = start_paused([sys.executable, str(ROOT / "train.py"), "-m", "launcher=local", *TINY,
                         "dataset.num_train=768", "trainer.max_steps=12", "trainer.log_every=1",
                         f"hydra.sweep.dir={tmp_path}"], step=2, env={**os.environ, "WANDB_MODE": "offline"},
                        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = wait_for_step(proc, lambda: next(tmp_path.rglob("metrics.jsonl"), None), step=2, timeout=300)
    jobs = [job for controller in _children(proc.pid) for job in _children(controller)]
    assert metrics is not None and len(jobs) == 1, "the job ended or never started"
    os.kill(jobs[0], signal.SIGUSR2)
    assert proc.wait(timeout=300) == 0
    run_dir = metrics.parent
    log = "".join(p.read_text() for p in (tmp_path / ".submitit").rglob("*_log.*"))
    assert "Requeued job" in log and "(resumed at epoch 0, step" in log
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps_done"] == 12
    steps = [json.loads(line)["step"] for line in metrics.read_text().splitlines() if "train/loss" in line]
    assert steps == list(range(1, 13))  # resumed where it stopped, no step repeated or lost


def _table(tmp_path: Path, together: str) -> dict:
    """Run `table table_a table_b` (two copies of the smoke experiment) through _common.sh with submitit's
    local executor; returns {experiment: (first submission time, last summary.json write)}."""
    experiments = tmp_path / "configs" / "experiment"
    experiments.mkdir(parents=True)
    smoke = (ROOT / "configs" / "experiment" / "smoke.yaml").read_text()
    for name in ("table_a", "table_b"):
        (experiments / f"{name}.yaml").write_text(smoke.replace("experiment_name: smoke", f"experiment_name: {name}"))
    overrides = [f"hydra.searchpath=[file://{tmp_path / 'configs'}]", *TINY[1:],
                 f"hydra.sweep.dir={tmp_path}/multirun/${{experiment_name}}"]
    result = subprocess.run(["bash", "-c", 'source scripts/sweeps/_common.sh local "$@"; table table_a table_b', "table",
                             *overrides], cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
                            env={**os.environ, "WANDB_MODE": "offline", "RATIOS": "0.25", "SEEDS": "0",
                                 "PYTHON": sys.executable, "TOGETHER": together})
    assert result.returncode == 0, result.stderr[-3000:]
    times = {}
    for name in ("table_a", "table_b"):
        sweep = tmp_path / "multirun" / name
        submitted = min(p.stat().st_mtime for p in (sweep / ".submitit").rglob("*_submitted.pkl"))
        (summary,) = sweep.rglob("summary.json")
        assert json.loads(summary.read_text())["status"] == "completed"
        times[name] = (submitted, summary.stat().st_mtime)
    return times


@pytest.mark.slow
def test_a_table_submits_every_experiment_before_any_finishes(tmp_path):
    """submitit's launcher waits for its job array, so TOGETHER=1 (slurm's default) must launch each
    experiment's sweep in the background: both are submitted before either job has finished."""
    (a_submitted, a_done), (b_submitted, b_done) = _table(tmp_path / "together", "1").values()
    assert b_submitted < a_done and a_submitted < b_done  # one after another (TOGETHER=0, slurm before) fails this


def test_a_bad_together_value_is_refused_in_one_line():
    result = subprocess.run(["bash", "-c", "source scripts/sweeps/_common.sh slurm"], cwd=ROOT, capture_output=True,
                            text=True, env={**os.environ, "TOGETHER": "yes"}, timeout=60, check=False)
    assert result.returncode == 2 and result.stderr.strip() == "error: TOGETHER=yes: choose 1 (every experiment at once) or 0 (one after another)"
