"""scripts/sweeps/smoke.sh writes its CSV, tables and figures to their own place; the sweeps' default Python."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_smoke_pipeline_never_writes_the_real_results(tmp_path):
    """Every step of smoke.sh, as the Python it calls sees it: nothing names results/runs.csv, tables or figures."""
    log = tmp_path / "calls"
    fake = tmp_path / "python"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {log}\n')
    fake.chmod(0o755)
    out = tmp_path / "smoke"
    env = {**os.environ, "PYTHON": str(fake), "SMOKE_OUT": str(out)}
    done = subprocess.run(["bash", str(ROOT / "scripts/sweeps/smoke.sh"), "basic"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    calls = log.read_text().splitlines()
    assert calls[0].startswith("train.py -m experiment=smoke")
    assert calls[1:] == [f"scripts/collect.py multirun/smoke --out {out}/runs.csv",
                         f"scripts/make_tables.py --runs {out}/runs.csv --out {out}/tables",
                         f"scripts/plots.py --runs {out}/runs.csv --out {out}/figures"]
    assert str(out) in done.stdout
    env.pop("SMOKE_OUT")
    log.unlink()
    subprocess.run(["bash", str(ROOT / "scripts/sweeps/smoke.sh"), "basic"], env=env, capture_output=True, timeout=60,
                   check=True)
    assert all("results/smoke/" in call for call in log.read_text().splitlines()[1:])


def _python_of_sweeps(env: dict) -> str:
    script = f'source {ROOT}/scripts/sweeps/_common.sh basic; echo "$PYTHON"'
    return subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=60,
                          check=True).stdout.strip()


def test_sweeps_run_the_projects_venv_unless_told_otherwise():
    env = {k: v for k, v in os.environ.items() if k != "PYTHON"}
    expected = ".venv/bin/python" if (ROOT / ".venv/bin/python").exists() else "python"
    assert _python_of_sweeps(env) == expected
    assert _python_of_sweeps({**env, "PYTHON": "/opt/py"}) == "/opt/py"
