"""Real-dataset readers on small files fabricated in each dataset's on-disk format."""
import pickle
from urllib.error import URLError

import numpy as np
import pytest
import torch

from repl.data import ImageDataConfig, build_data
from repl.data.resident import ResidentData
from repl.data.streaming import StreamingData
from repl.data.vision import VISION, LocalCIFAR10
from repl.errors import ConfigError, DataError
from tests.data.fabricate import make_cifar10, make_imagenet, make_stl10, make_svhn

CPU = torch.device("cpu")
FABRICATE = {"cifar10": make_cifar10, "svhn": make_svhn, "stl10": make_stl10}
SIZE = {"cifar10": 32, "svhn": 32, "stl10": 96}


def config(name, root, **overrides):
    return ImageDataConfig(**{"name": name, "root": str(root), "image_size": SIZE.get(name, 32), "batch_size": 10,
                            "num_workers": 0, **overrides})


def normalised(name, images):
    spec = VISION[name]
    mean, std = torch.tensor(spec.mean).view(1, 3, 1, 1), torch.tensor(spec.std).view(1, 3, 1, 1)
    return (torch.from_numpy(images).float() / 255 - mean) / std


def collect(batches):
    pairs = list(batches)
    return torch.cat([x for x, _ in pairs]), torch.cat([y for _, y in pairs])


@pytest.mark.parametrize("name", FABRICATE)
@pytest.mark.parametrize("resident", ["true", "false"])
def test_reads_images_and_labels_in_order(name, resident, tmp_path):
    expected = FABRICATE[name](tmp_path)
    data = build_data(config(name, tmp_path, resident=resident, augment=False), seed=0, device=CPU)
    assert isinstance(data, ResidentData if resident == "true" else StreamingData)
    images, labels = collect(data.eval_batches())
    test_images, test_labels = expected["test"]
    assert images.dtype == torch.float32 and labels.dtype == torch.int64
    assert torch.equal(labels, torch.from_numpy(test_labels))
    assert torch.allclose(images, normalised(name, test_images), atol=1e-5)
    train_images, train_labels = expected["train"]
    order = data.order.permutation(0)
    for step, (x, y) in enumerate(data.train_batches(0)):
        picked = order[step * 10 : (step + 1) * 10].numpy()
        assert torch.equal(y, torch.from_numpy(train_labels[picked]))
        assert torch.allclose(x, normalised(name, train_images[picked]), atol=1e-5)
    assert step + 1 == data.steps_per_epoch == len(train_labels) // 10


def test_svhn_digit_zero_is_label_zero(tmp_path):
    from scipy.io import loadmat

    expected = make_svhn(tmp_path, n_train=20, n_test=20)
    stored = loadmat(tmp_path / "test_32x32.mat")["y"].ravel()
    assert 10 in stored and 0 not in stored  # the file uses 10 for the digit 0
    _, labels = collect(build_data(config("svhn", tmp_path), seed=0, device=CPU).eval_batches())
    assert labels.min() == 0 and labels.max() == 9
    assert torch.equal(labels, torch.from_numpy(expected["test"][1]))


@pytest.mark.parametrize("name", FABRICATE)
def test_streaming_and_resident_paths_give_the_same_batches(name, tmp_path):
    FABRICATE[name](tmp_path)
    resident = build_data(config(name, tmp_path, resident="true", augment=False), seed=7, device=CPU)
    streaming = build_data(config(name, tmp_path, resident="false", augment=False), seed=7, device=CPU)
    for epoch, start in ((0, 0), (1, 2)):
        a, b = list(resident.train_batches(epoch, start)), list(streaming.train_batches(epoch, start))
        assert len(a) == len(b) == resident.steps_per_epoch - start
        for (xa, ya), (xb, yb) in zip(a, b):
            assert torch.equal(ya, yb) and torch.allclose(xa, xb, atol=1e-5)


def test_streaming_workers_resume_mid_epoch_and_augment(tmp_path):
    make_cifar10(tmp_path)
    data = build_data(config("cifar10", tmp_path, resident="false", num_workers=1), seed=0, device=CPU)
    full = [y for _, y in data.train_batches(0)]
    tail = [y for _, y in data.train_batches(0, start_step=3)]
    assert len(full) == 5 and all(torch.equal(a, b) for a, b in zip(full[3:], tail))
    plain = build_data(config("cifar10", tmp_path, resident="false", augment=False), seed=0, device=CPU)
    (x_aug, _), (x_plain, _) = next(iter(data.train_batches(0))), next(iter(plain.train_batches(0)))
    assert x_aug.shape == x_plain.shape == (10, 3, 32, 32) and not torch.equal(x_aug, x_plain)


