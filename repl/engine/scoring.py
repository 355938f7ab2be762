"""The training batches `repl.similarity=cka` scores blocks on, taken without disturbing the run.

Used when the run is built (repl/build.py) and, with repl.start > 0, at the start of the method phase
(repl/engine/trainer.py), where the blocks are scored on the weights trained so far.
"""
from __future__ import annotations

from itertools import islice
from typing import Any, List

from repl.engine.checkpoint import rng_state, set_rng_state
from repl.errors import ConfigError
from repl.tasks.registry import DataKind, task_spec

SCORING_BATCHES = 4  # repl.similarity=cka scores the blocks on this many training batches


def check_scorable(task: str) -> None:
    """ConfigError unless the task's batches hold plain model inputs first (images, token ids) for repl.similarity=cka."""
    if task_spec(task).data not in (DataKind.IMAGE, DataKind.TEXT):
        raise ConfigError(f"repl.similarity=cka runs the model on plain image or token batches, which task.name={task} "
                          "does not have; use repl.similarity=weight")


def scoring_inputs(data: Any, count: int = SCORING_BATCHES, epoch: int = 0) -> List[Any]:
    """The model inputs (first item) of the first `count` training batches of `epoch`.

    Every RNG stream is saved before and restored after, so the run draws what it would have drawn
    without them; the batch order itself is a function of (seed, epoch), not of global RNG state."""
    saved = rng_state()
    try:
        return [batch[0] for batch in islice(data.train_batches(epoch), count)]
    finally:
        set_rng_state(saved)
