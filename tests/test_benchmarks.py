"""Benchmarks run end to end at tiny sizes and write complete results (times are never asserted)."""
from __future__ import annotations

import importlib
import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

from repl.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
TINY = ["trainer.device=cpu", "model=resnet20", "dataset.image_size=16", "dataset.batch_size=32",
        "dataset.num_train=64", "dataset.num_eval=32", "--rounds", "2", "--steps", "3", "--warmup", "1", "--batches", "2"]


def load(name: str) -> ModuleType:
    """Import benchmarks/<name>.py (benchmarks/ is scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_trainer_overhead_writes_json_and_markdown(tmp_path):
    result = load("trainer_overhead").main([*TINY, "--out-dir", str(tmp_path)])
    on_disk = json.loads((tmp_path / "trainer_overhead_cpu.json").read_text())
    assert on_disk == json.loads(json.dumps(result))
    assert {"hardware", "software", "settings", "configs", "goal_met", "load_before", "method"} <= on_disk.keys()
    assert on_disk["hardware"]["cpu"] and on_disk["hardware"]["cpu_cores"] >= 1
    assert on_disk["software"]["torch"] and on_disk["software"]["git_sha"]
    assert on_disk["settings"]["rounds"] == 2 and on_disk["settings"]["steps"] == 3
    assert [c["method"] for c in on_disk["configs"]] == ["bp", "repl"]  # no repl= override: both measured
    for config in on_disk["configs"]:
        assert config["model"] == "resnet20" and config["batch_size"] == 32 and config["config"]["trainer"]
        assert config["trainer_step_s"] > 0 and config["bare_step_s"] > 0 and config["ratio"]["median"] > 0
        assert len(config["rounds_s"]["trainer"]) == len(config["rounds_s"]["bare"]) == 2
    table = (tmp_path / "trainer_overhead_cpu.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| trainer.device=cpu model=resnet20")]
    assert len(rows) == 2 and "repl=none" in rows[0] and "repl=repl" in rows[1]


def test_trainer_overhead_refuses_settings_the_bare_loop_lacks(tmp_path):
    with pytest.raises(ConfigError, match="trainer.grad_clip"):
        load("trainer_overhead").main([*TINY, "repl=none", "trainer.grad_clip=1.0", "--out-dir", str(tmp_path)])


def _gpu_script(*args: str, tmp_path: Path, python: str = "", cwd: Path = ROOT):
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHON": python or sys.executable, "OMP_NUM_THREADS": "1"}
    env.pop("REPL_DRY_GPU", None)
    return subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu.sh"), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300, check=False)


def test_gpu_script_runs_end_to_end_in_dry_mode(tmp_path):
    """benchmarks/gpu.sh --dry: the GPU run's steps at toy sizes on the CPU, so the script does not rot."""
    done = _gpu_script("--dry", "--out-dir", str(tmp_path), tmp_path=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert " passed" in done.stdout and "failed" not in done.stdout  # the cuda-marked tests ran (some on the CPU)
    for name, precision in (("cost_cpu_dry", "32"), ("cost_cpu_bf16_dry", "bf16")):
        result = json.loads((tmp_path / f"{name}.json").read_text())
        assert result["settings"]["precision"] == precision and (tmp_path / f"{name}.md").exists()
        bp, default, kept, rebuilt, *baked = result["models"][0]["configs"]
        assert [c["recompute"] for c in (bp, default, kept, rebuilt)] == [None, "auto", False, True]
        assert [c["baked"] for c in baked] == ([True] if precision == "32" else [])  # fp32 also times baked twins
        assert default["memory"]["activations"] < kept["memory"]["activations"]
    ops = json.loads((tmp_path / "op_time_cpu_dry.json").read_text())  # the per-op split, with the rebuild's own row
    assert [c["label"] for c in ops["models"][0]["configs"]] == ["bp", "lite", "lite kept", "lite rebuilt", "lite baked"]


def _python_shim(tmp_path: Path, body: str) -> str:
    """A PYTHON for gpu.sh: this interpreter, behind a bash script that first runs `body` (it sees "$@")."""
    import sys

    shim = tmp_path / "python"
    shim.write_text(f'#!/usr/bin/env bash\n{body}\nexec "{sys.executable}" "$@"\n')
    shim.chmod(0o755)
    return str(shim)


def test_gpu_script_goes_on_after_a_failed_step_and_fails_at_the_end(tmp_path):
    """A failed step (a missing package, a CUDA error, a time limit) costs that step only: every later step still
    runs (a GPU's time is scarce), and the script exits 1 naming each failed one. Here every step fails at once
    (the interpreter exits 3 for anything but the package check), so the test stays quick."""
    python = _python_shim(tmp_path, '[[ "$1" == "-" ]] || exit 3')
    done = _gpu_script("--dry", "--out-dir", str(tmp_path / "out"), tmp_path=tmp_path, python=python)
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    assert [line for line in done.stdout.splitlines() if line.startswith("== ")][-1].endswith("done: results in "
                                                                                             f"{tmp_path / 'out'}")
    assert done.stderr.strip().splitlines()[-1].startswith(
        "benchmarks/gpu.sh: failed: tests (exit 3) cost fp32 (exit 3) cost bf16 (exit 3) op_time (exit 3)")


def test_gpu_script_names_missing_packages_before_any_step(tmp_path):
    """Without hydra-core (train.py, which the DDP test runs) it stops before the first step, in one line."""
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text("import sys\nsys.modules['hydra'] = None  # not installed\n")
    python = _python_shim(tmp_path, f'export PYTHONPATH="{tmp_path / "site"}:$PYTHONPATH"')
    done = _gpu_script("--dry", tmp_path=tmp_path, python=python)
    assert done.returncode == 2 and "==" not in done.stdout
    assert done.stderr.strip().splitlines() == [
        f"benchmarks/gpu.sh: {python} cannot import: hydra; install the project with its tests' extras "
        "(pip install -e '.[test]'), or point PYTHON at an interpreter that has them"]


def test_gpu_script_refuses_an_unknown_argument_in_one_line(tmp_path):
    done = _gpu_script("--fast", tmp_path=tmp_path)
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        "benchmarks/gpu.sh: unknown argument '--fast'; accepted: --dry, --out-dir DIR, --wheels DIR"]
    done = _gpu_script("--dry", "--wheels", tmp_path=tmp_path)
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        "benchmarks/gpu.sh: --wheels needs a directory; accepted: --dry, --out-dir DIR, --wheels DIR"]