@pytest.mark.parametrize("name", FABRICATE)
def test_resident_training_batches_are_augmented(name, tmp_path):
    FABRICATE[name](tmp_path)
    plain = build_data(config(name, tmp_path, augment=False), seed=0, device=CPU)
    augmented = build_data(config(name, tmp_path), seed=0, device=CPU)
    (xa, ya), (xp, yp) = next(iter(augmented.train_batches(0))), next(iter(plain.train_batches(0)))
    assert torch.equal(ya, yp) and xa.shape == xp.shape and not torch.equal(xa, xp)
    assert augmented.augment.flip == (name != "svhn")


def test_imagenet_folders_stream_at_the_configured_size(tmp_path):
    make_imagenet(tmp_path, n_train=4, n_val=2)
    cfg = config("imagenet", tmp_path, image_size=32, num_classes=3, batch_size=4, num_workers=1)
    data = build_data(cfg, seed=0, device=CPU)
    assert isinstance(data, StreamingData) and (data.num_train, data.num_eval, data.steps_per_epoch) == (12, 6, 3)
    images, labels = collect(data.train_batches(0))
    assert images.shape == (12, 3, 32, 32) and sorted(labels.tolist()) == [0] * 4 + [1] * 4 + [2] * 4
    eval_images, eval_labels = collect(data.eval_batches())
    assert eval_images.shape == (6, 3, 32, 32) and eval_labels.tolist() == [0, 0, 1, 1, 2, 2]


def test_imagenet_class_count_and_folders_are_checked(tmp_path):
    make_imagenet(tmp_path)
    with pytest.raises(ConfigError, match="dataset.num_classes=1000 .* set dataset.num_classes=3"):
        build_data(config("imagenet", tmp_path, num_classes=1000), seed=0, device=CPU)
    with pytest.raises(ConfigError, match="dataset.resident=true"):
        build_data(config("imagenet", tmp_path, num_classes=3, resident="true"), seed=0, device=CPU)
    (tmp_path / "val" / "n09999999").mkdir()
    make_imagenet(tmp_path / "other", classes=("n09999999",), n_train=0, n_val=1)
    (tmp_path / "other" / "val" / "n09999999" / "n09999999_0.JPEG").rename(
        tmp_path / "val" / "n09999999" / "n09999999_0.JPEG")
    with pytest.raises(DataError, match="class folders"):
        build_data(config("imagenet", tmp_path, num_classes=3), seed=0, device=CPU)


@pytest.mark.parametrize("name", [*FABRICATE, "imagenet"])
def test_missing_dataset_is_one_line_naming_the_path(name, tmp_path):
    root = tmp_path / "nowhere"
    with pytest.raises(DataError) as err:
        build_data(config(name, root), seed=0, device=CPU)
    message = str(err.value)
    assert "\n" not in message and str(root) in message
    expected_start = {"cifar10": "cifar-10-batches-py/data_batch_1", "svhn": "train_32x32.mat",
                      "stl10": "stl10_binary/train_X.bin", "imagenet": "train"}[name]
    assert f"{root}/{expected_start} does not exist" in message
    assert ("dataset.download=true" in message) == (name != "imagenet")


def test_one_missing_file_is_named(tmp_path):
    make_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "test_batch").unlink()
    with pytest.raises(DataError, match="cifar-10-batches-py/test_batch does not exist"):
        build_data(config("cifar10", tmp_path), seed=0, device=CPU)


