"""The whole run's config: one typed schema composed by Hydra from the groups under configs/.

The schema is registered as `train_schema` and sits first in configs/train.yaml's defaults list,
so a wrong type or an unknown key fails at composition, before anything is built.
"""
from __future__ import annotations

import difflib
import hashlib
import re
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, FrozenSet, Iterator, List, Optional, Sequence, get_type_hints

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from repl.bounds import SEED, check_numbers
from repl.data.config import DataConfig, config_class, kind_of_key, register_schemas
from repl.engine.config import LoggerConfig, OptimConfig, TaskConfig, TrainerConfig
from repl.method.config import ReplConfig
from repl.method.schedule import check_schedule
from repl.errors import ConfigError
from repl.models.config import ModelConfig
from repl.resources import shipped_dir


@dataclass
class TrainConfig:
    """Everything one run needs. Field names are the Hydra groups and top-level keys."""

    seed: int = field(default=0, metadata=SEED)
    experiment_name: str = "default"
    dataset: DataConfig = field(default_factory=DataConfig)  # an ImageDataConfig or TextDataConfig once composed
    model: ModelConfig = field(default_factory=ModelConfig)
    repl: ReplConfig = field(default_factory=ReplConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)


MAX_NAME = 255  # bytes in one file name on the common filesystems (ext4, xfs, btrfs, NFS)
NAME_HASH = 12  # hex digits of the hash that keeps a shortened name unique


def run_dirname(overrides: str) -> str:
    """A file-system-safe directory name for a run from Hydra's override_dirname.

    A name longer than a filesystem allows (many overrides) keeps its first characters and ends in a
    hash of the whole, so it stays deterministic (a rerun finds its checkpoint) and distinct.
    """
    if not overrides:
        return "default"
    name = re.sub(r"[^A-Za-z0-9_.,=+-]", "_", overrides)
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:NAME_HASH]
    return f"{name[:MAX_NAME - NAME_HASH - 1]}-{digest}"


def register() -> None:
    """Register the schema and the resolvers Hydra needs; safe to call more than once."""
    ConfigStore.instance().store(name="train_schema", node=TrainConfig)
    register_schemas()  # the dataset kinds, named by each configs/dataset/*.yaml
    if not OmegaConf.has_resolver("rundir"):
        OmegaConf.register_new_resolver("rundir", run_dirname)


def config_dir() -> Path:
    """The Hydra configs: the checkout's configs/ (clone, `pip install -e .`) or the wheel's repl/configs."""
    return shipped_dir("configs")


def config_groups() -> FrozenSet[str]:
    """This project's config groups: the folders of configs/ that hold options (*.yaml): dataset, model, repl, ..."""
    return frozenset(d.name for d in config_dir().iterdir() if d.is_dir() and any(d.glob("*.yaml")))


def compose(overrides: Optional[List[str]] = None, *, with_hydra: bool = False) -> DictConfig:
    """Compose configs/train.yaml with overrides, as train.py would (for tests and notebooks); `with_hydra` adds
    Hydra's own node (`hydra.runtime.choices`, the launcher), which to_config does not take."""
    with initialize_config_dir(config_dir=str(config_dir()), version_base=None):
        return hydra_compose(config_name="train", overrides=list(overrides or []), return_hydra_config=with_hydra)


def as_dict(cfg: TrainConfig) -> dict:
    """The validated config as plain data: what every checkpoint stores and resume compares."""
    return OmegaConf.to_container(OmegaConf.structured(cfg))  # type: ignore[return-value]


def from_stored(values: dict) -> TrainConfig:
    """The TrainConfig of `as_dict`'s output (a checkpoint's config), its dataset read as its task's kind of data.

    Keys of another kind (stored before the data configs were split: a text run's image_size) are dropped.
    """
    task = values.get("task", {}).get("name", TaskConfig.name)
    kind = config_class(task)
    own = {f.name for f in fields(kind)}
    values = {**values, "dataset": {k: v for k, v in values.get("dataset", {}).items() if k in own}}
    typed = OmegaConf.merge(OmegaConf.structured(TrainConfig), {"dataset": OmegaConf.structured(kind)})
    return OmegaConf.to_object(OmegaConf.merge(typed, values))  # type: ignore[return-value]


def to_config(cfg: DictConfig) -> TrainConfig:
    """Turn the composed DictConfig into validated dataclasses (ConfigError on a bad value).

    Refused, naming the key: a key no schema knows (added with `+`), a value that cannot be
    resolved, a number out of its declared range or not finite, and each schema's own rules.
    """
    check_known_keys(cfg)
    try:
        obj: TrainConfig = OmegaConf.to_object(cfg)  # type: ignore[assignment]
    except OmegaConfBaseException as err:
        raise ConfigError(f"{err.full_key or 'config'}: {str(err).splitlines()[0]}") from None
    check_numbers(obj)
    obj.dataset.validate(task=obj.task.name)  # which dataset keys apply depends on the task (dataset.resize)
    for part in (obj.repl, obj.task, obj.trainer, obj.optim, obj.logger):
        validate = getattr(part, "validate", None)
        if validate is not None:
            validate()
    skipper = obj.repl.skipping_setting if obj.repl.skips_blocks else None
    obj.trainer.validate_with(obj.task.name, per_batch_skips=skipper,  # trainer.accumulate, once each key is valid
                              batch_size=obj.dataset.batch_size)
    check_schedule(obj.repl, obj.trainer)  # repl.start / repl.restore against trainer.epochs and the trainer's features
    return obj


