"""A multirun's jobs are validated before the first one starts: one bad value stops the sweep in one line.

Without this, the jobs before a bad one train (possibly for hours) and the bad one fails on its own.
The jobs are expanded as Hydra's basic sweeper does; each is composed and checked by to_config. A
sweep the basic sweeper cannot expand (an interval for a search sweeper) is left to each job.
"""
from __future__ import annotations

from argparse import Namespace
from typing import List

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser

from repl.config import check_boolean_overrides, compose, to_config
from repl.errors import ConfigError


def check_multirun(args: Namespace) -> None:
    """Validate every job of a `-m` command line (Hydra's parsed arguments) composed from configs/train.yaml."""
    if args.multirun and not (args.config_name or args.config_path or args.config_dir):
        check_sweep(args.overrides)


def check_sweep(overrides: List[str]) -> None:
    """ConfigError (or Hydra's error) for the first job of the sweep `overrides` whose config is invalid."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    if any(o.is_sweep_override() and not o.is_discrete_sweep() for o in parsed):
        return
    swept = {o.get_key_element() for o in parsed if o.is_sweep_override()}
    for job in BasicSweeper.split_arguments(parsed, max_batch_size=None)[0]:
        try:
            check_boolean_overrides(job)
            to_config(compose(job))
        except ConfigError as err:
            which = " ".join(o for o in job if o.split("=", 1)[0] in swept)
            raise ConfigError(f"{err} (in the job {which}; no job was started)") from None
