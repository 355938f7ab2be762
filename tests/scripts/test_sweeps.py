"""A multirun where one job fails: the others complete, the failed one says so in its summary."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TINY = ["experiment=smoke", "dataset.num_train=128", "dataset.num_eval=64", "dataset.image_size=16",
        "trainer.max_steps=1", "trainer.progress=false"]


def test_a_failed_job_does_not_stop_the_sweep(tmp_path):
    # Hydra's basic launcher runs the jobs one after another: the bad ratio comes first
    result = subprocess.run([sys.executable, str(ROOT / "train.py"), "-m", *TINY, "repl.ratio=0.9,0.25",
                             f"hydra.sweep.dir={tmp_path}"], cwd=ROOT, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "WANDB_MODE": "offline"}, check=False)
    assert result.returncode == 1, result.stderr[-2000:]
    summaries = {p.parent.parent.name: json.loads(p.read_text()) for p in tmp_path.rglob("summary.json")}
    assert len(summaries) == 2
    failed = next(s for name, s in summaries.items() if "repl.ratio=0.9" in name)
    completed = next(s for name, s in summaries.items() if "repl.ratio=0.25" in name)
    assert failed["status"] == "failed" and "repl.ratio" in failed["error"]
    assert completed["status"] == "completed" and completed["steps_done"] == 1
    assert "1 job(s) failed" in result.stderr and "repl.ratio=0.9" in result.stderr
    assert "Traceback" not in result.stderr  # a user error stays one line, in a sweep too
