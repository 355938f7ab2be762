"""Hydra's own errors (a wrong type, an unknown group option, a misspelt key, an unwritable run dir) as one line.

Hydra prints these as several lines (a misspelt key even advises adding it with `+`), with exit
status 1. `one_line_errors` has Hydra raise them instead (HYDRA_FULL_ERROR) and turns each into a
ConfigError naming the key, printed by the entry point as one `error: ...` line with exit status 2.
It wraps the whole Hydra entry point, so the composition of every job of a `-m` multirun is covered.
A user who sets HYDRA_FULL_ERROR=1 gets Hydra's full traceback, as Hydra documents.
"""
from __future__ import annotations

import os
import traceback
from argparse import Namespace
from contextlib import contextmanager
from types import CodeType
from typing import Iterator, Optional

from hydra._internal.utils import get_args_parser
from hydra.errors import HydraException, MissingConfigException, OverrideParseException
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from repl.config import unknown_key_error
from repl.errors import ConfigError, install_hint

FULL_ERROR = "HYDRA_FULL_ERROR"
SUBMITIT_LAUNCHER = "submitit_"  # configs/launcher/{local,slurm}.yaml pick hydra/launcher=submitit_{local,slurm}


@contextmanager
def one_line_errors(task_code: CodeType) -> Iterator[None]:
    """Raise Hydra's errors as ConfigError; `task_code` is the task function's, whose own errors pass through."""
    if os.environ.get(FULL_ERROR):  # the user asked for Hydra's full report
        yield
        return
    os.environ[FULL_ERROR] = "1"  # Hydra re-raises instead of printing and exiting 1
    try:
        yield
    except (HydraException, OmegaConfBaseException, OSError, ValueError) as err:
        config_error = as_config_error(err, task_code)
        if config_error is None:
            raise
        raise config_error from None
    finally:
        os.environ.pop(FULL_ERROR, None)


def command_line(argv: list) -> Namespace:
    """Hydra's parse of the arguments; ConfigError for what it would reject with its multi-line usage text."""
    args, unread = get_args_parser().parse_known_args(argv)
    if unread:
        raise ConfigError(f"unrecognized arguments {' '.join(unread)}: options such as -m go before the "
                          "overrides (python train.py -m key=a,b); see --help")
    return args


def as_config_error(err: BaseException, task_code: CodeType) -> Optional[ConfigError]:
    """The one-line ConfigError for an error Hydra raised before the task ran; None for the task's own."""
    if _raised_in(err, task_code):
        return None
    return composition_error(err)


def composition_error(err: BaseException) -> Optional[ConfigError]:
    """The one-line ConfigError for an error of composing a config (an unparsable override, an unknown group option
    or key, a value of the wrong type, an unwritable run dir); None for any other error."""
    if isinstance(err, OverrideParseException):
        return ConfigError(f"cannot parse the override {err.override!r}: {_first_line(err)}")
    if isinstance(err, MissingConfigException):
        return _missing_option(err)
    cause = err.__cause__
    if isinstance(cause, (ConfigAttributeError, ConfigKeyError)) and cause.full_key:
        return unknown_key_error(cause.full_key)
    if isinstance(cause, OmegaConfBaseException) and cause.full_key:
        return ConfigError(f"{cause.full_key}: {_first_line(cause)}")
    if isinstance(err, OmegaConfBaseException) and err.full_key:
        return ConfigError(f"{err.full_key}: {_first_line(err)}")
    if isinstance(err, HydraException):
        return ConfigError(_joined(err))
    if isinstance(err, ValueError) and isinstance(err.__cause__, OSError):  # logging opening <run dir>/train.log
        err = err.__cause__
    if isinstance(err, OSError) and err.filename:  # Hydra making the run dir, or the log file in it
        return ConfigError(f"cannot write the run directory {err.filename}: {err.strerror or err}; "
                           "choose a writable one with hydra.run.dir=DIR (hydra.sweep.dir=DIR with -m)")
    return None


def _missing_option(err: MissingConfigException) -> ConfigError:
    """`dataset=nope`: name the group, the option and the options there are; launcher=local|slurm without the
    submitit launcher plugin (the slurm extra): say how to install it."""
    missing = err.missing_cfg_file or ""
    group, _, option = missing.rpartition("/")
    if group == "hydra/launcher" and option.startswith(SUBMITIT_LAUNCHER):  # the plugin is not installed
        return ConfigError(f"launcher={option[len(SUBMITIT_LAUNCHER):]} needs submitit (hydra-submitit-launcher): "
                           f"{install_hint('slurm')}")
    if group and err.options:
        return ConfigError(f"{group}={option} is not an option of {group}; choose one of {', '.join(err.options)}")
    if group:
        return ConfigError(f"{group} is not a config group; README.md lists the groups")
    return ConfigError(_first_line(err))


def _raised_in(err: BaseException, code: CodeType) -> bool:
    """True if `err` passed through a call of `code` (it came from the task function, not from Hydra)."""
    return any(frame.f_code is code for frame, _ in traceback.walk_tb(err.__traceback__))


def _first_line(err: BaseException) -> str:
    return next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)


def _joined(err: BaseException) -> str:
    """A multi-line Hydra message on one line."""
    return " ".join(line.strip() for line in str(err).splitlines() if line.strip()) or type(err).__name__
