"""tests/torchrun.py: gloo's flaky abort is retried once from an empty run directory, nothing else is retried."""
import subprocess

from tests import torchrun


def _fake_runs(monkeypatch, run_dir, results):
    """subprocess.run replaced: each call records whether the run dir existed, makes it, and returns the next result."""
    seen = []

    def run(command, **kwargs):
        seen.append(run_dir.exists())
        run_dir.mkdir(exist_ok=True)
        code, stderr = results[len(seen) - 1]
        return subprocess.CompletedProcess(command, code, "", stderr)

    monkeypatch.setattr(torchrun.subprocess, "run", run)
    return seen


def test_a_gloo_abort_is_run_again_afresh(monkeypatch, tmp_path):
    run_dir = tmp_path / "run"
    seen = _fake_runs(monkeypatch, run_dir, [(1, f"...\n{torchrun.GLOO_ABORT}\n..."), (0, "")])
    assert torchrun.train(["seed=0"], run_dir, nproc=2).returncode == 0
    assert seen == [False, False]  # the retry found no run dir: a fresh run, not a resume


def test_only_the_gloo_abort_is_retried_and_only_once(monkeypatch, tmp_path):
    run_dir = tmp_path / "run"
    seen = _fake_runs(monkeypatch, run_dir, [(1, "ConfigError: bad"), (0, "")])
    assert torchrun.train(["seed=0"], run_dir, nproc=2).returncode == 1 and len(seen) == 1
    seen = _fake_runs(monkeypatch, tmp_path / "twice", [(1, torchrun.GLOO_ABORT), (1, torchrun.GLOO_ABORT)])
    assert torchrun.train(["seed=0"], tmp_path / "twice", nproc=2).returncode == 1 and len(seen) == 2
    seen = _fake_runs(monkeypatch, tmp_path / "one", [(1, torchrun.GLOO_ABORT), (0, "")])
    assert torchrun.train(["seed=0"], tmp_path / "one").returncode == 1 and len(seen) == 1  # one process: no gloo
