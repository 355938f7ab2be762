"""Runs that differ in an override other than the seed are never averaged as seeds (collect.py's config_id)."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from tests.scripts.test_results import _summary, collect, make_tables, plots

EXCLUDE = ["seed", "experiment", "trainer.progress", "trainer.device", "dataset.root"]


def _run(root: Path, name: str, seed: int, lr: float, top1: float, extra: list[str] = (), device: str = "cpu",
         hydra: bool = True, **config_extra) -> Path:
    run = root / name / f"seed{seed}"
    (run / ".hydra").mkdir(parents=True)
    config = {"experiment_name": "cifar10_resnet56", "seed": seed, "optim": {"lr": lr},
              "trainer": {"epochs": 2, "max_steps": None, "device": device, "progress": False},
              "dataset": {"root": f"/data/{name}"}, **config_extra}
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    overrides = ["experiment=cifar10", "repl.ratio=0.25", f"seed={seed}", f"optim.lr={lr}",
                 f"trainer.device={device}", "trainer.progress=false", "hydra.sweep.dir=/x", *extra]
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if hydra:
        (run / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(
            {"hydra": {"job": {"config": {"override_dirname": {"exclude_keys": EXCLUDE}}}}}))
    (run / "summary.json").write_text(json.dumps(_summary(0.25, seed, top1)))
    return run


def _tables(root: Path, tmp_path: Path, capsys=None) -> str:
    runs, paper, out = tmp_path / "runs.csv", tmp_path / "paper.csv", tmp_path / "tables"
    assert collect.main([str(root), "--out", str(runs)]) == 0
    paper.write_text("table,row,experiment,metric,value\n")
    assert make_tables.main(["--runs", str(runs), "--paper", str(paper), "--out", str(out)]) == 0
    return (out / "other.md").read_text()


def _cells(text: str, needle: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines() if needle in line]


def test_two_learning_rates_of_one_seed_are_two_rows_not_two_seeds(tmp_path):
    root = tmp_path / "multirun"
    _run(root, "lr0.1", 0, 0.1, 90.0)
    _run(root, "lr0.001", 0, 0.001, 10.0)
    text = _tables(root, tmp_path)
    header = _cells(text, "| row |")[0]
    assert "settings" in header
    rows = {r[header.index("settings")]: r for r in _cells(text, "| repl |")}
    assert set(rows) == {"optim.lr=0.1", "optim.lr=0.001"}
    assert rows["optim.lr=0.1"][header.index("seeds")] == "1" and rows["optim.lr=0.1"][header.index("measured (mean ± std)")] == "90.00"
    assert rows["optim.lr=0.001"][header.index("measured (mean ± std)")] == "10.00"
    assert "±" not in "".join(r[header.index("measured (mean ± std)")] for r in rows.values())


def test_seeds_of_one_setting_are_averaged_whatever_the_excluded_keys_say(tmp_path):
    """A device, data path or progress bar of its own does not make another setting: still 2 seeds, no column."""
    root = tmp_path / "multirun"
    _run(root, "a", 0, 0.1, 90.0, device="cpu")
    _run(root, "b", 1, 0.1, 92.0, device="cuda", hydra=False)  # exclude_keys from configs/train.yaml
    text = _tables(root, tmp_path)
    header = _cells(text, "| row |")[0]
    assert "settings" not in header
    (row,) = _cells(text, "| repl |")
    assert row[header.index("seeds")] == "2" and row[header.index("measured (mean ± std)")].startswith("91.00 ± ")
    ids = {r["config_id"] for r in csv.DictReader((tmp_path / "runs.csv").open())}
    overrides = {r["overrides"] for r in csv.DictReader((tmp_path / "runs.csv").open())}
    assert len(ids) == 1 and overrides == {"repl.ratio=0.25 optim.lr=0.1"}


def test_a_config_change_without_an_override_is_its_own_row(tmp_path):
    root = tmp_path / "multirun"
    _run(root, "a", 0, 0.1, 90.0)
    _run(root, "b", 1, 0.1, 92.0, model={"width": 2})  # a config file edited between the two runs
    text = _tables(root, tmp_path)
    header = _cells(text, "| row |")[0]
    settings = sorted(r[header.index("settings")] for r in _cells(text, "| repl |"))
    assert len(settings) == 2 and all(s.startswith("config ") for s in settings)


def test_one_seed_twice_in_a_row_is_flagged(tmp_path, capsys):
    """An older CSV (no config_id) cannot tell lr apart: the row says so, and that seed 0 is there twice."""
    root = tmp_path / "multirun"
    _run(root, "lr0.1", 0, 0.1, 90.0)
    _run(root, "lr0.001", 0, 0.001, 10.0)
    runs, paper, out = tmp_path / "runs.csv", tmp_path / "paper.csv", tmp_path / "tables"
    assert collect.main([str(root), "--out", str(runs)]) == 0
    rows = list(csv.DictReader(runs.open()))
    columns = [c for c in rows[0] if c not in ("config_id", "overrides")]
    with runs.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    paper.write_text("table,row,experiment,metric,value\n")
    capsys.readouterr()
    assert make_tables.main(["--runs", str(runs), "--paper", str(paper), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "no config_id column" in err and "seed 0 repeated" in err
    text = (out / "other.md").read_text()
    assert "no config_id column" in text
    (row,) = _cells(text, "| repl |")
    assert "seed 0 repeated" in " ".join(row)
    assert plots.main(["--runs", str(runs), "--out", str(tmp_path / "figures")]) == 0  # older CSVs stay readable


def test_plots_draw_one_line_per_setting(tmp_path, monkeypatch):
    root = tmp_path / "multirun"
    _run(root, "lr0.1", 0, 0.1, 90.0)
    _run(root, "lr0.001", 0, 0.001, 10.0)
    runs = tmp_path / "runs.csv"
    assert collect.main([str(root), "--out", str(runs)]) == 0
    seen = []
    real = plots._plot_vs_ratio
    monkeypatch.setattr(plots, "_plot_vs_ratio", lambda ax, series, ylabel: (seen.append(series), real(ax, series, ylabel)))
    assert plots.main(["--runs", str(runs), "--out", str(tmp_path / "figures")]) == 0
    assert seen[0] == {"repl [optim.lr=0.001]": [(0.25, 10.0, 0.0)], "repl [optim.lr=0.1]": [(0.25, 90.0, 0.0)]}