def truncate(path, keep: float = 0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def set_cifar_labels(path, labels):
    with open(path, "rb") as f:
        entry = pickle.load(f, encoding="latin1")
    entry["labels"] = labels(entry["labels"])
    with open(path, "wb") as f:
        pickle.dump(entry, f)


@pytest.mark.parametrize("name, file, damage, reason", [
    ("cifar10", "cifar-10-batches-py/data_batch_3", lambda p: p.write_bytes(b"not a pickle"), "invalid load key"),
    ("cifar10", "cifar-10-batches-py/data_batch_3", truncate, "pickle data was truncated"),
    ("cifar10", "cifar-10-batches-py/data_batch_4", lambda p: set_cifar_labels(p, lambda y: y[:-1]),
     "10 images but 9 labels"),
    ("cifar10", "cifar-10-batches-py/batches.meta", truncate, ""),
    ("svhn", "test_32x32.mat", truncate, ""),
    ("stl10", "stl10_binary/train_X.bin", lambda p: truncate(p, 0.99), "cannot reshape"),
])
def test_a_malformed_file_is_named_in_one_line(name, file, damage, reason, tmp_path):
    FABRICATE[name](tmp_path)
    damage(tmp_path / file)
    with pytest.raises(DataError) as err:
        build_data(config(name, tmp_path), seed=0, device=CPU)
    message = str(err.value)
    assert "\n" not in message and f"{tmp_path / file} is malformed or incomplete ({reason}" in message
    assert message.endswith(f" {tmp_path}")  # and where to place the files


@pytest.mark.parametrize("name, file, damage, found, accepted", [
    ("cifar10", "cifar-10-batches-py/data_batch_2", lambda p: set_cifar_labels(p, lambda y: [99] * len(y)), 99, "0 to 9"),
    ("cifar10", "cifar-10-batches-py/test_batch", lambda p: set_cifar_labels(p, lambda y: y[:5] + [-1] + y[6:]), -1,
     "0 to 9"),
    ("svhn", "train_32x32.mat", "y", 11, "1 to 10 (10 for the digit 0)"),
    ("stl10", "stl10_binary/test_y.bin", lambda p: p.write_bytes(b"\x00" + p.read_bytes()[1:]), 0, "1 to 10"),
])
def test_labels_out_of_range_are_refused_naming_the_file(name, file, damage, found, accepted, tmp_path):
    FABRICATE[name](tmp_path)
    if damage == "y":  # SVHN: one digit 11 in the .mat file
        from scipy.io import loadmat, savemat

        mat = loadmat(tmp_path / file)
        mat["y"][3] = 11
        savemat(tmp_path / file, {"X": mat["X"], "y": mat["y"]})
    else:
        damage(tmp_path / file)
    with pytest.raises(DataError) as err:
        build_data(config(name, tmp_path), seed=0, device=CPU)
    message = str(err.value)
    assert "\n" not in message and f"{tmp_path / file} holds the label {found} " in message
    assert f"but {accepted} are accepted (10 classes); " in message and message.endswith(f" {tmp_path}")


@pytest.mark.parametrize("name, split, files", [
    ("cifar10", "n_test", "cifar-10-batches-py/test_batch"),
    ("svhn", "n_test", "test_32x32.mat"),
    ("stl10", "n_test", "stl10_binary/test_X.bin"),
    ("imagenet", "n_val", "val"),
    ("svhn", "n_train", "train_32x32.mat"),
])
def test_an_empty_split_is_refused_naming_its_files(name, split, files, tmp_path):
    """An empty evaluation split would end the run 'completed' with top-1 0.00; one line before training instead."""
    {**FABRICATE, "imagenet": make_imagenet}[name](tmp_path, **{split: 0})
    with pytest.raises(DataError) as err:
        build_data(config(name, tmp_path, num_classes=3 if name == "imagenet" else 10), seed=0, device=CPU)
    message = str(err.value)
    which = "training" if split == "n_train" else "evaluation"
    assert "\n" not in message and f"the {which} split {tmp_path / files}" in message and "has no images" in message


def test_classification_evaluate_refuses_no_sample():
    from contextlib import nullcontext

    from repl.engine.config import TaskConfig
    from repl.tasks.classification import ClassificationTask

    with pytest.raises(DataError, match="no sample"):
        ClassificationTask(TaskConfig()).evaluate(torch.nn.Linear(2, 2), [], nullcontext())


def test_stl10_labels_one_short_are_refused_naming_the_files(tmp_path):
    make_stl10(tmp_path)
    labels = tmp_path / "stl10_binary" / "train_y.bin"
    labels.write_bytes(labels.read_bytes()[:-1])
    with pytest.raises(DataError, match=r"train_X.bin, .*train_y.bin hold 20 images but 19 labels"):
        build_data(config("stl10", tmp_path), seed=0, device=CPU)


def test_failed_download_is_a_data_error(tmp_path, monkeypatch):
    def offline(self):
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(LocalCIFAR10, "download", offline)
    with pytest.raises(DataError, match=r"downloading CIFAR-10 to .* failed \(.*name resolution"):
        build_data(config("cifar10", tmp_path, download=True), seed=0, device=CPU)


def test_download_is_skipped_when_files_are_present(tmp_path, monkeypatch):
    make_cifar10(tmp_path)
    monkeypatch.setattr(LocalCIFAR10, "download", lambda self: pytest.fail("tried to download"))
    assert build_data(config("cifar10", tmp_path, download=True), seed=0, device=CPU).num_train == 50


@pytest.mark.parametrize("key,value", [("image_size", 64), ("num_classes", 100), ("in_chans", 1)])
def test_static_shape_must_match_the_dataset(key, value, tmp_path):
    make_cifar10(tmp_path)
    with pytest.raises(ConfigError, match=f"dataset.{key}={value} .* set dataset.{key}="):
        build_data(config("cifar10", tmp_path, **{key: value}), seed=0, device=CPU)


def test_subsets_are_fixed_across_seeds_and_bounded(tmp_path):
    expected = make_cifar10(tmp_path)
    cfg = config("cifar10", tmp_path, num_train=30, num_eval=7, augment=False)
    a, b = build_data(cfg, seed=0, device=CPU), build_data(cfg, seed=1, device=CPU)
    assert (a.num_train, a.num_eval, a.steps_per_epoch) == (30, 7, 3)
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.evaluation.labels, b.evaluation.labels)
    all_train = {bytes(img) for img in expected["train"][0]}
    assert len({bytes(img.numpy()) for img in a.train.images}) == 30
    assert all(bytes(img.numpy()) in all_train for img in a.train.images)
    with pytest.raises(ConfigError, match="dataset.num_train=51"):
        build_data(config("cifar10", tmp_path, num_train=51), seed=0, device=CPU)


