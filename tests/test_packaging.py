"""The built wheel, installed into a fresh venv outside the checkout: configs, training, export, results.

No download: the wheel is built without build isolation from a copy of the files it is made of, and
the venv sees the test environment's installed dependencies through a .pth file (a path entry, so
that environment's own .pth files, an editable `repl` among them, are not run).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

from tests.engine.test_training import TINY

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ["pyproject.toml", "setup.py", "README.md", "LICENSE", "repl", "configs", "scripts", "results/paper.csv"]


def _run(*cmd, cwd: Path, env: dict, timeout: int = 300) -> subprocess.CompletedProcess:
    result = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{cmd}: {result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result


def build_wheel(tmp: Path) -> Path:
    """The wheel built from a copy of the checkout's shipped files (the checkout gets no build/)."""
    src = tmp / "src"
    for name in SOURCES:
        target = src / name
        target.parent.mkdir(parents=True, exist_ok=True)
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy2
        copy(ROOT / name, target, **({"ignore": shutil.ignore_patterns("__pycache__")} if copy is shutil.copytree else {}))
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
         "-w", tmp / "dist", ".", cwd=src, env=_env())
    (wheel,) = (tmp / "dist").glob("replacement_learning-*.whl")
    return wheel


def _env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    return {**env, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INDEX": "1", **extra}


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The bin/ directory of a fresh venv holding the wheel; dependencies come from this environment."""
    tmp = tmp_path_factory.mktemp("wheel")
    wheel = build_wheel(tmp)
    home = tmp / "venv"
    venv.create(home, with_pip=False)
    python = home / "bin" / "python"
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    Path(purelib, "test_dependencies.pth").write_text("".join(f"{d}\n" for d in sorted(deps)))
    _run(python, "-m", "pip", "install", "--no-deps", "--no-index", "-q", wheel, cwd=tmp, env=_env())
    return home / "bin"


@pytest.mark.slow
def test_the_wheel_carries_every_config_and_trains_exports_and_tabulates_outside_the_checkout(installed, tmp_path):
    env = _env(WANDB_MODE="offline")
    where = _run(installed / "python", "-c",
                 "import repl, repl.config as c; print(repl.__file__); print(c.config_dir())", cwd=tmp_path, env=env)
    package_file, configs = where.stdout.split()
    assert Path(package_file).is_relative_to(installed.parent) and Path(configs).is_relative_to(installed.parent)
    shipped = {p.relative_to(configs) for p in Path(configs).rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    source = {p.relative_to(ROOT / "configs") for p in (ROOT / "configs").rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    assert shipped == source

    help_text = _run(installed / "repl-train", "--help", cwd=tmp_path, env=env).stdout
    for group in sorted({p.parts[0] for p in source if len(p.parts) > 1 and p.suffix == ".yaml"}):
        assert f"{group}:" in help_text

    _run(installed / "repl-train", *TINY, "trainer.max_steps=2", "repl.surrogate=lite", cwd=tmp_path, env=env)
    (summary,) = (tmp_path / "outputs").rglob("summary.json")
    _run(installed / "repl-export", summary.parent, cwd=tmp_path, env=env)
    assert (summary.parent / "export" / "model.safetensors").is_file()

    collected = _run(installed / "repl-collect", "--out", "runs.csv", cwd=tmp_path, env=env)
    assert "collected 1 runs (1 completed)" in collected.stdout
    tables = _run(installed / "repl-tables", "--runs", "runs.csv", "--out", "tables", cwd=tmp_path, env=env)
    assert (tmp_path / "tables" / "other.md").is_file(), tables.stdout  # the run feeds no paper table
    assert len(list((tmp_path / "tables").glob("*.md"))) > 1  # the paper's tables, from the shipped paper.csv