FREE_DICTS = ("model.kwargs",)  # dict fields whose keys are free (the model constructor's arguments)


def schema_keys(schema: type = TrainConfig, prefix: str = "") -> Iterator[str]:
    """Every dotted key of the schema (`repl.ratio`, `trainer.epochs`, ...), groups included.

    A group typed by a base class (dataset) has the keys of each of its subclasses (image and text data).
    """
    seen = set()
    for cls in (schema, *schema.__subclasses__()):
        for f in fields(cls):
            key = f"{prefix}{f.name}"
            if key in seen:
                continue
            seen.add(key)
            yield key
            if f.default_factory is not MISSING and is_dataclass(group := f.default_factory()):
                yield from schema_keys(type(group), f"{key}.")


def unknown_key_error(key: str) -> ConfigError:
    """The one message for a key no schema knows, naming the closest known key if one is close."""
    free = next((k for k in FREE_DICTS if key.startswith(f"{k}.")), None)
    if free is not None:
        return ConfigError(f"{key} is not set by this {free.split('.')[0]} config; add it with +{key}=VALUE")
    group, _, name = key.partition(".")
    kind = kind_of_key(name) if group == "dataset" else None
    if kind is not None:  # a key of the other kind of data than the chosen dataset's
        return ConfigError(f"{key} is a key of {kind[0]} data (task={'|'.join(kind[1])}), not of the chosen dataset; "
                           f"unset it, or choose a dataset of {kind[0]} data and task={'|'.join(kind[1])}")
    known = list(schema_keys())
    leaf = key.rpartition(".")[2]
    moved = [k for k in known if k.rpartition(".")[2] == leaf]  # the key under another group
    close = (sorted(moved, key=lambda k: k.count("."))[:1] if moved  # the shallowest: `seed` before `repl.seed`
             else difflib.get_close_matches(key, known, n=1, cutoff=0.6))
    hint = f"; did you mean {close[0]}?" if close else "; README.md lists every key"
    return ConfigError(f"{key} is not a config key{hint}")


def schema_type(key: str) -> Any:
    """The declared type of the dotted `key` in TrainConfig; None where no schema declares it (e.g. a key only one
    dataset kind has)."""
    *owners, leaf = key.split(".")
    schema: Any = TrainConfig
    for part in owners:
        schema = get_type_hints(schema).get(part)
        if not is_dataclass(schema):
            return None
    return get_type_hints(schema).get(leaf)


def check_overrides(overrides: Sequence[str]) -> None:
    """ConfigError for the first command-line override (parsed as Hydra parses it) that Hydra would read other than
    meant, or fail on with a traceback: one without a key (`=5`), a config group given anything but one option name
    (`repl=[none,drop]` would merge both and train the last; `trainer=5`), a true/false key given an integer other
    than 0 or 1 (check_boolean_overrides)."""
    groups = config_groups()
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        _check_group_override(override, groups)
    check_boolean_overrides(overrides)


def _check_group_override(override: Override, groups: FrozenSet[str]) -> None:
    """ConfigError unless `override` has a key and, for a config group, names one option (or deletes the group)."""
    key, value = override.key_or_group, override.value()
    if not key:  # Hydra takes the root for a group and fails on anything but a name
        raise ConfigError(f"cannot parse the override {override.input_line!r}: a key must come before '='")
    if (key not in groups or override.is_sweep_override() or isinstance(value, (str, dict))
            or (value is None and override.is_delete())):  # a dict sets the group's keys (trainer={epochs:3})
        return
    if isinstance(value, list):
        raise ConfigError(f"{override.input_line}: a config group takes one option; to run each, sweep with "
                          f"-m {key}={','.join(map(str, value))}")
    options = sorted(path.stem for path in (config_dir() / key).glob("*.yaml"))
    unset = f", or ~{key} to unset it" if value is None else ""
    raise ConfigError(f"{override.input_line}: the config group {key} takes one of {', '.join(options)}{unset}")


def check_boolean_overrides(overrides: Sequence[str]) -> None:
    """ConfigError for the first command-line override (parsed as Hydra parses it) that gives a true/false key an
    integer other than 0 or 1: OmegaConf reads any integer as a bool, so `repl.neighbor_grad=5` would train with
    true. The other values OmegaConf refuses itself, or reads as it documents (yes/no, on/off)."""
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        if override.is_sweep_override() or override.is_delete():
            continue
        value = override.value()
        if (isinstance(value, int) and not isinstance(value, bool) and value not in (0, 1)
                and schema_type(override.key_or_group) is bool):
            raise ConfigError(f"{override.key_or_group}={value}: {override.key_or_group} takes true or false")


def check_known_keys(cfg: DictConfig, prefix: str = "") -> None:
    """ConfigError for the first key (added with `+`) that the schema of its node does not declare."""
    schema = OmegaConf.get_type(cfg)
    if not is_dataclass(schema):
        return
    declared = {f.name for f in fields(schema)}
    for key in cfg.keys():
        if key not in declared:
            raise unknown_key_error(f"{prefix}{key}")
        node = cfg._get_node(key)
        if isinstance(node, DictConfig):
            check_known_keys(node, f"{prefix}{key}.")


register()
