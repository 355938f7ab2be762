"""The lm task: loss over real tokens only, perplexity = exp(mean token loss) per split, tokens as the unit."""
import math
from contextlib import nullcontext

import pytest
import torch
from torch import nn

from repl.engine.config import TaskConfig
from repl.errors import ConfigError
from repl.tasks import build_task
from repl.tasks.lm import IGNORE_INDEX

VOCAB = 11


class Bigram(nn.Module):
    """Logits from the current token alone: a model whose loss is easy to write out by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.table = nn.Embedding(VOCAB, VOCAB)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.table(tokens)


def test_perplexity_is_exp_of_the_mean_token_loss_of_each_split():
    torch.manual_seed(0)
    task, model = build_task(TaskConfig(name="lm")), Bigram()
    batches = []
    for split, n in (("valid", 3), ("test", 2)):
        for _ in range(n):
            inputs = torch.randint(0, VOCAB, (2, 5))
            targets = torch.randint(0, VOCAB, (2, 5))
            targets[1, 3:] = IGNORE_INDEX  # a padded tail is not scored
            batches.append((inputs, targets, split))
    metrics = task.evaluate(model, batches, nullcontext())
    for split in ("valid", "test"):
        nll = [-torch.log_softmax(model(i), -1)[r, t, y[r, t]].item()
               for i, y, s in batches if s == split for r in range(2) for t in range(5) if y[r, t] != IGNORE_INDEX]
        mean = sum(nll) / len(nll)
        assert metrics[f"{split}_loss"] == pytest.approx(mean, rel=1e-6)
        assert metrics[f"{split}_ppl"] == pytest.approx(math.exp(mean), rel=1e-6)
    assert metrics["valid_ppl"] != metrics["test_ppl"]


def test_training_loss_ignores_padding_and_counts_tokens():
    task, model = build_task(TaskConfig(name="lm")), Bigram()
    inputs, targets = torch.randint(0, VOCAB, (3, 4)), torch.randint(0, VOCAB, (3, 4))
    padded = targets.clone()
    padded[:, 2:] = IGNORE_INDEX
    unpadded = nn.functional.cross_entropy(model(inputs[:, :2]).flatten(0, 1), targets[:, :2].flatten())
    torch.testing.assert_close(task.loss(model, (inputs, padded)), unpadded)
    assert task.batch_size((inputs, targets)) == 12 and task.unit == "tokens"
    assert task.primary == "test_ppl" and task.higher_is_better is False


def test_label_smoothing_is_refused_for_lm():
    with pytest.raises(ConfigError, match="task.label_smoothing"):
        build_task(TaskConfig(name="lm", label_smoothing=0.1))
