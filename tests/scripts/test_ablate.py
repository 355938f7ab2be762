"""scripts/ablate.py: every variant validates before any run, runs are resumable records, the table is computed
from the summaries (mean +- std over seeds, ratios to backprop)."""
from __future__ import annotations

import importlib
import json
import statistics
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
sys.path.insert(0, str(SCRIPTS))
ablate = importlib.import_module("ablate")

TINY = ["--set", "dataset.num_train=64", "--set", "dataset.num_eval=32", "--set", "dataset.batch_size=32",
        "--set", "dataset.image_size=8", "--set", "model=resnet20", "--set", "trainer.bn_recalibrate=1"]


def test_every_variant_of_every_suite_is_a_valid_config():
    runs = ablate.planned_runs(ablate.parse_args(["--seeds", "0"]))
    assert {run["suite"] for run in runs} == set(ablate.SUITES)
    ablate.validate(runs)  # raises SystemExit with one line on the first invalid variant
    assert all(run["config"].seed == 0 for run in runs)
    for run in runs:  # every variant is its suite's base setting plus its own overrides
        assert run["overrides"][: len(ablate.SUITES[run["suite"]].base)] == ablate.SUITES[run["suite"]].base


@pytest.mark.parametrize("argv, message", [
    (["--suite", "vision"], "--suite: 'vision' is not one of"),
    (["--suite", "foo"], "--suite: 'foo' is not one of"),
    (["--seeds", "one"], "--seeds: 'one' is not comma-separated integers >= 0"),
    (["--seeds", "-1"], "--seeds: '-1' is not comma-separated integers >= 0"),
    (["--seeds", ","], "--seeds: ',' names nothing"),
    (["--variants", "repl_magic"], "--variants: 'repl_magic' is not one of"),
    (["--set", "seed=5"], "--set seed=5: every run's seed comes from --seeds"),
])
def test_bad_arguments_stop_with_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        ablate.main([*argv, "--list"])
    assert info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"ablate.py: error: {message}")


def test_an_invalid_override_stops_before_any_run(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        ablate.main(["--suite", "classification", "--seeds", "0", "--set", "repl.fusion=magic",
                     "--runs-dir", str(tmp_path / "runs"), "--out-dir", str(tmp_path / "out")])
    assert info.value.code == 2 and "repl.fusion='magic'" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_a_run_dir_of_other_settings_stops_before_any_run(tmp_path, capsys):
    """A run directory already holding a run of other overrides is found while validating, not after other variants
    trained (the trainer would refuse to resume it)."""
    argv = ["--suite", "lm", "--seeds", "0", "--variants", "repl", "--runs-dir", str(tmp_path / "runs"),
            "--out-dir", str(tmp_path / "out")]
    stale = tmp_path / "runs" / "lm" / "repl" / "seed0" / ".hydra"
    stale.mkdir(parents=True)
    (stale / "overrides.yaml").write_text("- optim.lr=0.5\n")
    with pytest.raises(SystemExit) as info:
        ablate.main(argv)
    assert info.value.code == 2
    assert "holds a run of other settings (optim.lr=0.5)" in capsys.readouterr().err
    assert not list((tmp_path / "runs").glob("**/summary.json"))


def test_runs_of_other_set_values_live_in_their_own_directories():
    args = ablate.parse_args(["--suite", "lm", "--seeds", "0", "--variants", "repl", "--set", "optim.lr=0.5"])
    other = ablate.parse_args(["--suite", "lm", "--seeds", "0", "--variants", "repl"])
    dirs = {run["run_dir"] for run in ablate.planned_runs(args)}
    assert dirs.isdisjoint(run["run_dir"] for run in ablate.planned_runs(other))


def test_the_table_is_computed_from_the_runs_and_a_rerun_trains_nothing(tmp_path, capsys):
    argv = ["--suite", "classification", "--seeds", "0,1", "--variants", "drop,repl", "--set", "trainer.max_steps=2",
            *TINY, "--runs-dir", str(tmp_path / "runs"), "--out-dir", str(tmp_path / "out")]
    assert ablate.main(argv) == 0
    # a narrowed run (some variants and seeds, --set) writes beside the full suite's table, never over it
    assert not (tmp_path / "out" / "classification.json").exists()
    result = json.loads((tmp_path / "out" / "classification_narrowed.json").read_text())
    assert list(result["variants"]) == ["bp", "drop", "repl"]  # backprop joins: every ratio is taken against it
    runs = tmp_path / "runs" / "classification"
    setting = ablate.set_label(["trainer.max_steps=2", *TINY[1::2]]) if TINY else ""
    summaries = {v: [json.loads((runs / v / setting / f"seed{s}" / "summary.json").read_text()) for s in (0, 1)]
                 for v in result["variants"]}
    for variant, row in result["variants"].items():
        values = [s["primary"]["value"] for s in summaries[variant]]
        assert row["value"]["mean"] == pytest.approx(statistics.fmean(values))
        assert row["value"]["std"] == pytest.approx(statistics.stdev(values))
        trainable = statistics.median(s["params"]["trainable"] for s in summaries[variant])
        assert row["params_ratio"] == pytest.approx(trainable / summaries["bp"][0]["params"]["trainable"])
    assert result["variants"]["repl"]["params_ratio"] < 1 and result["variants"]["bp"]["params_ratio"] == 1
    assert (runs / "repl" / setting / "seed0" / ".hydra" / "config.yaml").exists()
    table = (tmp_path / "out" / "classification_narrowed.md").read_text()
    assert "| repl |" in table and "mean +- std" in table
    stamp = (runs / "repl" / setting / "seed0" / "summary.json").stat().st_mtime_ns
    assert ablate.main(argv) == 0  # completed runs are read back, not trained again
    assert (runs / "repl" / setting / "seed0" / "summary.json").stat().st_mtime_ns == stamp


@pytest.mark.parametrize("flag", ["--runs-dir", "--out-dir"])
def test_an_unwritable_directory_stops_before_any_run(flag, tmp_path, capsys):
    """Both directories are made and proven writable once the variants validate, before anything trains: a suite's
    table that could not be written would otherwise be found out only after its runs."""
    (tmp_path / "a-file").write_text("")
    dirs = {"--runs-dir": str(tmp_path / "runs"), "--out-dir": str(tmp_path / "out"), flag: str(tmp_path / "a-file" / "d")}
    with pytest.raises(SystemExit) as info:
        ablate.main(["--suite", "classification", "--seeds", "0", *TINY, *(x for kv in dirs.items() for x in kv)])
    assert info.value.code == 2
    assert capsys.readouterr().err.startswith(f"ablate.py: error: {flag}: cannot write to {tmp_path / 'a-file' / 'd'}: ")
    assert not list((tmp_path / "runs").glob("**/summary.json"))


def test_a_negative_thread_count_is_refused_in_one_line(capsys):
    with pytest.raises(SystemExit):
        ablate.main(["--threads", "-1", "--list"])
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith("argument --threads: '-1' is not an integer >= 0")
