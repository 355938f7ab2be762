"""A resume with changed settings is refused in one line naming each key, old -> new; safe keys may change."""
from __future__ import annotations

import pytest

from repl.engine.resume_check import changed_keys
from repl.errors import CheckpointError
from tests.engine.test_training import run


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A run dir holding a one-step checkpoint of the TINY default (sgd, lr 0.1, repl scalar fusion)."""
    run_dir = tmp_path_factory.mktemp("resume")
    run(run_dir, "trainer.max_steps=1")
    return run_dir


@pytest.mark.parametrize("override,expected", [
    ("optim.lr=0.05", "optim.lr 0.1 -> 0.05"),
    ("optim=adamw", "optim.name 'sgd' -> 'adamw'"),
    ("repl.fusion=tensor", "fusion 'scalar' -> 'tensor'"),
    ("repl.init_a=0.3", "init_a 0.5 -> 0.3"),
    ("dataset.batch_size=32", "dataset.batch_size 64 -> 32"),
    ("task.label_smoothing=0.1", "task.label_smoothing 0.0 -> 0.1"),
    ("+model.kwargs.widths=[8,16,32]", "model.kwargs {} -> {'widths': [8, 16, 32]}"),
])
def test_resume_with_a_changed_setting_names_it(trained, override, expected):
    with pytest.raises(CheckpointError) as caught:
        run(trained, override, "trainer.max_steps=2")
    assert expected in str(caught.value) and "\n" not in str(caught.value)


def test_safe_keys_may_change_on_resume():
    saved = {"trainer": {"epochs": 4, "max_steps": 1, "log_every": 50}, "logger": {"name": "jsonl"},
             "dataset": {"root": "a", "num_workers": 2, "batch_size": 64}, "optim": {"lr": 0.1}}
    current = {"trainer": {"epochs": 8, "max_steps": 9, "log_every": 1}, "logger": {"name": "wandb"},
               "dataset": {"root": "b", "num_workers": 0, "batch_size": 64}, "optim": {"lr": 0.1, "new_key": 1}}
    assert changed_keys(saved, current) == []
