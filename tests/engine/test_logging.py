"""Logging: metrics.jsonl keys, wandb (a real offline run, read back from its .wandb file), train.log."""
from __future__ import annotations

import json
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from repl.config import compose, to_config
from repl.engine.config import LoggerConfig
from repl.engine.loggers import MetricsLog, wandb_settings
from tests.engine.test_training import TINY, run

ROOT = Path(__file__).resolve().parents[2]

BLOCK = 32768  # the .wandb file is a LevelDB-style log of protobuf Records after a 7-byte header


def wandb_records(run_dir: Path, runs: int = 1, wait_s: float = 30.0) -> list:
    """Every Record of the run's offline wandb runs, oldest run first (read as `wandb sync` would).

    wandb's service process writes the files after the run returns; under a loaded CI machine the reader can
    be first, so this waits (up to `wait_s`) until `runs` runs have each written their exit record."""
    deadline = time.monotonic() + wait_s
    while True:
        records = _read_wandb(run_dir)
        kinds = [r.WhichOneof("record_type") for r in records]
        if (kinds.count("run") >= runs and kinds.count("exit") >= runs) or time.monotonic() > deadline:
            return records
        time.sleep(0.2)


def _read_wandb(run_dir: Path) -> list:
    from wandb.proto import wandb_internal_pb2

    records = []
    for path in sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb")):
        data, pos, chunk = path.read_bytes(), 7, b""
        assert data.startswith(b":W&B")
        while pos + 7 <= len(data):
            if BLOCK - pos % BLOCK < 7:  # a block's tail too short for a header is padding
                pos += BLOCK - pos % BLOCK
                continue
            length, kind = struct.unpack("<HB", data[pos + 4:pos + 7])
            if (length == 0 and kind == 0) or pos + 7 + length > len(data):  # the end, or a record still being written
                break
            chunk += data[pos + 7:pos + 7 + length]
            pos += 7 + length
            if kind in (1, 4):  # FULL or LAST
                record = wandb_internal_pb2.Record()
                record.ParseFromString(chunk)
                records.append(record)
                chunk = b""
    return records


def of_type(records: list, kind: str) -> list:
    return [getattr(r, kind) for r in records if r.WhichOneof("record_type") == kind]


def history(records: list) -> list:
    return [{item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in h.item}
            for h in of_type(records, "history")]


@pytest.fixture
def offline(monkeypatch):
    for name in ("WANDB_MODE", "WANDB_PROJECT", "WANDB_ENTITY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")


def test_metrics_jsonl_keys_have_a_namespace_and_a_unit(tmp_path):
    run(tmp_path, "trainer.max_steps=3", "trainer.log_every=2")
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train_records = [r for r in records if "train/loss" in r]
    assert [r["step"] for r in train_records] == [2, 3]  # one per window, the cut last one too
    full = train_records[0]
    assert {"train/lr", "train/throughput(samples/s)", "train/grad_norm", "memory/host_peak_rss(bytes)"} <= full.keys()
    assert "lr" not in full and full["train/grad_norm"] > 0 and full["memory/host_peak_rss(bytes)"] > 2**20
    assert "train/throughput(samples/s)" not in train_records[1]  # the cut window has no honest rate
    assert any("eval/top1" in r for r in records)


def test_wandb_settings_environment_wins_over_defaults_and_config_over_environment(tmp_path, offline, monkeypatch):
    run_dir = tmp_path / "ratio=0.4" / "seed0"
    defaults = wandb_settings(LoggerConfig(backend="wandb"), run_dir, "sweep")
    assert (defaults["mode"], defaults["project"], defaults["entity"]) == ("offline", "repl", None)
    assert (defaults["group"], defaults["name"], defaults["job_type"]) == ("sweep", "ratio=0.4/seed0", "train")
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("WANDB_PROJECT", "p-env")
    monkeypatch.setenv("WANDB_ENTITY", "team")
    from_env = wandb_settings(LoggerConfig(backend="wandb"), run_dir, "sweep")
    assert (from_env["mode"], from_env["project"], from_env["entity"]) == ("disabled", "p-env", "team")
    given = wandb_settings(LoggerConfig(backend="wandb", mode="offline", project="p", group="g", name="n", job_type="eval"),
                           run_dir, "sweep")
    assert (given["mode"], given["project"], given["group"], given["name"], given["job_type"]) == ("offline", "p", "g", "n", "eval")


