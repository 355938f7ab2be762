"""Mixup and CutMix in the classification loss: what the model sees, the loss it is scored by, the RNG."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from repl.engine.config import TaskConfig
from repl.errors import ConfigError
from repl.tasks.classification import ClassificationTask

B, C, H, W, CLASSES = 8, 3, 16, 12, 5


class Recorder(nn.Module):
    """A linear classifier that keeps the last input it saw."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(C * H * W, CLASSES)
        self.seen = None

    def forward(self, x):
        self.seen = x
        return self.fc(x.flatten(1))


def batch():
    images = torch.arange(B, dtype=torch.float32)[:, None, None, None].expand(B, C, H, W).contiguous()  # image i is all i
    return images, torch.arange(B) % CLASSES


def task(**kwargs):
    cfg = TaskConfig(**kwargs)
    cfg.validate()
    return ClassificationTask(cfg)


def test_off_is_plain_cross_entropy():
    model, (images, labels) = Recorder(), batch()
    loss = task(label_smoothing=0.1).loss(model, (images, labels))
    assert model.seen is images
    assert torch.equal(loss, F.cross_entropy(model.fc(images.flatten(1)), labels, label_smoothing=0.1))


def test_mixup_blends_pairs_and_scores_both_labels():
    model, (images, labels) = Recorder(), batch()
    torch.manual_seed(3)
    loss = task(mixup=0.8, label_smoothing=0.1).loss(model, (images, labels))
    torch.manual_seed(3)  # the same draws, in the documented order: lam, then the permutation
    lam = float(torch.distributions.Beta(0.8, 0.8).sample())
    perm = torch.randperm(B)
    assert 0 < lam < 1 and not torch.equal(perm, torch.arange(B))
    expected_images = lam * images + (1 - lam) * images[perm]
    torch.testing.assert_close(model.seen, expected_images, rtol=0, atol=1e-6)  # one rounding per op on values <= 7
    logits = model.fc(model.seen.flatten(1))
    expected = (lam * F.cross_entropy(logits, labels, label_smoothing=0.1)
                + (1 - lam) * F.cross_entropy(logits, labels[perm], label_smoothing=0.1))
    torch.testing.assert_close(loss, expected)
    assert torch.equal(images, batch()[0])  # the stored batch is untouched


def test_cutmix_pastes_one_box_and_weights_labels_by_its_area():
    model, (images, labels) = Recorder(), batch()
    torch.manual_seed(5)
    mixer = task(cutmix=1.0).mixer
    mixed, perm, lam = mixer(images)
    assert 0 < lam < 1
    changed = mixed != images  # image i is all i, partner perm[i] all perm[i]: a pasted pixel differs unless perm[i] == i
    for i in range(B):
        if perm[i] == i:
            continue
        rows, cols = changed[i, 0].any(1).nonzero().flatten(), changed[i, 0].any(0).nonzero().flatten()
        area = changed[i, 0].sum().item() / (H * W)  # exact: a pixel count over the image's pixels
        assert lam == 1 - area
        if area:  # one solid rectangle of the partner's value, the same on every channel
            box = changed[i, :, rows.min():rows.max() + 1, cols.min():cols.max() + 1]
            assert box.all() and (mixed[i][changed[i]] == perm[i]).all()
    assert torch.equal(images, batch()[0])


def test_both_on_switch_between_them_by_mix_switch():
    images = batch()[0]
    mixer = task(mixup=0.8, cutmix=1.0, mix_switch=0.5).mixer
    torch.manual_seed(0)
    kinds = set()
    for _ in range(40):
        mixed, perm, lam = mixer(images)
        fractional = (mixed != mixed.round()).any().item()  # mixup blends integers into fractions; CutMix never does
        kinds.add("mixup" if fractional else "cutmix")
    assert kinds == {"mixup", "cutmix"}
    only_cutmix = task(mixup=0.8, cutmix=1.0, mix_switch=1.0).mixer
    assert all((m := only_cutmix(images)[0]).equal(m.round()) for _ in range(20))


@pytest.mark.parametrize("overrides, key", [({"mixup": -0.1}, "task.mixup"), ({"cutmix": -1.0}, "task.cutmix"),
                                            ({"mix_switch": 1.5}, "task.mix_switch"),
                                            ({"name": "lm", "mixup": 0.8}, "task.mixup")])
def test_bad_values_are_one_line_naming_the_key(overrides, key):
    with pytest.raises(ConfigError, match=key) as info:
        TaskConfig(**overrides).validate()
    assert "\n" not in str(info.value)


def test_a_mixed_run_resumes_to_the_same_weights(tmp_path):
    """The draws come from the checkpointed generator: 2 steps + resume + 1 step = 3 steps."""
    from tests.engine.test_training import assert_same_weights, run, weights

    mix = ["task.mixup=0.8", "task.cutmix=1.0", "repl=none"]
    run(tmp_path / "split", *mix, "trainer.max_steps=2")
    run(tmp_path / "split", *mix, "trainer.max_steps=3")
    run(tmp_path / "whole", *mix, "trainer.max_steps=3")
    plain = run(tmp_path / "plain", "repl=none", "trainer.max_steps=3")
    assert_same_weights(weights(tmp_path / "split"), weights(tmp_path / "whole"))
    assert not torch.equal(weights(tmp_path / "whole")["fc.weight"], weights(tmp_path / "plain")["fc.weight"])
    assert plain["steps_done"] == 3