def _wheel(directory: Path, name: str, module: str) -> Path:
    """A minimal pure-Python wheel of one module `name` (what `pip wheel` makes of such a project)."""
    import zipfile

    path = directory / f"{name}-0.1-py3-none-any.whl"
    info = f"{name}-0.1.dist-info"
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr(f"{name}/__init__.py", module)
        wheel.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
        wheel.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        wheel.writestr(f"{info}/RECORD", f"{name}/__init__.py,,\n{info}/METADATA,,\n{info}/WHEEL,,\n{info}/RECORD,,\n")
    return path


def test_gpu_script_unpacks_wheels_onto_the_path_of_every_step(tmp_path):
    """--wheels DIR (a GPU machine without an index or pip): every step imports what DIR's wheels hold. The shim
    interpreter lets the package check and the unpacking through, and makes every step exit 3 when the wheel's
    module imports (4 when it does not), so the test stays quick."""
    import sys

    (tmp_path / "wheels").mkdir()
    _wheel(tmp_path / "wheels", "replprobe", "ANSWER = 42\n")
    check = f'"{sys.executable}" -c "import replprobe; assert replprobe.ANSWER == 42" && exit 3 || exit 4'
    python = _python_shim(tmp_path, f'[[ "$1" == "-" || "$1 $2" == "-m zipfile" ]] || {{ {check}; }}')
    done = _gpu_script("--dry", "--wheels", str(tmp_path / "wheels"), "--out-dir", str(tmp_path / "out"),
                       tmp_path=tmp_path, python=python)
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stderr.strip().splitlines()[-1].startswith(
        "benchmarks/gpu.sh: failed: tests (exit 3) cost fp32 (exit 3) cost bf16 (exit 3) op_time (exit 3)")


def test_gpu_script_refuses_wheels_it_cannot_use_in_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    done = _gpu_script("--dry", "--wheels", "empty", tmp_path=tmp_path, cwd=tmp_path)  # relative: to the caller
    assert done.returncode == 2 and "==" not in done.stdout and done.stderr.strip().splitlines() == [
        f"benchmarks/gpu.sh: --wheels {tmp_path / 'empty'} holds no .whl file; make them where pip works with "
        "'make gpu-wheels'"]
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "torn-0.1-py3-none-any.whl").write_bytes(b"not a zip")
    done = _gpu_script("--dry", "--wheels", str(tmp_path / "bad"), tmp_path=tmp_path)
    assert done.returncode == 2 and "==" not in done.stdout and done.stderr.strip().splitlines() == [
        f"benchmarks/gpu.sh: --wheels: {tmp_path / 'bad' / 'torn-0.1-py3-none-any.whl'} is not a readable wheel "
        "(a zip archive)"]


