"""The streaming path's augmentation is a function of (seed, epoch, position): a resumed run, another
worker count or loading in the training process augments every sample alike (exact resume)."""
import random

import numpy as np
import torch

from repl.data import build_data
from tests.data.fabricate import make_cifar10
from tests.data.test_vision import CPU, config


def test_resumed_streaming_augments_as_the_uninterrupted_run(tmp_path):
    make_cifar10(tmp_path)

    def data(workers):
        return build_data(config("cifar10", tmp_path, resident="false", num_workers=workers, random_erasing=0.5),
                          seed=0, device=CPU)

    full = [x for x, _ in data(1).train_batches(1)]
    resumed = [x for x, _ in data(1).train_batches(1, start_step=3)]  # fresh workers, as after a kill
    assert len(full) == 5 and all(torch.equal(a, b) for a, b in zip(full[3:], resumed))
    assert not torch.equal(full[0], [x for x, _ in data(1).train_batches(2)][0])  # epochs differ
    torch.manual_seed(123)
    before = torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy()
    in_process = [x for x, _ in data(0).train_batches(1)]
    assert all(torch.equal(a, b) for a, b in zip(full, in_process))  # the worker count does not matter
    after = torch.get_rng_state(), random.getstate(), np.random.get_state()[1]
    assert torch.equal(before[0], after[0]) and before[1] == after[1] and (before[2] == after[2]).all()
