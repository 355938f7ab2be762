"""dataset.repeated_aug (DeiT's repeated augmentation, timm's RepeatAugSampler): each sample of an epoch k
times, across ranks, each copy augmented on its own; deterministic per seed."""
from collections import Counter

import pytest
import torch

from repl.data import ImageDataConfig, build_data
from repl.data.order import BatchOrder
from repl.errors import ConfigError

CPU = torch.device("cpu")


def epoch_by_rank(world_size: int, seed: int = 0, repeats: int = 3, num_train: int = 96, batch: int = 24):
    """{rank: [this rank's index tensors per step]} for epoch 0."""
    return {r: list(BatchOrder(num_train, batch, seed=seed, rank=r, world_size=world_size, repeats=repeats).rank_batches(0))
            for r in range(world_size)}


def test_each_sample_appears_k_times_per_epoch_on_k_different_ranks():
    ranks = epoch_by_rank(world_size=4)
    where = {}
    for rank, steps in ranks.items():
        for indices in steps:
            for i in indices.tolist():
                where.setdefault(i, []).append(rank)
    assert sum(len(v) for v in where.values()) == 96  # the epoch keeps its length
    assert len(where) == 32 and all(len(v) == 3 for v in where.values())  # 96 / 3 distinct samples, 3 times each
    assert all(len(set(v)) == 3 for v in where.values())  # the copies are spread over ranks, as RepeatAugSampler does


def test_the_global_batches_do_not_depend_on_the_world_size_and_follow_the_seed():
    one, two = epoch_by_rank(1), epoch_by_rank(2)
    for step, whole in enumerate(one[0]):
        shards = torch.cat([two[0][step], two[1][step]])
        assert sorted(shards.tolist()) == sorted(whole.tolist())
    assert all(torch.equal(a, b) for a, b in zip(epoch_by_rank(1)[0], one[0]))
    assert not all(torch.equal(a, b) for a, b in zip(epoch_by_rank(1, seed=1)[0], one[0]))
    plain = BatchOrder(96, 24, seed=0).permutation(0)
    assert sorted(plain.tolist()) == list(range(96))  # repeated_aug=1: the plain shuffle, unchanged


def test_copies_are_augmented_apart():
    cfg = ImageDataConfig(num_train=64, num_eval=16, batch_size=32, image_size=16, repeated_aug=2)
    data = build_data(cfg, seed=0, device=CPU)
    indices = next(data.order.rank_batches(0)).tolist()
    images, labels = next(iter(data.train_batches(0)))
    first = {}
    pairs = []
    for position, i in enumerate(indices):
        if i in first:
            pairs.append((first[i], position))
        first.setdefault(i, position)
    assert len(pairs) == 16
    for a, b in pairs:
        assert labels[a] == labels[b] and not torch.equal(images[a], images[b])


@pytest.mark.parametrize("overrides, task, message", [
    ({"repeated_aug": 0}, "classification", "dataset.repeated_aug=0 must be an integer >= 1"),
    ({"repeated_aug": 3, "augment": False}, "classification", "dataset.repeated_aug=3 .* needs dataset.augment=true"),
    ({"name": "coco", "repeated_aug": 3}, "detection", "dataset.repeated_aug=3 is for task=classification only"),
])
def test_bad_values_are_one_line_naming_the_key(overrides, task, message):
    with pytest.raises(ConfigError, match=message) as info:
        ImageDataConfig(**overrides).validate(task=task)
    assert "\n" not in str(info.value)