SCRIPTS = ["cost", "op_time", "conv_paths", "trainer_overhead", "studies.bn_statistics", "studies.checkpointing",
           "studies.inference", "studies.quantize", "studies.stochastic_depth", "studies.transfer"]


@pytest.mark.parametrize("name", SCRIPTS)
def test_an_unwritable_out_dir_stops_every_script_before_it_measures(name, tmp_path, capsys):
    """Every script's --out-dir is made and proven writable while the arguments are read (benchmarks.common.
    output_dir), so a run never measures for minutes and then fails to save: one line, exit 2 (argparse's)."""
    target = tmp_path / "a-file" / "results"  # below a file: no one, root included, can make it
    (tmp_path / "a-file").write_text("")
    with pytest.raises(SystemExit) as stop:
        importlib.import_module(f"benchmarks.{name}").main(["--out-dir", str(target)])
    assert stop.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(
        f"error: argument --out-dir: cannot write to {target}: Not a directory")


@pytest.mark.parametrize("script,args,line", [
    ("trainer_overhead.py", ["model=nope"], "trainer_overhead.py: error: model=nope is not an option of model; choose"),
    ("studies/transfer.py", ["repl.ratio=abc"], "transfer.py: error: repl.ratio: Value 'abc' of type 'str' could not"),
    ("op_time.py", ["--models", "resnet32", "--ratio", "0.9"], "op_time.py: error: --ratio for resnet32: repl.ratio=0.9"),
    ("studies/bn_statistics.py", ["--seeds", "0,x"], "bn_statistics.py: error: argument --seeds: '0,x' is not comma-sep"),
    ("studies/checkpointing.py", ["--steps", "0"], "checkpointing.py: error: argument --steps: '0' is not an integer >= 1"),
    ("studies/inference.py", ["--batch", "vit_b"], "inference.py: error: --batch takes MODEL=INT (INT >= 1) with MODEL"),
    # an empty list would run nothing and write an empty result over the default one
    ("cost.py", ["--models", ","], "cost.py: error: --models: ',' names nothing; give at least one of resnet32"),
    ("cost.py", ["--models", "resnet32", "--ratios", ","], "cost.py: error: --ratios: ',' names nothing"),
    ("cost.py", ["--models", "resnet32", "--surrogates", ","], "cost.py: error: --surrogates: ',' names nothing"),
    ("op_time.py", ["--models", ","], "op_time.py: error: --models: ',' names nothing"),
    ("studies/inference.py", ["--models", ",", "--rounds", "1"], "inference.py: error: --models: ',' names nothing"),
    ("studies/bn_statistics.py", ["--seeds", ","], "bn_statistics.py: error: argument --seeds: ',' names no integer"),
    # a ratio the model cannot take, before anything is measured
    ("cost.py", ["--models", "resnet32", "--ratios", "0.9", "--surrogates", "lite"],
     "cost.py: error: --ratios for resnet32: repl.ratio=0.9 asks for 14 of 15 blocks"),
    ("studies/inference.py", ["--models", "lm", "--ratio", "0.9"], "inference.py: error: --ratio for lm: repl.ratio=0.9"),
    ("studies/checkpointing.py", ["--model", "lm", "--ratio", "0.9"], "checkpointing.py: error: --ratio for lm: repl.ratio"),
    ("studies/checkpointing.py", ["--ratio", "foo"], "checkpointing.py: error: argument --ratio: 'foo' is not 'max' or"),
    # a device this machine does not have, or no device at all
    ("cost.py", ["--device", "foo"], "cost.py: error: --device: 'foo' is not one of auto, cpu, cuda or cuda:N"),
    ("studies/checkpointing.py", ["--device", "foo"], "checkpointing.py: error: --device: 'foo' is not one of auto"),
    # every training configuration is planned before the first measurement or run
    ("trainer_overhead.py", ["repl.ratio=0.9", "--rounds", "1", "--steps", "1", "--warmup", "1", "--batches", "1"],
     "trainer_overhead.py: error: repl.ratio=0.9 asks for 14 of 15 blocks"),
    ("studies/stochastic_depth.py", ["repl.ratio=0.9", "trainer.max_steps=3"],
     "stochastic_depth.py: error: repl.ratio=0.9 asks for 14 of 15 blocks"),
    ("studies/transfer.py", ["repl.ratio=0.9"], "transfer.py: error: repl.ratio=0.9 asks for 14 of 15 blocks"),
    ("studies/bn_statistics.py", ["--max-ratio", "0.9"], "bn_statistics.py: error: --max-ratio: repl.ratio=0.9 asks for 8"),
    ("studies/bn_statistics.py", ["--max-ratio", "x"], "bn_statistics.py: error: argument --max-ratio: 'x' is not a number"),
    ("studies/bn_statistics.py", ["--seeds", "-1"], "bn_statistics.py: error: argument --seeds: '-1': every item must be"),
    # a key the study sets itself is refused, not silently replaced
    ("studies/bn_statistics.py", ["model=resnet32", "repl.ratio=0.4"],
     "bn_statistics.py: error: repl.ratio=0.4: this study sets repl.ratio itself in its runs; the RepL rows run 0.25 and"),
    ("studies/bn_statistics.py", ["seed=3"], "bn_statistics.py: error: seed=3: this study sets seed itself in its runs; use"),
])

