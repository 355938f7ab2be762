"""scripts/synthetic_methods.sh: the committed results/synthetic/*.json are replaced only by completed runs of the
default setting, whole; a run with extra overrides gets its own directory and leaves them alone."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Stands in for `python train.py`: writes the summary a run would, "completed" unless FAIL_RUN names the run directory.
FAKE_TRAIN = """#!{python}
import json, os, sys
if sys.argv[1] == "-c":  # the script's own check of a summary: real Python
    os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
run = next(a.split("=", 1)[1] for a in sys.argv if a.startswith("hydra.run.dir="))
os.makedirs(run, exist_ok=True)
status = "failed" if os.environ.get("FAIL_RUN") and run.endswith(os.environ["FAIL_RUN"]) else "completed"
json.dump({{"status": status, "argv": sys.argv[2:]}}, open(os.path.join(run, "summary.json"), "w"))
"""


def _checkout(tmp_path: Path) -> Path:
    """A tree holding the script and the committed results it copies over."""
    tree = tmp_path / "tree"
    (tree / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "synthetic_methods.sh", tree / "scripts")
    shutil.copytree(ROOT / "results" / "synthetic", tree / "results" / "synthetic")
    fake = tree / "fake_python"
    fake.write_text(FAKE_TRAIN.format(python=sys.executable))
    fake.chmod(0o755)
    return tree


def _run(tree: Path, *overrides: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "scripts/synthetic_methods.sh", *overrides], cwd=tree, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PY": str(tree / "fake_python"), **env})


def _results(tree: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted((tree / "results" / "synthetic").iterdir())}


def test_extra_overrides_get_their_own_runs_and_leave_the_committed_results(tmp_path):
    tree = _checkout(tmp_path)
    before = _results(tree)
    done = _run(tree, "seed=1")
    assert done.returncode == 0, done.stderr
    assert _results(tree) == before
    assert (tree / "outputs/synthetic_methods/resnet32_bp__seed=1/summary.json").is_file()
    assert not (tree / "outputs/synthetic_methods/resnet32_bp").exists()  # the default setting's run dir


def test_completed_default_runs_replace_their_results_and_a_failed_one_stops_before_its_copy(tmp_path):
    tree = _checkout(tmp_path)
    done = _run(tree, FAIL_RUN="resnet32_drop_025")
    assert done.returncode == 1 and "resnet32_drop_025 did not complete" in done.stderr
    copied = json.loads((tree / "results/synthetic/resnet32_bp.json").read_text())
    assert copied["status"] == "completed" and "repl=none" in copied["argv"]
    assert (tree / "results/synthetic/resnet32_drop_025.json").read_bytes() == \
        (ROOT / "results/synthetic/resnet32_drop_025.json").read_bytes()
    assert not list((tree / "results/synthetic").glob(".*.tmp"))
