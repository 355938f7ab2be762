"""scripts/collect.py, make_tables.py and plots.py on fixture run directories, a corrupt one included."""
from __future__ import annotations

import csv
import importlib
import json
import os
import statistics
import sys
from pathlib import Path

import pytest
import yaml

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
sys.path.insert(0, str(SCRIPTS))  # the scripts are not a package; plots.py imports make_tables as its sibling
collect, make_tables, plots = (importlib.import_module(name) for name in ("collect", "make_tables", "plots"))

PAPER_TOP1 = 94.0
TOP1 = {(0.25, 0): 93.0, (0.25, 1): 95.5, (0.4, 0): 91.0, (0.4, 1): 92.0}  # ratio 0.4 stays below the paper


def _summary(ratio: float, seed: int, top1: float) -> dict:
    blocks = [] if ratio == 0 else [1, 3]
    return {
        "status": "completed", "task": "classification", "dataset": "cifar10", "model": "resnet56", "method": "repl",
        "plan": {"method": "repl", "ratio": ratio, "blocks": blocks, "settings": {"surrogate": "lite", "fusion": "scalar"}},
        "params": {"total": 1000, "trainable": 1000 - 100 * len(blocks), "replaced": 100 * len(blocks), "fusion": 2},
        "memory": {"peak_bytes": 2**20 * (10 - len(blocks)), "estimate_bytes": 2**20, "device": "cpu"},
        "flops": {"train_step": 10}, "time": {"train_s": 1.0, "epoch_s": 1.0, "step_s": 0.1},
        "throughput": {"train_per_s": 100.0, "unit": "samples"},
        "metrics": {"top1": top1, "loss": 0.5}, "primary": {"name": "top1", "value": top1, "higher_is_better": True},
        "epochs_done": 2, "steps_done": 20, "seed": seed, "world_size": 1,
        "env": {"torch": "2.x", "device": "cpu", "git_sha": "abcdef0123456789", "git_dirty": False, "hostname": "h"},
    }


def _run_dir(root: Path, name: str, summary_text: str, seed: int = 0) -> Path:
    run = root / name / f"seed{seed}"
    (run / ".hydra").mkdir(parents=True)
    config = {"experiment_name": "cifar10_resnet56", "seed": seed, "trainer": {"epochs": 2, "max_steps": None}}
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    (run / "summary.json").write_text(summary_text)
    (run / "metrics.jsonl").write_text("".join(
        json.dumps({"step": s, "train/loss": 2.0 / s}) + "\n" for s in range(1, 4)) + json.dumps({"step": 3, "eval/top1": 50.0}) + "\n")
    return run


@pytest.fixture
def fixture_runs(tmp_path) -> Path:
    root = tmp_path / "multirun"
    for (ratio, seed), top1 in TOP1.items():
        _run_dir(root, f"repl.ratio={ratio}", json.dumps(_summary(ratio, seed, top1)), seed)
    _run_dir(root, "repl.ratio=0", json.dumps(_summary(0.0, 0, 90.0)))
    _run_dir(root, "corrupt", '{"status": "completed", "task": ')  # a job killed while writing
    _run_dir(root, "failed", json.dumps({"status": "failed", "error": "ConfigError: repl.ratio=0.9 too large"}))
    _run_dir(root, "partial", json.dumps({"status": "running", "steps_done": 3}))
    return root


