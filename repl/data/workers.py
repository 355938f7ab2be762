"""Batches from DataLoader worker processes, with a user error raised in a worker kept to its one line."""
from __future__ import annotations

from typing import Iterable, Iterator, TypeVar

from repl.errors import ReplError

T = TypeVar("T")
WORKER_TRACEBACK = "\nOriginal Traceback"  # torch.utils.data's ExceptionWrapper: the worker's traceback, in the message


def worker_message(err: ReplError) -> str:
    """The message `err` was raised with in a DataLoader worker. torch re-raises a worker's exception in the main
    process as the same type with "Caught <Type> in DataLoader worker process N." and the worker's traceback as its
    message; the raised message is what follows "<module>.<Type>: " on the traceback's last line."""
    text = str(err)
    if WORKER_TRACEBACK not in text:
        return text
    marker = f"{type(err).__module__}.{type(err).__qualname__}: "
    _, found, message = text.rstrip().rpartition(marker)
    return message.strip() if found else text


def from_workers(batches: Iterable[T]) -> Iterator[T]:
    """Iterate a DataLoader; a ReplError from a worker (a dataset that turned out unreadable) comes out as the same
    error with the message it was raised with, so the entry point prints its one line and not a traceback."""
    try:
        yield from batches
    except ReplError as err:
        message = worker_message(err)
        if message == str(err):
            raise
        raise type(err)(message) from None