def test_an_offline_wandb_run_holds_the_windows_and_every_measurement_in_its_summary(tmp_path, offline):
    run(tmp_path, "logger=wandb", "logger.group=g1", "logger.job_type=smoke", "trainer.max_steps=2")
    records = wandb_records(tmp_path)
    (started,) = of_type(records, "run")
    assert (started.run_group, started.job_type, started.project) == ("g1", "smoke", "repl")
    assert started.display_name == f"{tmp_path.parent.name}/{tmp_path.name}"
    logged = history(records)
    assert [h["_step"] for h in logged if "train/loss" in h] == [1, 2]
    assert any("train/grad_norm" in h and "train/lr" in h for h in logged)
    summary = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for s in of_type(records, "summary") for i in s.update}
    written = json.loads((tmp_path / "summary.json").read_text())
    assert summary["params/total"] == written["params"]["total"]
    assert summary["flops/train_step"] == written["flops"]["train_step"] > 0
    assert summary["memory/peak_bytes"] == written["memory"]["peak_bytes"]
    assert summary["time/train_s"] == pytest.approx(written["time"]["train_s"])
    assert {f"final/{k}" for k in written["metrics"]} <= summary.keys() and len(written["metrics"]) > 1
    assert [e.exit_code for e in of_type(records, "exit")] == [0]


def test_a_crashed_run_finishes_its_wandb_run_failed(tmp_path, offline):
    with pytest.raises(FloatingPointError):  # a NaN loss at the first logged window
        run(tmp_path, "logger=wandb", "optim.lr=1e30", "trainer.max_steps=3", "trainer.log_every=1")
    assert [e.exit_code for e in of_type(wandb_records(tmp_path), "exit")] == [1]


def test_a_resume_from_an_older_checkpoint_rewinds_the_wandb_run(tmp_path, offline):
    run(tmp_path, "logger=wandb", "trainer.max_steps=2", "trainer.checkpoint_every=1")
    # wandb names an offline run's directory by its start second and run id, and the rewound run may keep the id:
    # started in the same second as the first (a sub-second run), it would write into the first one's directory.
    started = int(time.time())
    while int(time.time()) == started:
        time.sleep(0.05)
    log = MetricsLog(tmp_path / "metrics.jsonl", to_config(compose(TINY + ["logger=wandb"])).logger,
                     {"experiment_name": "default"})
    log.truncate_after(1)  # what Trainer.resume does when the checkpoint is older than the last record
    log.log({"step": 2, "train/loss": 1.0})
    log.close()
    # Two offline runs started within the same second sort by their random ids, not by start time:
    # find the rewound one by its branch point rather than by position.
    runs = of_type(wandb_records(tmp_path, runs=2), "run")
    assert len(runs) == 2
    rewound = [r for r in runs if r.HasField("branch_point") and r.branch_point.run]
    assert len(rewound) == 1, "the resumed wandb run does not branch from the first"
    point = rewound[0].branch_point
    assert (point.run, point.value, point.metric) == (runs[0].run_id, 1, "_step") == (runs[1].run_id, 1, "_step")


def test_a_resume_that_dropped_nothing_continues_the_wandb_run(tmp_path, offline):
    run(tmp_path, "logger=wandb", "trainer.max_steps=2")
    log = MetricsLog(tmp_path / "metrics.jsonl", to_config(compose(TINY + ["logger=wandb"])).logger, {})
    log.truncate_after(100)
    log.log({"step": 101, "train/loss": 1.0})
    log.close()
    last = of_type(wandb_records(tmp_path), "run")[-1]
    assert not last.HasField("branch_point")


def test_what_a_run_prints_is_in_its_train_log_and_a_later_user_error_too(tmp_path):
    args = [sys.executable, str(ROOT / "train.py"), *TINY, "trainer.max_steps=2", f"hydra.run.dir={tmp_path}"]
    result = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "results in" in result.stdout and not result.stdout.startswith("[")  # the console stays as printed
    log = (tmp_path / "train.log").read_text()
    for line in ("run dir:", "plan: method=repl", "training 2 steps", "params total / trainable", "results in"):
        assert line in log
    # Hydra configures logging before the run's own checks: a refusal is printed once, and kept in train.log
    result = subprocess.run([*args, "trainer.resume=false"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: trainer.resume=false but"), result.stderr
    assert lines[0] in (tmp_path / "train.log").read_text()


def test_the_logged_grad_norm_is_the_global_norm_of_the_stepped_gradients():
    import torch

    from repl.engine.window import WindowStats

    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    stats = WindowStats(opt, torch.device("cpu"))
    model(torch.ones(4, 3)).pow(2).sum().backward()
    expected = torch.cat([p.grad.flatten() for p in model.parameters()]).norm().item()
    opt.step()
    assert stats.record()["train/grad_norm"] == pytest.approx(expected)
    assert "train/grad_norm" not in stats.record()  # measured once, logged once