def _csv(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_collect_reports_bad_files_and_keeps_going(fixture_runs, tmp_path, capsys):
    out = tmp_path / "runs.csv"
    assert collect.main([str(fixture_runs), "--out", str(out)]) == 0
    rows = _csv(out)
    assert len(rows) == 8
    rows = {Path(r["path"]).parent.name: r for r in rows if Path(r["path"]).name == "seed0"}
    assert rows["corrupt"]["status"] == "unreadable" and rows["corrupt"]["problem"].startswith("corrupt")
    assert rows["failed"]["status"] == "failed" and "repl.ratio" in rows["failed"]["error"]
    assert rows["partial"]["problem"].startswith("partial")
    assert rows["repl.ratio=0"]["method"] == "bp"  # nothing replaced: plain backprop
    assert rows["repl.ratio=0.25"]["experiment"] == "cifar10_resnet56" and rows["repl.ratio=0.25"]["epochs"] == "2"
    err = capsys.readouterr().err
    assert all(name in err for name in ("corrupt", "failed", "partial"))


def test_collect_names_a_missing_directory(tmp_path, capsys):
    assert collect.main([str(tmp_path / "nope"), "--out", str(tmp_path / "runs.csv")]) == 2
    assert str(tmp_path / "nope") in capsys.readouterr().err


def test_tables_aggregate_seeds_beside_the_paper(fixture_runs, tmp_path):
    runs, paper, out = tmp_path / "runs.csv", tmp_path / "paper.csv", tmp_path / "tables"
    collect.main([str(fixture_runs), "--out", str(runs)])
    paper.write_text("table,row,experiment,metric,value\nclassification,cifar10/1,cifar10_resnet56,top1,"
                     f"{PAPER_TOP1}\ndetection,coco/1,coco_faster_rcnn_r50_fpn,box_mAP,32.76\n")
    assert make_tables.main(["--runs", str(runs), "--paper", str(paper), "--out", str(out)]) == 0
    lines = (out / "classification.md").read_text().splitlines()
    for ratio in (0.25, 0.4):
        values = [v for (r, _), v in TOP1.items() if r == ratio]
        mean, std = statistics.fmean(values), statistics.stdev(values)
        row = next(line for line in lines if f"| repl | {ratio} |" in line)
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[4] == "2" and cells[5] == f"{mean:.2f} ± {std:.2f}"  # 2 seeds each
        assert cells[6] == f"{PAPER_TOP1:.2f}" and cells[7] == f"{mean - PAPER_TOP1:+.2f}"
        assert cells[12] == "abcdef0" and cells[13] == "cpu" and cells[10] == "2 of 2"
    assert "-2.50" in "\n".join(lines)  # ratio 0.4 is below the paper and shows it
    bp = next(line for line in lines if "| bp |" in line)
    assert "90.00 |" in bp and "| — | — |" in bp  # a baseline gets no paper number
    assert sum("| repl |" in line or "| bp |" in line for line in lines) == 3  # failed/corrupt runs form no row
    assert "no runs" in (out / "detection.md").read_text()  # a paper row without runs invents nothing
    tex = (out / "classification.tex").read_text()
    assert r"\begin{tabular}" in tex and r"$\pm$" in tex and "cifar10\\_resnet56" in tex


def test_plots_write_png_and_pdf(fixture_runs, tmp_path):
    runs, out = tmp_path / "runs.csv", tmp_path / "figures"
    collect.main([str(fixture_runs), "--out", str(runs)])
    assert plots.main(["--runs", str(runs), "--out", str(out)]) == 0
    for name in ("metric_vs_ratio", "cost_vs_ratio", "curves"):
        for ext in ("png", "pdf"):
            path = out / f"cifar10_resnet56_{name}.{ext}"
            assert path.stat().st_size > 1000, path


def _nested(depth: int) -> dict:
    value: dict = {}
    for _ in range(depth):
        value = {"x": value}
    return value


MALFORMED = {  # run name: (summary, config.yaml bytes or None for a good one, what the problem names)
    "status_null": ({"status": None}, None, "status is null"),
    "plan_str": ({"plan": "x"}, None, "plan is a string"),
    "metrics_list": ({"metrics": [93.1, 0.5]}, None, "metrics is a list"),
    "primary_number": ({"primary": 93.1}, None, "primary is float"),
    "blocks_int": ({"plan": {"ratio": 0.25, "blocks": 5}}, None, "plan.blocks is int"),
    "metric_nested": ({"metrics": {"top1": _nested(50)}}, None, "metric.top1 is an object"),
    "value_text": ({"primary": {"name": "top1", "value": "high"}}, None, "primary_value is a string"),
    "config_binary": ({}, b"\xff\xfe\x00\x9c binary", ".hydra/config.yaml is unreadable"),
    "config_list": ({}, b"- 1\n- 2\n", ".hydra/config.yaml is a list"),
    "config_trainer": ({}, b"experiment_name: cifar10_resnet56\ntrainer: [1, 2]\n", "trainer is a list"),
}


@pytest.fixture
def malformed_runs(fixture_runs) -> Path:
    for name, (fields, config, _) in MALFORMED.items():
        run = _run_dir(fixture_runs, name, json.dumps({**_summary(0.25, 0, 99.0), **fields}))
        if config is not None:
            (run / ".hydra" / "config.yaml").write_bytes(config)
    deep = "[" * 200_000 + "]" * 200_000  # parsing this recurses past Python's limit
    _run_dir(fixture_runs, "deep", deep)
    return fixture_runs


def test_collect_turns_every_malformed_run_into_a_row_with_its_problem(malformed_runs, tmp_path, capsys):
    out = tmp_path / "runs.csv"
    assert collect.main([str(malformed_runs), "--out", str(out)]) == 0
    rows = _csv(out)
    assert len(rows) == 5 + 3 + len(MALFORMED) + 1  # the good, the known-bad, the malformed and the deep one
    rows = {Path(r["path"]).parent.name: r for r in rows if Path(r["path"]).name == "seed0"}
    for name, (_, _, problem) in MALFORMED.items():
        assert rows[name]["problem"].startswith("malformed") and problem in rows[name]["problem"], name
        assert rows[name]["model"] == "resnet56", name  # what could be read still is
    assert rows["deep"]["status"] == "unreadable" and "RecursionError" in rows["deep"]["problem"]
    assert rows["status_null"]["status"] == "unknown" and rows["value_text"]["primary_value"] == ""
    assert rows["repl.ratio=0.4"]["metric.top1"] == str(TOP1[(0.4, 0)])  # the good runs are all there
    err = capsys.readouterr().err
    assert all(name in err for name in MALFORMED)


def test_tables_read_malformed_rows_and_average_only_the_sound_ones(malformed_runs, tmp_path):
    runs, paper, out = tmp_path / "runs.csv", tmp_path / "paper.csv", tmp_path / "tables"
    collect.main([str(malformed_runs), "--out", str(runs)])
    paper.write_text(f"table,row,experiment,metric,value\nclassification,cifar10/1,cifar10_resnet56,top1,"
                     f"{PAPER_TOP1}\n")
    assert make_tables.main(["--runs", str(runs), "--paper", str(paper), "--out", str(out)]) == 0
    text = (out / "classification.md").read_text()
    values = [v for (r, _), v in TOP1.items() if r == 0.25]
    rows = [line for line in text.splitlines() if "| repl | 0.25 |" in line]
    assert len(rows) > 1  # malformed runs whose config could not be read form rows of their own (no epochs)
    assert any(f"| 2 | {statistics.fmean(values):.2f} ± {statistics.stdev(values):.2f} |" in row for row in rows)
    assert "99.00" not in text


def test_collect_refuses_a_directory_as_out_in_one_line(fixture_runs, tmp_path, capsys):
    assert collect.main([str(fixture_runs), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(tmp_path) in err[0] and "directory" in err[0]


def _tables_refuse(capsys, *argv: str) -> str:
    """make_tables' refusal of `argv`: exit 2 (as collect.py) with its one stderr line, which is returned."""
    with pytest.raises(SystemExit) as stop:
        make_tables.main(list(argv))
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    return err.strip()


def test_tables_refuse_a_runs_csv_without_collects_columns_in_one_line(tmp_path, capsys):
    """A CSV that is not collect.py's (a wrong file passed as --runs) is named with the columns it lacks, before
    anything is written; a header-only file lacking them too (it would otherwise read as zero runs)."""
    paper = Path(__file__).resolve().parents[2] / "results" / "paper.csv"
    for text in ("a,b\n1,2\n", "garbage\n"):
        (tmp_path / "runs.csv").write_text(text)
        err = _tables_refuse(capsys, "--runs", str(tmp_path / "runs.csv"), "--paper", str(paper), "--out", str(tmp_path / "t"))
        assert err.startswith(f"error: {tmp_path / 'runs.csv'} lacks columns dataset, epochs, experiment")
        assert not (tmp_path / "t").exists()


def test_tables_and_collect_name_an_unwritable_output_in_one_line(fixture_runs, tmp_path, capsys):
    """Below a file nothing can be made, root included: one line each, and what was there before is left whole."""
    (tmp_path / "a-file").write_text("")
    assert collect.main([str(fixture_runs), "--out", str(tmp_path / "a-file" / "runs.csv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: cannot write {tmp_path / 'a-file' / 'runs.csv'}: ")
    assert collect.main([str(fixture_runs), "--out", str(tmp_path / "runs.csv")]) == 0
    paper = Path(__file__).resolve().parents[2] / "results" / "paper.csv"
    capsys.readouterr()
    err = _tables_refuse(capsys, "--runs", str(tmp_path / "runs.csv"), "--paper", str(paper),
                         "--out", str(tmp_path / "a-file" / "t"))
    assert err.startswith(f"error: cannot write the tables into {tmp_path / 'a-file' / 't'}: ")
    err = _tables_refuse(capsys, "--runs", str(tmp_path / "runs.csv"), "--paper", str(paper),
                         "--out", str(tmp_path / "a-file"))
    assert err == f"error: --out takes the directory to write the tables into; {tmp_path / 'a-file'} is a file"
    assert (tmp_path / "a-file").read_text() == ""


def test_collect_writes_the_csv_whole_or_not_at_all(fixture_runs, tmp_path, monkeypatch):
    """An interrupted write (here: the rows cannot be turned into text) leaves the previous runs.csv as it was."""
    out = tmp_path / "runs.csv"
    assert collect.main([str(fixture_runs), "--out", str(out)]) == 0
    before = out.read_bytes()
    monkeypatch.setattr(collect.csv, "DictWriter", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        collect.main([str(fixture_runs), "--out", str(out)])
    assert out.read_bytes() == before


def _plots_refuse(capsys, *argv: str) -> str:
    """plots' refusal of `argv`: exit 2 with one `error:` line on stderr, which is returned."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        plots.main(list(argv))
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    return err.strip()


def test_plots_name_an_unwritable_output_in_one_line(fixture_runs, tmp_path, capsys):
    assert collect.main([str(fixture_runs), "--out", str(tmp_path / "runs.csv")]) == 0
    (tmp_path / "a-file").write_text("")
    err = _plots_refuse(capsys, "--runs", str(tmp_path / "runs.csv"), "--out", str(tmp_path / "a-file" / "figures"))
    assert err.startswith(f"error: cannot write the figures into {tmp_path / 'a-file' / 'figures'}: ")
    err = _plots_refuse(capsys, "--runs", str(tmp_path / "runs.csv"), "--out", str(tmp_path / "a-file"))
    assert err == f"error: --out takes the directory to write the figures into; {tmp_path / 'a-file'} is a file"
    assert (tmp_path / "a-file").read_text() == ""


def test_collect_finding_no_runs_writes_nothing_and_exits_2(fixture_runs, tmp_path, capsys):
    """An empty (or mistyped) directory does not replace a CSV of results by its header alone."""
    out = tmp_path / "runs.csv"
    assert collect.main([str(fixture_runs), "--out", str(out)]) == 0
    before = out.read_bytes()
    (tmp_path / "empty").mkdir()
    (tmp_path / "other").mkdir()
    capsys.readouterr()
    assert collect.main([str(tmp_path / "empty"), str(tmp_path / "other"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: no runs") and str(out) in err[0]
    assert f"{tmp_path / 'empty'}, {tmp_path / 'other'}" in err[0]
    assert out.read_bytes() == before
    assert collect.main([str(tmp_path / "empty"), "--out", str(tmp_path / "new.csv")]) == 2
    assert not (tmp_path / "new.csv").exists()


def test_collect_writes_through_a_temporary_file_it_renames(fixture_runs, tmp_path, monkeypatch):
    """The CSV appears by os.replace of a finished temporary file beside it, never written in place."""
    out = tmp_path / "runs.csv"
    replaced = []
    os_replace = os.replace

    def spy(src, dst):
        replaced.append((Path(src).parent, Path(dst), Path(src).read_text().count("\n")))
        os_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    assert collect.main([str(fixture_runs), "--out", str(out)]) == 0
    assert replaced == [(tmp_path, out, 9)]  # the header and 8 runs, complete before the rename
    assert [p.name for p in tmp_path.iterdir() if p.name != "multirun"] == ["runs.csv"]


def test_tables_name_the_flag_and_what_it_takes_for_a_bad_file(tmp_path, capsys):
    paper = Path(__file__).resolve().parents[2] / "results" / "paper.csv"
    out = ["--out", str(tmp_path / "t")]
    err = _tables_refuse(capsys, "--runs", str(tmp_path), "--paper", str(paper), *out)
    assert err == f"error: --runs takes the CSV that scripts/collect.py writes; {tmp_path} is a directory"
    err = _tables_refuse(capsys, "--runs", str(tmp_path / "missing.csv"), "--paper", str(paper), *out)
    assert err.startswith(f"error: --runs takes the CSV that scripts/collect.py writes; {tmp_path / 'missing.csv'} "
                          "does not exist")
    (tmp_path / "binary.csv").write_bytes(bytes(range(256)))
    err = _tables_refuse(capsys, "--runs", str(tmp_path / "binary.csv"), "--paper", str(paper), *out)
    assert err.startswith(f"error: --runs takes the CSV that scripts/collect.py writes; {tmp_path / 'binary.csv'} "
                          "is unreadable (")
    err = _tables_refuse(capsys, "--paper", str(tmp_path), "--runs", str(tmp_path / "binary.csv"), *out)
    assert err == f"error: --paper takes the paper's numbers, results/paper.csv; {tmp_path} is a directory"
    assert not (tmp_path / "t").exists()
