"""A user error raised in a DataLoader worker reaches the entry point as its own one line (repl.data.workers)."""
from __future__ import annotations

import pytest
from torch.utils.data import DataLoader, Dataset

from repl.data.workers import from_workers
from repl.errors import DataError

MESSAGE = "17 images in a row from /data/train/n01/a.JPEG on cannot be read; check the files under /data/train"


class Unreadable(Dataset):
    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int):
        raise DataError(MESSAGE)


def test_a_workers_data_error_comes_out_with_its_own_message():
    loader = DataLoader(Unreadable(), num_workers=1)
    with pytest.raises(DataError) as raw:
        next(iter(loader))
    assert "Original Traceback" in str(raw.value)  # what torch gives: the worker's traceback in the message
    with pytest.raises(DataError) as caught:
        next(from_workers(loader))
    assert str(caught.value) == MESSAGE and caught.value.__cause__ is None


def test_an_error_of_this_process_passes_unchanged():
    error = DataError("raised here")

    def batches():
        yield 1
        raise error

    seen = []
    with pytest.raises(DataError) as caught:
        for batch in from_workers(batches()):
            seen.append(batch)
    assert seen == [1] and caught.value is error
