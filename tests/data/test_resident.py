"""The resident data path: exact determinism, resume from any step, rank shards, eval coverage."""
import pytest
import torch

from repl.data import ImageDataConfig, build_data

CPU = torch.device("cpu")
SMALL = dict(num_train=96, num_eval=37, batch_size=16, image_size=16)


def batches(data, epoch, start_step=0):
    return list(data.train_batches(epoch, start_step=start_step))


def assert_same(a, b):
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_batches_are_float_nchw_and_int64_labels():
    data = build_data(ImageDataConfig(**SMALL), seed=0, device=CPU)
    images, labels = next(iter(data.train_batches(0)))
    assert images.shape == (16, 3, 16, 16) and images.dtype == torch.float32 and images.is_contiguous()
    assert labels.shape == (16,) and labels.dtype == torch.int64
    assert (data.num_train, data.num_eval, data.steps_per_epoch) == (96, 37, 6)


def test_start_step_continues_the_epoch_exactly():
    data = build_data(ImageDataConfig(**SMALL), seed=5, device=CPU)
    full = batches(data, epoch=2)
    for k in (1, 4, 6):
        assert_same(batches(data, epoch=2, start_step=k), full[k:])


def test_rebuilt_module_gives_the_same_batches_and_epochs_differ():
    first = batches(build_data(ImageDataConfig(**SMALL), seed=1, device=CPU), epoch=0)
    again = batches(build_data(ImageDataConfig(**SMALL), seed=1, device=CPU), epoch=0)
    assert_same(first, again)
    other_epoch = batches(build_data(ImageDataConfig(**SMALL), seed=1, device=CPU), epoch=1)
    assert not torch.equal(first[0][1], other_epoch[0][1])


def test_global_rng_does_not_change_the_batches():
    data = build_data(ImageDataConfig(**SMALL), seed=1, device=CPU)
    torch.manual_seed(123)
    a = batches(data, 0)
    torch.manual_seed(456)
    assert_same(a, batches(data, 0))


def test_augmentation_changes_images_but_not_labels():
    plain = batches(build_data(ImageDataConfig(**SMALL, augment=False), seed=0, device=CPU), 0)
    augmented = batches(build_data(ImageDataConfig(**SMALL), seed=0, device=CPU), 0)
    assert all(torch.equal(ya, yb) for (_, ya), (_, yb) in zip(plain, augmented))
    assert not torch.equal(plain[0][0], augmented[0][0])


def test_an_epoch_visits_each_training_sample_at_most_once():
    data = build_data(ImageDataConfig(**{**SMALL, "num_train": 100}, augment=False), seed=0, device=CPU)
    images = torch.cat([x for x, _ in data.train_batches(0)])
    assert len(images) == 96  # drop_last: 6 full batches of 16 out of 100
    assert len({bytes(img.numpy()) for img in images}) == 96


@pytest.mark.parametrize("world_size", [2, 4])
def test_rank_shards_are_disjoint_and_form_the_global_batch(world_size):
    single = batches(build_data(ImageDataConfig(**SMALL), seed=3, device=CPU), 1)
    shards = [batches(build_data(ImageDataConfig(**SMALL), seed=3, device=CPU, rank=r, world_size=world_size), 1)
              for r in range(world_size)]
    for step, (images, labels) in enumerate(single):
        parts = [shard[step] for shard in shards]
        assert all(len(x) == 16 // world_size for x, _ in parts)
        assert torch.equal(torch.cat([x for x, _ in parts]), images)
        assert torch.equal(torch.cat([y for _, y in parts]), labels)


@pytest.mark.parametrize("world_size,eval_batch", [(1, 10), (3, 10), (4, 6)])
def test_eval_covers_every_sample_once_over_all_ranks(world_size, eval_batch):
    cfg = ImageDataConfig(**{**SMALL, "batch_size": 12}, eval_batch_size=eval_batch)
    reference = torch.cat([x for x, _ in build_data(cfg, seed=0, device=CPU).eval_batches()])
    seen = []
    for rank in range(world_size):
        data = build_data(cfg, seed=0, device=CPU, rank=rank, world_size=world_size)
        seen += [img for x, _ in data.eval_batches() for img in x]
    assert len(seen) == 37 == len(reference)
    keys = sorted(bytes(img.numpy()) for img in seen)
    assert keys == sorted(bytes(img.numpy()) for img in reference)
