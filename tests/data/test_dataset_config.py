"""DatasetConfig: accepted values, one-line errors naming the key, use as an OmegaConf structured config."""
import pytest
import torch
from omegaconf import OmegaConf

from repl.data import DATASETS, DatasetConfig, build_data
from repl.data.build import as_dataset_config
from repl.errors import ConfigError

CPU = torch.device("cpu")


def test_unknown_dataset_names_the_key_and_choices():
    with pytest.raises(ConfigError) as err:
        build_data(DatasetConfig(name="mnist"), seed=0, device=CPU)
    message = str(err.value)
    assert "dataset.name" in message and "\n" not in message
    assert all(name in message for name in DATASETS)


@pytest.mark.parametrize("key,value", [
    ("batch_size", 0), ("eval_batch_size", -1), ("image_size", 0), ("num_train", 0), ("num_classes", 1),
    ("num_workers", -1), ("resident", "sometimes"), ("noise", -0.1),
])
def test_bad_values_name_their_key(key, value):
    with pytest.raises(ConfigError, match=f"dataset.{key}"):
        DatasetConfig(**{key: value}).validate()


def test_batch_size_must_split_over_ranks():
    with pytest.raises(ConfigError, match=r"dataset.batch_size=10 .*\(4\)"):
        build_data(DatasetConfig(batch_size=10), seed=0, device=CPU, rank=0, world_size=4)


def test_batch_size_larger_than_training_set():
    with pytest.raises(ConfigError, match="dataset.batch_size=64"):
        build_data(DatasetConfig(num_train=32, batch_size=64), seed=0, device=CPU)


def test_structured_config_from_command_line_overrides():
    schema = OmegaConf.structured(DatasetConfig)
    cfg = OmegaConf.merge(schema, OmegaConf.from_dotlist(["resident=true", "num_train=64", "batch_size=32"]))
    assert cfg.resident == "True"  # what OmegaConf makes of a bool in a str field
    data_cfg = as_dataset_config(cfg)
    assert isinstance(data_cfg, DatasetConfig) and data_cfg.resident_mode == "true"
    data = build_data(cfg, seed=0, device=CPU)
    assert (data.num_train, data.steps_per_epoch) == (64, 2)


def test_unknown_key_in_plain_mapping():
    with pytest.raises(ConfigError, match="dataset.colour"):
        as_dataset_config({"name": "synthetic", "colour": "red"})


def test_eval_batch_defaults_to_batch_size():
    assert DatasetConfig(batch_size=48).eval_batch == 48
    assert DatasetConfig(batch_size=48, eval_batch_size=100).eval_batch == 100
