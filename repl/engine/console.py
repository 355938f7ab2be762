"""What a run prints, also into Hydra's per-run log file.

Under `repl-train` Hydra has configured logging: a message goes through the `repl` logger, whose
console handler prints it as it is (configs/train.yaml, hydra.job_logging) and whose file handler
writes it with a timestamp into the run directory's train.log. Without configured logging (the
Python API, notebooks) it is printed as before.
"""
from __future__ import annotations

import logging
import sys

LOG = logging.getLogger("repl")


def echo(message: str, *, warning: bool = False) -> None:
    """Print `message` (stderr for a warning), through logging when logging is configured."""
    if LOG.hasHandlers():
        LOG.log(logging.WARNING if warning else logging.INFO, message)
    else:
        print(message, file=sys.stderr if warning else sys.stdout)


def echo_error(message: str) -> None:
    """Print `message` on stderr, always directly (a user error may come before Hydra configures logging, or
    after an earlier run in the same process left handlers on a stream that is gone), and into train.log."""
    sys.stderr.write(f"{message}\n")  # one write: a DataLoader worker still printing cannot split the line
    sys.stderr.flush()
    record = LOG.makeRecord(LOG.name, logging.ERROR, __file__, 0, message, None, None)
    for handler in file_handlers():
        handler.handle(record)


def file_handlers() -> list:
    """The file handlers a `repl` record reaches (Hydra's per-run log file)."""
    found, logger = [], LOG
    while logger is not None:
        found += [h for h in logger.handlers if isinstance(h, logging.FileHandler)]
        logger = logger.parent if logger.propagate else None
    return found


class BelowWarning(logging.Filter):
    """Keeps records under WARNING: Hydra's stdout handler leaves warnings to the stderr one (configs/train.yaml)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.WARNING
