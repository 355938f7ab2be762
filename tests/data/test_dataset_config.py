"""Data configs: accepted values, one-line errors naming the key, use as an OmegaConf structured config."""
import pytest
import torch
from omegaconf import OmegaConf

from repl.config import compose, to_config
from repl.data import DataConfig, ImageDataConfig, TextDataConfig, as_data_config, build_data
from repl.data.classification import classification_datasets
from repl.errors import ConfigError

CPU = torch.device("cpu")


def test_unknown_dataset_names_the_key_and_choices():
    with pytest.raises(ConfigError) as err:
        build_data(ImageDataConfig(name="mnist"), seed=0, device=CPU)
    message = str(err.value)
    assert "dataset.name" in message and "\n" not in message
    assert all(name in message for name in classification_datasets())


@pytest.mark.parametrize("key,value", [
    ("batch_size", 0), ("eval_batch_size", -1), ("image_size", 0), ("num_train", 0), ("num_classes", 1),
    ("num_workers", -1), ("resident", "sometimes"), ("noise", -0.1),
])
def test_bad_values_name_their_key(key, value):
    with pytest.raises(ConfigError, match=f"dataset.{key}"):
        ImageDataConfig(**{key: value}).validate()


def test_batch_size_must_split_over_ranks():
    with pytest.raises(ConfigError, match=r"dataset.batch_size=10 .*\(4\)"):
        build_data(ImageDataConfig(batch_size=10), seed=0, device=CPU, rank=0, world_size=4)


def test_batch_size_larger_than_training_set():
    with pytest.raises(ConfigError, match="dataset.batch_size=64"):
        build_data(ImageDataConfig(num_train=32, batch_size=64), seed=0, device=CPU)


def test_structured_config_from_command_line_overrides():
    schema = OmegaConf.structured(ImageDataConfig)
    cfg = OmegaConf.merge(schema, OmegaConf.from_dotlist(["resident=true", "num_train=64", "batch_size=32"]))
    assert cfg.resident == "True"  # what OmegaConf makes of a bool in a str field
    data_cfg = as_data_config(cfg)
    assert isinstance(data_cfg, ImageDataConfig) and data_cfg.resident_mode == "true"
    data = build_data(cfg, seed=0, device=CPU)
    assert (data.num_train, data.steps_per_epoch) == (64, 2)


def test_unknown_key_in_plain_mapping():
    with pytest.raises(ConfigError, match="dataset.colour"):
        as_data_config({"name": "synthetic", "colour": "red"})


def test_eval_batch_defaults_to_batch_size():
    assert ImageDataConfig(batch_size=48).eval_batch == 48
    assert ImageDataConfig(batch_size=48, eval_batch_size=100).eval_batch == 100


@pytest.mark.parametrize("task, key, kind", [("classification", "seq_len", "text"), ("lm", "image_size", "image"),
                                             ("detection", "tokenizer", "text")])
def test_a_key_of_the_other_kind_is_refused_naming_it_and_the_task(task, key, kind):
    with pytest.raises(ConfigError) as err:
        as_data_config({"name": "synthetic", key: 64}, task)
    message = str(err.value)
    assert message.startswith(f"dataset.{key} is a key of {kind} data") and f"task={task} takes" in message
    assert "\n" not in message


@pytest.mark.parametrize("task, cls", [("classification", ImageDataConfig), ("segmentation", ImageDataConfig),
                                       ("lm", TextDataConfig)])
def test_each_task_reads_its_kind_of_data_config(task, cls):
    assert type(as_data_config({"name": "synthetic"}, task)) is cls
    other = TextDataConfig() if cls is ImageDataConfig else ImageDataConfig()
    with pytest.raises(ConfigError, match=f"task={task} takes {cls.kind_name} data"):
        other.validate(task=task)


def test_each_kind_declares_only_its_own_keys():
    image, text = set(ImageDataConfig.__dataclass_fields__), set(TextDataConfig.__dataclass_fields__)
    assert image & text == set(DataConfig.__dataclass_fields__)
    assert {"seq_len", "tokenizer", "vocab_size"} <= text - image
    assert {"image_size", "resize", "num_classes", "randaugment", "noise"} <= image - text


def test_a_data_config_without_kind_is_refused():
    with pytest.raises(ConfigError, match="names no kind of data; start its yaml with defaults"):
        DataConfig().validate()


def test_a_dataset_option_of_another_task_names_it():
    with pytest.raises(ConfigError, match="dataset.task=lm: this dataset option is made for task=lm, not task=classification"):
        to_config(compose(["dataset=synthetic_text"]))