def test_a_scripts_bad_input_is_one_error_line_with_no_traceback(script, args, line, tmp_path, monkeypatch, capsys):
    """As `python benchmarks/<script> ...` runs it (benchmarks.common.script_main, argparse types), in this process
    to spare a torch import per case (the next test runs real processes): a bad override, value or ratio ends the
    script with exit status 2 and one `<script>: error:` line, before anything is measured or written."""
    code = _script_main_in_process(script, [*args, "--out-dir", str(tmp_path / "out")], tmp_path, monkeypatch)
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err[-2000:]
    assert err.strip().splitlines()[-1].startswith(line)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())  # nothing written


def _script_main_in_process(script: str, argv: list, cwd: Path, monkeypatch) -> int:
    """benchmarks/<script>'s `__main__` (script_main(main)) with sys.argv set as the shell would; its exit status.
    The process-wide settings a script makes before measuring (torch's thread count, glibc's malloc) are kept
    from leaking into later tests."""
    import sys

    import torch

    from benchmarks.common import script_main

    module = importlib.import_module("benchmarks." + script.removesuffix(".py").replace("/", "."))
    monkeypatch.setattr(sys, "argv", [str(ROOT / "benchmarks" / script), *argv])
    monkeypatch.chdir(cwd)
    if hasattr(module, "steady_allocator"):
        monkeypatch.setattr(module, "steady_allocator", lambda: False)
    threads = torch.get_num_threads()
    try:
        with pytest.raises(SystemExit) as stop:
            script_main(module.main)
    finally:
        torch.set_num_threads(threads)
    return stop.value.code


@pytest.mark.parametrize("script,args,line", [
    ("trainer_overhead.py", ["model=nope"], "trainer_overhead.py: error: model=nope is not an option of model; choose"),
    ("studies/transfer.py", ["repl.ratio=0.9"], "transfer.py: error: repl.ratio=0.9 asks for 14 of 15 blocks"),
])
def test_a_real_scripts_bad_input_is_one_error_line(script, args, line, tmp_path):
    """The same from a real `python benchmarks/<script>` process: what reaches the terminal is that one line."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args, "--out-dir", str(tmp_path / "out")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1].startswith(line)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without a CUDA GPU")
@pytest.mark.parametrize("script", ["cost.py", "op_time.py", "studies/inference.py"])
def test_device_cuda_without_a_gpu_is_one_error_line(script, tmp_path, monkeypatch, capsys):
    code = _script_main_in_process(script, ["--device", "cuda", "--out-dir", str(tmp_path / "out")], tmp_path, monkeypatch)
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err[-2000:]
    assert err.strip().splitlines() == [
        f"{Path(script).name}: error: --device: 'cuda', but this machine has no usable CUDA GPU; use --device cpu or auto"]
    assert not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize("where", ["a-file", "a-file/below"])
def test_gpu_script_refuses_an_out_dir_it_cannot_write_before_any_step(where, tmp_path):
    """--out-dir is proven a writable directory before the tests step spends (GPU) time: one line, exit 2."""
    (tmp_path / "a-file").write_text("")
    done = _gpu_script("--dry", "--out-dir", str(tmp_path / where), tmp_path=tmp_path)
    assert done.returncode == 2 and "==" not in done.stdout
    assert done.stderr.strip().splitlines() == [
        f"benchmarks/gpu.sh: --out-dir: cannot write to {tmp_path / where}; give a writable directory"]
