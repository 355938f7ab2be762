"""A multirun's jobs are validated before the first one starts: one bad value stops the sweep in one line.

Without this, the jobs before a bad one train (possibly for hours) and the bad one fails on its own.
The jobs are expanded as Hydra's basic sweeper does; each is composed and checked by to_config, then
what its run would refuse once built is looked for without training: the dataset's files, the model
built for the data, the method's plan on it (BuildCheck). The launcher's own commands are looked for
too (launcher=slurm needs SLURM). A sweep the basic sweeper cannot expand (an interval for a search
sweeper) is left to each job.
"""
from __future__ import annotations

import shutil
from argparse import Namespace
from contextlib import contextmanager
from dataclasses import replace
from typing import Dict, Iterator, List, Sequence, Set

import torch
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from torch import nn

from repl.config import TrainConfig, check_overrides, compose, to_config
from repl.data import model_inputs
from repl.data.build import check_present
from repl.errors import ConfigError, ReplError
from repl.method.apply import plan_replacement
from repl.models import build_model

SLURM_LAUNCHER = "submitit_slurm"  # the hydra/launcher that configs/launcher/slurm.yaml picks
SLURM_COMMANDS = ("sbatch", "srun")  # what submitit runs to submit the jobs and to start their processes


def check_multirun(args: Namespace) -> None:
    """Validate every job of a `-m` command line (Hydra's parsed arguments) composed from configs/train.yaml."""
    if args.multirun and not (args.config_name or args.config_path or args.config_dir):
        check_sweep(args.overrides)


def check_sweep(overrides: List[str]) -> None:
    """ConfigError (DataError, ..., or Hydra's error) for the first job of the sweep `overrides` whose config is
    invalid, for a launcher whose commands are missing, then for the first job whose run would refuse its data,
    model or plan."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    if any(o.is_sweep_override() and not o.is_discrete_sweep() for o in parsed):
        return
    swept = {o.get_key_element() for o in parsed if o.is_sweep_override()}
    jobs = BasicSweeper.split_arguments(parsed, max_batch_size=None)[0]
    configs = []
    for job in jobs:
        with _naming(job, swept):
            check_overrides(job)
            configs.append(to_config(compose(job)))
    check_launcher(jobs[0])
    built = BuildCheck()
    for job, cfg in zip(jobs, configs):
        with _naming(job, swept):
            built.check(cfg)


@contextmanager
def _naming(job: Sequence[str], swept: Set[str]) -> Iterator[None]:
    """A user error raised inside names the job it was found in (its swept values) and says that none started."""
    try:
        yield
    except ReplError as err:
        which = " ".join(o for o in job if o.split("=", 1)[0] in swept)
        where = f"in the job {which}; " if which else ""
        raise type(err)(f"{err} ({where}no job was started)") from None


def check_launcher(job: Sequence[str]) -> None:
    """ConfigError if the sweep's launcher needs commands this machine lacks: launcher=slurm submits with SLURM's
    sbatch and srun (submitit would stop with a traceback after the sweep began)."""
    choices = compose(list(job), with_hydra=True).hydra.runtime.choices
    if choices.get("hydra/launcher") != SLURM_LAUNCHER:
        return
    missing = [command for command in SLURM_COMMANDS if shutil.which(command) is None]
    if missing:
        raise ConfigError(f"launcher={choices.get('launcher') or 'slurm'} needs SLURM's {' and '.join(missing)} on "
                          "PATH; submit from a SLURM login node (use launcher=local or no launcher to run here)")


class _NeedsData(Exception):
    """Raised by the plan check's stand-in for the batches that repl.select=similarity scores blocks on."""


class BuildCheck:
    """What a job's run would refuse once built (repl.build.build_run), found without training or reading data.

    For each job: its dataset's files are where dataset.root says (repl.data.build.check_present); its model
    builds for the data; the method's plan fits that model (repl.method.apply.plan_replacement, as
    build_run's configured_method checks it). Each distinct dataset, model and (model, plan) is checked
    once, so a sweep over seeds builds one model.
    """

    def __init__(self) -> None:
        self.data: Set[str] = set()
        self.models: Dict[str, nn.Module] = {}
        self.plans: Set[str] = set()

    def check(self, cfg: TrainConfig) -> None:
        """ReplError (DataError, ConfigError, UnsupportedModelError) for what `cfg`'s run would refuse."""
        data_key = repr((cfg.task.name, cfg.dataset))
        if data_key not in self.data:
            check_present(cfg.dataset, cfg.task.name)
            self.data.add(data_key)
        inputs = model_inputs(cfg.dataset, cfg.task.name)  # a text corpus is read (and cached) for its vocabulary
        model_key = repr((cfg.model, inputs))
        if model_key not in self.models:
            self.models[model_key] = architecture(cfg, inputs)
        plan_key = repr((model_key, cfg.repl))
        if plan_key not in self.plans:
            check_plan(self.models[model_key], cfg)
            self.plans.add(plan_key)


def architecture(cfg: TrainConfig, inputs: Dict[str, int]) -> nn.Module:
    """`cfg`'s model built for the data's `inputs`, without weights (model.pretrained and model.weights are loaded by
    the job itself): on the meta device (no memory, no initialisation), or on the CPU for a builder that copies
    tensor data while building (the OpenMMLab detector and segmentor)."""
    model_cfg = replace(cfg.model, pretrained=False, weights=None)
    try:
        with torch.device("meta"):
            return build_model(model_cfg, **inputs)
    except (NotImplementedError, RuntimeError):  # "Cannot copy out of meta tensor"
        return build_model(model_cfg, **inputs)


def check_plan(model: nn.Module, cfg: TrainConfig) -> None:
    """The method's plan for `model`, validated as the run validates it (the ratio against the model's blocks, ...).

    repl.select=similarity chooses the blocks by scores (repl.similarity=weight reads weights, cka runs the model
    on data): that choice, and the method's check of the chosen blocks, are left to the job; everything before
    scoring, the block count included, is checked here."""
    def no_batches() -> List:
        raise _NeedsData

    try:
        plan_replacement(model, cfg.repl, inputs=no_batches)
    except _NeedsData:
        pass
