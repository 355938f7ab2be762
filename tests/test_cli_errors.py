"""Bad input through the command line: exit status 2, one stderr line naming the key, no traceback, no run written.

The entry point runs in-process (repl.cli.main with sys.argv) so the table stays quick; one case runs
in a real process to show the same holds for `python train.py`. Should a bad input be accepted, the
run it starts is a few steps long (TINY, max_steps=2), and the test fails on what it wrote.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from repl import cli
from repl.config import run_dirname
from tests.engine.test_training import TINY

ROOT = Path(__file__).resolve().parents[1]
QUICK = TINY + ["trainer.max_steps=2"]
NAME_MAX = os.pathconf(ROOT, "PC_NAME_MAX")  # the longest file name this filesystem takes

BAD = [  # (command-line arguments, what the one line must contain)
    # Hydra's own errors: wrong type, unknown option, misspelt key, unparsable override, deletion
    (["trainer.epochs=three"], "trainer.epochs"),
    (["trainer.epoch=3"], "trainer.epoch is not a config key; did you mean trainer.epochs?"),
    (["repl.ratioo=0.4"], "did you mean repl.ratio?"),
    (["trainer.lr=0.1"], "trainer.lr is not a config key; did you mean optim.lr?"),  # a key under another group
    (["trainer.seed=1"], "trainer.seed is not a config key; did you mean seed?"),
    (["epochs=3"], "epochs is not a config key; did you mean trainer.epochs?"),
    (["dataset=nope"], "dataset=nope is not an option of dataset; choose one of"),
    (["optim=lamb"], "optim=lamb is not an option of optim"),
    (["repl.ratio=["], "repl.ratio=["),
    (["~repl.ratio"], "repl.ratio"),
    (["optim.betas=0.5"], "optim.betas"),
    (["model.kwargs.depth=3"], "+model.kwargs.depth=VALUE"),
    # the same in a multirun: refused before any job
    (["-m", "trainer.epoch=1,2"], "did you mean trainer.epochs?"),
    (["-m", "dataset=nope,synthetic"], "dataset=nope"),
    (["-m", "optim.lr=0.1,inf"], "optim.lr=inf"),  # the good job must not train first
    (["-m", "repl.ratio=0.1,0.2", "seed=0,-1"], "seed=-1"),
    (["seed=0", "-m", "repl.ratio=0.1,0.2"], "unrecognized arguments repl.ratio=0.1,0.2"),  # -m after an override
    # values and keys refused at to_config
    (["optim.lr=inf"], "optim.lr=inf"),
    (["seed=-1"], "seed=-1"),
    (["+repl.ratioo=0.4"], "did you mean repl.ratio?"),
    # a text dataset under the image keys of QUICK: a key of the other kind, refused at composition
    (["dataset=synthetic_text"], "dataset.image_size is a key of image data (task=classification"),
    # a true/false key given a number: OmegaConf alone reads any integer as true
    (["repl.neighbor_grad=5"], "repl.neighbor_grad=5: repl.neighbor_grad takes true or false"),
    (["trainer.compile=2"], "trainer.compile=2: trainer.compile takes true or false"),
    (["-m", "repl.neighbor_grad=true,5"], "repl.neighbor_grad=5: repl.neighbor_grad takes true or false"),
    (["repl.recompute=maybe"], "repl.recompute='maybe' is not supported; choose one of true, false, auto"),
    # what a single run would silently not do
    (["launcher=slurm"], "add -m"),
    (["launcher=local"], "launcher=local"),
    # a config group given anything but one option name: Hydra merges a list's options and trains the last
    (["repl=[none,drop]"], "repl=[none,drop]: a config group takes one option; to run each, sweep with -m repl=none,drop"),
    (["-m", "optim=[sgd,adamw]"], "optim=[sgd,adamw]: a config group takes one option; to run each, "
                                  "sweep with -m optim=sgd,adamw"),
    (["trainer=5"], "trainer=5: the config group trainer takes one of debug, default"),
    (["launcher=null"], "~launcher to unset it"),
    # an override without a key: Hydra raises a bare ValueError for `=5`
    (["=5"], "cannot parse the override '=5'"),
    (["-m", "=5"], "cannot parse the override '=5'"),
    # what a job's run refuses once built, found before the first job trains: the plan, the model, the data
    (["-m", "repl.ratio=0.25,0.9"], "repl.ratio=0.9 asks for 8 of 9 blocks; this cifar_resnet model allows at most 4 "
                                    "(repl.ratio <= 0.444) (in the job repl.ratio=0.9; no job was started)"),
    (["-m", "repl.select=similarity", "repl.ratio=0.25,0.9"], "repl.ratio=0.9 asks for 8 of 9 blocks"),  # before scoring
    (["-m", "model.name=resnet20,resnet1000"], "model.name='resnet1000' is unknown"),
    (["-m", "dataset=cifar10", "dataset.root=/nonexistent/a,/nonexistent/b"],
     "CIFAR-10 not found: /nonexistent/a/cifar-10-batches-py/data_batch_1 does not exist"),
]


def _run_cli(monkeypatch, capsys, args: list, run_dir: Path) -> tuple:
    """repl.cli.main on these arguments: (exit status, stderr)."""
    monkeypatch.setattr(sys, "argv", ["train.py", *args, f"hydra.run.dir={run_dir}",
                                      f"hydra.sweep.dir={run_dir / 'sweep'}"])
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(SystemExit) as stopped:
        cli.main()
    return stopped.value.code, capsys.readouterr().err


def _assert_one_line(code, stderr: str, expected: str) -> None:
    lines = stderr.strip().splitlines()
    assert code == 2, stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], stderr
    assert "Traceback" not in stderr


def _nothing_trained(run_dir: Path) -> bool:
    return not any(run_dir.rglob("summary.json")) and not any(run_dir.rglob("checkpoints"))


@pytest.mark.parametrize("args,expected", BAD, ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_bad_input_is_one_line_before_any_compute(monkeypatch, capsys, tmp_path, args, expected):
    code, stderr = _run_cli(monkeypatch, capsys, args + QUICK, tmp_path / "run")
    _assert_one_line(code, stderr, expected)
    assert _nothing_trained(tmp_path)


def test_run_dir_under_a_file_is_one_line(monkeypatch, capsys, tmp_path):
    (tmp_path / "file").write_text("")
    code, stderr = _run_cli(monkeypatch, capsys, QUICK, tmp_path / "file" / "run")
    _assert_one_line(code, stderr, str(tmp_path / "file"))


def test_too_long_run_dir_given_by_the_user_is_one_line(monkeypatch, capsys, tmp_path):
    code, stderr = _run_cli(monkeypatch, capsys, QUICK, tmp_path / ("x" * (NAME_MAX + 1)))
    _assert_one_line(code, stderr, "File name too long")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_run_dir_is_one_line(monkeypatch, capsys, tmp_path):
    tmp_path.chmod(0o555)
    try:
        code, stderr = _run_cli(monkeypatch, capsys, QUICK, tmp_path / "run")
    finally:
        tmp_path.chmod(0o755)
    _assert_one_line(code, stderr, str(tmp_path))


def test_a_run_dir_whose_log_file_cannot_be_opened_is_one_line(monkeypatch, capsys, tmp_path):
    """Python's logging, configured by Hydra before the task runs, raises ValueError from the OSError: one line
    naming the file (a directory in train.log's place fails for root too, where chmod does not)."""
    (tmp_path / "run" / "train.log").mkdir(parents=True)
    code, stderr = _run_cli(monkeypatch, capsys, QUICK, tmp_path / "run")
    _assert_one_line(code, stderr, str(tmp_path / "run" / "train.log"))
    assert "Is a directory" in stderr


def test_online_wandb_without_a_key_is_one_line(monkeypatch, capsys, tmp_path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    code, stderr = _run_cli(monkeypatch, capsys, QUICK + ["logger=wandb", "logger.mode=online"], tmp_path / "run")
    _assert_one_line(code, stderr, "logger.mode=online")
    assert _nothing_trained(tmp_path)


def test_slurm_launcher_without_slurm_is_one_line_before_any_job(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch, no srun (submitit would raise after the sweep began)
    code, stderr = _run_cli(monkeypatch, capsys, ["-m", "launcher=slurm", "repl.ratio=0.25,0.4"] + QUICK, tmp_path / "run")
    _assert_one_line(code, stderr, "launcher=slurm needs SLURM's sbatch and srun on PATH")
    assert "use launcher=local or no launcher to run here" in stderr
    assert _nothing_trained(tmp_path)


def test_default_run_dir_of_many_overrides_fits_a_file_name():
    overrides = ",".join(f"model.kwargs.option_number_{i}=value_{i}" for i in range(17))
    name = run_dirname(overrides)
    assert len(name) <= NAME_MAX and name.startswith(overrides[:100])
    assert run_dirname(overrides) == name  # deterministic: a rerun finds its checkpoint
    assert run_dirname(overrides + "x") != name  # and distinct
    assert run_dirname("repl.ratio=0.4") == "repl.ratio=0.4"  # short names are unchanged


@pytest.mark.slow
def test_a_real_process_prints_one_line_for_a_misspelt_key(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "train.py"), "trainer.epoch=3", f"hydra.run.dir={tmp_path}"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env={k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"})
    _assert_one_line(result.returncode, result.stderr, "did you mean trainer.epochs?")


def test_local_launcher_without_submitit_says_how_to_install_it(tmp_path):
    """Without the slurm extra Hydra finds no submitit launcher plugin and would list `basic` as the only option of
    hydra/launcher: the line names the user's launcher= and the extra instead (a fresh process: Hydra caches plugins)."""
    code = ("import sys; sys.modules['hydra_plugins.hydra_submitit_launcher'] = None; "
            f"sys.argv = ['train.py', '-m', 'launcher=local', 'trainer=debug', 'hydra.sweep.dir={tmp_path}']; "
            "from repl.cli import main; main()")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env={k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"})
    _assert_one_line(result.returncode, result.stderr, "launcher=local needs submitit")
    assert "pip install 'replacement-learning[slurm]'" in result.stderr
    assert _nothing_trained(tmp_path)
