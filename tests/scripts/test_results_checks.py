"""make_tables/plots: bad cells and table names are one error line; figures are written atomically; stale
outputs are listed; a completed run without the metric is not counted as completed; the CPU model is shown."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from repl.engine.measure import env as env_module
from tests.scripts.test_results import (PAPER_TOP1, _csv, _run_dir, _summary, _tables_refuse, collect, fixture_runs,
                                        make_tables, plots)

__all__ = ["fixture_runs"]  # the fixture, used by name


def _collected(root: Path, tmp_path: Path) -> Path:
    runs = tmp_path / "runs.csv"
    assert collect.main([str(root), "--out", str(runs)]) == 0
    sys.stdout.flush()
    return runs


def _paper(tmp_path: Path, value: str = str(PAPER_TOP1), table: str = "classification") -> Path:
    paper = tmp_path / "paper.csv"
    paper.write_text(f"table,row,experiment,metric,value\n{table},cifar10/1,cifar10_resnet56,top1,{value}\n")
    return paper


def test_a_paper_value_that_is_not_a_number_is_one_line(fixture_runs, tmp_path, capsys):
    runs, paper = _collected(fixture_runs, tmp_path), _paper(tmp_path, "n/a")
    capsys.readouterr()
    err = _tables_refuse(capsys, "--runs", str(runs), "--paper", str(paper), "--out", str(tmp_path / "t"))
    assert err.startswith(f"error: {paper} row 2 column value: 'n/a' is not a number")
    assert not (tmp_path / "t").exists()


@pytest.mark.parametrize("table", ["", "../../x", "a/b", ".hidden"])
def test_a_table_name_that_is_not_a_file_stem_is_refused(fixture_runs, tmp_path, capsys, table):
    runs, paper = _collected(fixture_runs, tmp_path), _paper(tmp_path, table=table)
    capsys.readouterr()
    err = _tables_refuse(capsys, "--runs", str(runs), "--paper", str(paper), "--out", str(tmp_path / "t" / "u"))
    assert err.startswith(f"error: {paper} row 2 column table: {table!r} is not a table name")
    assert not (tmp_path / "t").exists() and not (tmp_path / "x.md").exists()


@pytest.mark.parametrize("column, value", [("ratio", "zero"), ("metric.top1", "nan?")])
def test_a_runs_cell_that_is_not_a_number_is_one_line_in_tables_and_plots(fixture_runs, tmp_path, capsys, column, value):
    runs = _collected(fixture_runs, tmp_path)
    rows = _csv(runs)
    index = next(i for i, r in enumerate(rows) if r["status"] == "completed" and not r["problem"])
    text = runs.read_text().splitlines()
    header = text[0].split(",")
    cells = text[index + 1].split(",")
    cells[header.index(column)] = value
    text[index + 1] = ",".join(cells)
    runs.write_text("\n".join(text) + "\n")
    capsys.readouterr()
    expected = f"error: {runs} row {index + 2} column {column}: {value!r} is not a number"
    err = _tables_refuse(capsys, "--runs", str(runs), "--paper", str(_paper(tmp_path)), "--out", str(tmp_path / "t"))
    assert err.startswith(expected)
    with pytest.raises(SystemExit) as stop:
        plots.main(["--runs", str(runs), "--out", str(tmp_path / "figures")])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.startswith(expected) and err.count("\n") == 1
    assert not (tmp_path / "figures").exists()  # --out is not made before --runs is known good


def test_plots_make_no_out_directory_for_a_bad_runs_file(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        plots.main(["--runs", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "figures")])
    assert stop.value.code == 2 and not (tmp_path / "figures").exists()


def test_figures_are_replaced_atomically(fixture_runs, tmp_path, monkeypatch):
    """A figure appears by os.replace of a finished temporary file; a failure while rendering leaves the old one."""
    runs, out = _collected(fixture_runs, tmp_path), tmp_path / "figures"
    assert plots.main(["--runs", str(runs), "--out", str(out)]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    replaced = []
    real = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: (replaced.append(Path(dst).name), real(src, dst)))
    assert plots.main(["--runs", str(runs), "--out", str(out)]) == 0
    assert sorted(replaced) == sorted(before)
    monkeypatch.setattr(plots.plt.Figure, "savefig", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        plots.main(["--runs", str(runs), "--out", str(out)])
    assert all(len(p.read_bytes()) == len(before[p.name]) > 1000 for p in out.iterdir())
    assert sorted(p.name for p in out.iterdir()) == sorted(before)


def test_outputs_not_rewritten_are_listed_and_kept(fixture_runs, tmp_path, capsys):
    runs, out = _collected(fixture_runs, tmp_path), tmp_path / "tables"
    out.mkdir()
    (out / "old_table.md").write_text("from an earlier runs.csv")
    (out / "notes.txt").write_text("user file")
    capsys.readouterr()
    assert make_tables.main(["--runs", str(runs), "--paper", str(_paper(tmp_path)), "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert "not rewritten" in stdout and str(out / "old_table.md") in stdout and "classification.md" not in \
        stdout.split("not rewritten")[1]
    assert (out / "old_table.md").read_text() == "from an earlier runs.csv" and (out / "notes.txt").exists()
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "gone_metric_vs_ratio.png").write_bytes(b"x")
    assert plots.main(["--runs", str(runs), "--out", str(tmp_path / "figures")]) == 0
    assert "gone_metric_vs_ratio.png" in capsys.readouterr().out


def test_a_completed_run_without_the_metric_counts_as_not_completed(tmp_path):
    root = tmp_path / "multirun"
    for seed, top1 in ((0, 90.0), (1, 92.0)):
        _run_dir(root, "r", json.dumps(_summary(0.25, seed, top1)), seed)
    summary = _summary(0.25, 2, 0.0)
    summary["metrics"] = {"loss": 0.5}  # the primary is there, top1 is not
    _run_dir(root, "r", json.dumps(summary), 2)
    runs, out = _collected(root, tmp_path), tmp_path / "tables"
    assert make_tables.main(["--runs", str(runs), "--paper", str(_paper(tmp_path)), "--out", str(out)]) == 0
    row = next(line for line in (out / "classification.md").read_text().splitlines() if "| repl |" in line)
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[4] == "2" and cells[11] == "1 (1 completed without top1)"


def test_the_cpu_model_is_recorded_and_shown(tmp_path, monkeypatch):
    monkeypatch.setattr(env_module, "cpu_model", lambda: "Test CPU 9000")
    info = env_module.environment_info("cpu")
    assert info["device"] == "cpu" and info["cpu"] == "Test CPU 9000"
    root = tmp_path / "multirun"
    for seed in (0, 1):
        summary = _summary(0.25, seed, 90.0 + seed)
        summary["env"]["cpu"] = "Test CPU 9000"
        _run_dir(root, "r", json.dumps(summary), seed)
    runs, out = _collected(root, tmp_path), tmp_path / "tables"
    assert make_tables.main(["--runs", str(runs), "--paper", str(_paper(tmp_path)), "--out", str(out)]) == 0
    assert "| cpu (Test CPU 9000) |" in (out / "classification.md").read_text()


def test_cpu_model_reads_proc_cpuinfo():
    model = env_module.cpu_model()
    assert isinstance(model, str) and model
    if Path("/proc/cpuinfo").exists() and "model name" in Path("/proc/cpuinfo").read_text():
        assert model != "unknown"


@pytest.mark.parametrize("script", [make_tables, plots])
def test_help_names_each_option_and_its_default(script, capsys):
    with pytest.raises(SystemExit):
        script.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: results/runs.csv)" in text and "--out" in text and "(default: results/" in text.split("--out")[-1]


def test_a_training_curve_skips_metrics_lines_it_cannot_plot(tmp_path):
    """metrics.jsonl lines cut by a kill, without a step, or not a record are skipped, not a KeyError."""
    (tmp_path / "metrics.jsonl").write_text("\n".join([
        json.dumps({"step": 1, "train/loss": 2.0}), json.dumps({"train/loss": 1.5}), "[1, 2]",
        json.dumps({"step": 2, "train/loss": "nan?"}), '{"step": 3, "train/lo', json.dumps({"step": 4, "train/loss": 1.0}),
    ]) + "\n")
    assert plots.training_curve(tmp_path, "train/loss") == ([1, 4], [2.0, 1.0])
