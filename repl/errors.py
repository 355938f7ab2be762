"""User-facing errors: raised for bad input, printed as one line by the entry point (no traceback)."""


class ReplError(Exception):
    """Base class of every error caused by the user's input rather than by a bug."""


class ConfigError(ReplError):
    """A config value is invalid. The message names the key and what is accepted."""


class DataError(ReplError):
    """A dataset is missing or malformed. The message names where we looked and how to get it."""


class CheckpointError(ReplError):
    """A checkpoint is corrupt or does not belong to this run (e.g. a different plan)."""


class UnsupportedModelError(ReplError):
    """The method cannot find the block sequence of a model. The message names supported families."""


class RegistrationError(ReplError, ValueError):
    """A model family or a method cannot be registered: another one has its name. (Also a ValueError, as it was
    before.)"""


DISTRIBUTION = "replacement-learning"  # the name on the package registry; the import name is `repl`


def install_hint(extra: str) -> str:
    """How to install an optional extra, for a wheel user and for a checkout (error messages end with it)."""
    return f"pip install '{DISTRIBUTION}[{extra}]' (from a checkout: pip install -e '.[{extra}]')"
