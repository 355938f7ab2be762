"""Every config of every group composes into the typed schema and validates."""

import pytest
from hydra.errors import ConfigCompositionException as HydraCompositionError
from omegaconf import OmegaConf

from repl.config import compose, config_dir, run_dirname, to_config
from repl.errors import ConfigError

GROUPS = ["dataset", "model", "repl", "task", "trainer", "optim", "logger", "experiment"]


def _options(group: str):
    return sorted(p.stem for p in (config_dir() / group).glob("*.yaml"))


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in _options(g)])
def test_every_option_composes(group, option):
    overrides = [f"{group}={option}"]
    if group == "dataset":  # a dataset option is made for one task (dataset.task), composed with it
        overrides.append(f"task={OmegaConf.load(config_dir() / 'dataset' / f'{option}.yaml').task}")
    cfg = to_config(compose(overrides))
    assert cfg is not None


def test_default_is_the_contracts_default():
    cfg = to_config(compose())
    assert (cfg.model.name, cfg.dataset.name, cfg.repl.method, cfg.repl.ratio) == ("resnet32", "synthetic", "repl", 0.25)


def test_unknown_key_fails_at_composition():
    with pytest.raises(HydraCompositionError, match="trainer.epoch"):
        compose(["trainer.epoch=3"])


def test_wrong_type_fails_at_composition():
    with pytest.raises(HydraCompositionError, match="trainer.epochs"):
        compose(["trainer.epochs=three"])


@pytest.mark.parametrize("override,key", [("optim.lr=-0.1", "optim.lr"), ("repl.ratio=1.5", "repl.ratio"),
                                          ("trainer.precision=8", "trainer.precision"),
                                          ("repl.fusion=matrix", "repl.fusion")])
def test_bad_values_are_config_errors(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        to_config(compose([override]))


def test_run_dirname_is_filesystem_safe():
    assert run_dirname("") == "default"
    assert "/" not in run_dirname("dataset.root=/tmp/x,model=resnet56")