def test_fabricated_cifar_batches_have_torchvision_keys(tmp_path):
    make_cifar10(tmp_path)
    with open(tmp_path / "cifar-10-batches-py" / "data_batch_1", "rb") as f:
        entry = pickle.load(f, encoding="latin1")
    assert entry["data"].dtype == np.uint8 and entry["data"].shape == (10, 3072) and len(entry["labels"]) == 10


def test_streaming_rank_shards_form_the_global_batch(tmp_path):
    make_svhn(tmp_path)
    cfg = config("svhn", tmp_path, resident="false", augment=False)
    single = list(build_data(cfg, seed=2, device=CPU).train_batches(0))
    ranks = [list(build_data(cfg, seed=2, device=CPU, rank=r, world_size=2).train_batches(0)) for r in range(2)]
    assert len(single) == len(ranks[0]) == len(ranks[1]) == 4
    for (x, y), (x0, y0), (x1, y1) in zip(single, *ranks):
        assert len(y0) == len(y1) == 5
        assert torch.equal(torch.cat([y0, y1]), y) and torch.equal(torch.cat([x0, x1]), x)
    whole = list(build_data(cfg, seed=2, device=CPU).eval_batches())
    parts = [list(build_data(cfg, seed=2, device=CPU, rank=r, world_size=2).eval_batches()) for r in range(2)]
    assert len(whole) == len(parts[0]) == len(parts[1]) == 2
    for (x, y), (x0, y0), (x1, y1) in zip(whole, *parts):
        assert torch.equal(torch.cat([x0, x1]), x) and torch.equal(torch.cat([y0, y1]), y)


@pytest.mark.parametrize("damage", ["not an image", "truncated"])
def test_unreadable_image_mid_epoch_is_skipped_with_a_one_line_warning(damage, tmp_path, capfd):
    make_imagenet(tmp_path, n_train=4, n_val=2)
    bad = sorted((tmp_path / "train").rglob("*.JPEG"))[5]
    bad.write_bytes(b"not a jpeg" if damage == "not an image" else bad.read_bytes()[:200])
    cfg = config("imagenet", tmp_path, image_size=32, num_classes=3, batch_size=4, num_workers=1)
    images, labels = collect(build_data(cfg, seed=0, device=CPU).train_batches(0))
    assert images.shape == (12, 3, 32, 32) and torch.isfinite(images).all()  # a whole epoch, no traceback
    warnings = [line for line in capfd.readouterr().err.splitlines() if "unreadable" in line]
    assert warnings and all(line.startswith("warning: ") and str(bad) in line for line in warnings)


def test_a_folder_unreadable_in_a_worker_stops_with_its_own_one_line_error(tmp_path):
    """More unreadable images in a row than read_skipping passes over, read by a DataLoader worker: the DataError
    the worker raised, with its message alone (torch's re-raise carries the worker's traceback; repl.data.workers)."""
    make_imagenet(tmp_path, n_train=8, n_val=2)
    for path in (tmp_path / "train").rglob("*.JPEG"):
        path.write_bytes(b"not a jpeg")
    cfg = config("imagenet", tmp_path, image_size=32, num_classes=3, batch_size=4, num_workers=1)
    with pytest.raises(DataError) as stop:
        collect(build_data(cfg, seed=0, device=CPU).train_batches(0))
    assert len(str(stop.value).splitlines()) == 1 and "images in a row from" in str(stop.value)


def test_the_readers_are_keyed_by_the_names_the_config_accepts():
    """repl.data.config.VISION_DATASETS (what dataset.name accepts without importing torchvision) and the readers
    of repl.data.vision are one list."""
    from repl.data.config import VISION_DATASETS

    assert tuple(VISION) == VISION_DATASETS
