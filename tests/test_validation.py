"""Bad input is refused at to_config, naming the key, before anything is built.

Each table row is (overrides, text the one-line message must contain). The command-line side
(one stderr line, exit 2, no traceback, nothing written) is in tests/test_cli_errors.py.
"""
from __future__ import annotations

import pytest

from repl.config import compose, to_config
from repl.errors import ConfigError

NOT_FINITE_OR_OUT_OF_RANGE = [
    (["optim.lr=inf"], "optim.lr=inf"),
    (["optim.lr=nan"], "optim.lr=nan"),
    (["repl.init_a=nan"], "repl.init_a=nan"),
    (["repl.init_b=-inf"], "repl.init_b=-inf"),
    (["optim=adamw", "optim.eps=nan"], "optim.eps=nan"),
    (["optim=adamw", "optim.eps=0"], "optim.eps=0"),
    (["optim.weight_decay=inf"], "optim.weight_decay=inf"),
    (["optim.warmup_epochs=inf"], "optim.warmup_epochs=inf"),
    (["optim.min_lr_ratio=-5"], "optim.min_lr_ratio=-5"),
    (["optim.min_lr_ratio=2"], "optim.min_lr_ratio=2"),
    (["optim.gamma=nan"], "optim.gamma=nan"),
    (["optim.gamma=0"], "optim.gamma=0"),
    (["optim.betas=[0.9,nan]"], "optim.betas[1]=nan"),
    (["optim.milestones=[0.5,inf]"], "optim.milestones[1]=inf"),
    (["seed=-1"], "seed=-1"),
    (["seed=4294967296"], "seed=4294967296"),
    (["repl.seed=-3"], "repl.seed=-3"),
    (["repl.ratio=nan"], "repl.ratio=nan"),
    (["repl.survival_last=inf"], "repl.survival_last=inf"),
    (["trainer.grad_clip=inf"], "trainer.grad_clip=inf"),
    (["trainer.ema_decay=nan"], "trainer.ema_decay=nan"),
    (["trainer.checkpoint_interval_s=nan"], "trainer.checkpoint_interval_s=nan"),
    (["trainer.checkpoint_interval_s=0"], "trainer.checkpoint_interval_s=0"),
    (["trainer.timing_warmup=-1"], "trainer.timing_warmup=-1"),
    (["task.label_smoothing=nan"], "task.label_smoothing=nan"),
    (["task.mixup=inf"], "task.mixup=inf"),
    (["dataset.noise=nan"], "dataset.noise=nan"),
    (["dataset.clutter=inf"], "dataset.clutter=inf"),
    (["dataset.random_erasing=nan"], "dataset.random_erasing=nan"),
    (["+model.kwargs.drop_rate=inf"], "model.kwargs.drop_rate=inf"),
]

UNKNOWN_KEYS = [
    (["+repl.ratioo=0.4"], "repl.ratioo is not a config key; did you mean repl.ratio?"),
    (["+trainer.epoch=3"], "did you mean trainer.epochs?"),
    (["+optim.learning_rate=0.1"], "optim.learning_rate is not a config key"),
    (["+dataset.batchsize=8"], "did you mean dataset.batch_size?"),
    (["+sed=1"], "did you mean seed?"),
    (["+logger.projet=x"], "did you mean logger.project?"),
]

WRONG_TASK = [
    (["dataset=synthetic_text"], "dataset.task=lm"),
    (["dataset=synthetic_coco"], "dataset.task=detection"),
    (["dataset=synthetic_cityscapes"], "dataset.task=segmentation"),
    (["dataset=wikitext2"], "dataset.task=lm"),
    (["task=lm", "dataset=synthetic"], "dataset.task=classification"),
    (["task=lm", "dataset=cifar10"], "dataset.task=classification"),
]


@pytest.mark.parametrize("overrides,expected", NOT_FINITE_OR_OUT_OF_RANGE + UNKNOWN_KEYS + WRONG_TASK,
                         ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_bad_input_is_a_config_error_naming_the_key(overrides, expected):
    cfg = compose(overrides)
    with pytest.raises(ConfigError) as caught:
        to_config(cfg)
    message = str(caught.value)
    assert expected in message and "\n" not in message


@pytest.mark.parametrize("overrides", [
    ["+model.kwargs.drop_rate=0.1"],  # model.kwargs is free: the constructor's arguments
    ["optim.min_lr_ratio=1"], ["seed=4294967295"], ["repl.init_a=-2.5"],
    ["task=lm"], ["dataset=synthetic_text", "task=lm"],
])
def test_valid_edges_are_accepted(overrides):
    to_config(compose(overrides))


def test_a_true_false_key_takes_truth_words_and_other_keys_are_left_to_their_schema():
    """OmegaConf reads any integer as a bool; the command line is checked for it first (repl.cli.main)."""
    from repl.config import check_boolean_overrides, schema_type

    assert schema_type("repl.neighbor_grad") is bool and schema_type("trainer.compile") is bool
    assert schema_type("repl.ratio") is float and schema_type("model.nope") is None
    check_boolean_overrides(["repl.neighbor_grad=false", "trainer.compile=Yes", "+trainer.compile=0", "repl.ratio=5",
                             "repl.recompute=auto", "seed=7"])
    with pytest.raises(ConfigError, match=r"^trainer.channels_last=3: trainer.channels_last takes true or false$"):
        check_boolean_overrides(["seed=1", "trainer.channels_last=3"])
