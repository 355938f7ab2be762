"""End-to-end runs of the transformer settings: ViT classification and GPT language modelling on the
embedded data (exact resume, the summary in tokens and perplexity, learning on the synthetic corpus)."""
from __future__ import annotations

import json
import math

import pytest

from repl.config import compose, to_config
from repl.data.text import vocabulary_size
from repl.run import train
from tests.data.fabricate_text import make_wikitext2
from tests.engine.test_training import assert_same_weights, weights

COMMON = ["trainer.progress=false", "trainer.log_every=1", "trainer.timing_warmup=1"]
# 4096 training tokens in windows of 16: 32 steps per epoch of 8 sequences; a 4-block GPT of width 32.
TINY_LM = ["task=lm", "dataset.num_train=4096", "dataset.num_eval=512", "dataset.seq_len=16", "dataset.batch_size=8",
           "dataset.vocab_size=64", "model.kwargs.layers=4", "model.kwargs.dim=32", "model.kwargs.heads=2",
           "model.kwargs.dropout=0.0", *COMMON]
TINY_VIT = ["model=vit_t", "dataset.image_size=16", "dataset.num_train=64", "dataset.num_eval=32", "dataset.batch_size=16",
            "+model.kwargs.depth=5", "+model.kwargs.embed_dim=32", "+model.kwargs.num_heads=2", *COMMON]


def run(tmp, base, *overrides: str) -> dict:
    return train(to_config(compose(base + list(overrides))), tmp)


@pytest.mark.parametrize("base", [TINY_LM, TINY_VIT], ids=["lm", "vit"])
def test_two_steps_resume_one_step_equals_three_steps(tmp_path, base, capsys, caplog):
    caplog.set_level("INFO", logger="repl")
    run(tmp_path / "split", base, "trainer.max_steps=2")
    text = capsys.readouterr().out + caplog.text
    assert "training 2 steps" in text and "BatchNorm" not in text  # none to recalibrate: nothing announced
    resumed = run(tmp_path / "split", base, "trainer.max_steps=3")
    run(tmp_path / "whole", base, "trainer.max_steps=3")
    assert resumed["steps_done"] == 3 and resumed["plan"]["blocks"]
    assert_same_weights(weights(tmp_path / "split"), weights(tmp_path / "whole"))


def test_lm_summary_reports_tokens_and_perplexity(tmp_path):
    bp = run(tmp_path / "bp", TINY_LM, "repl=none", "trainer.max_steps=2")
    summary = run(tmp_path / "repl", TINY_LM, "trainer.max_steps=2")
    on_disk = json.loads((tmp_path / "repl" / "summary.json").read_text())
    assert on_disk["task"] == "lm" and on_disk["model"] == "lm" and on_disk["method"] == "repl"
    assert on_disk["throughput"]["unit"] == "tokens" and on_disk["throughput"]["train_per_s"] > 0
    assert on_disk["input_size"] is None  # token inputs have no image side
    assert on_disk["primary"] == {"name": "test_ppl", "value": summary["metrics"]["test_ppl"], "higher_is_better": False}
    metrics = on_disk["metrics"]
    for split in ("valid", "test"):
        assert metrics[f"{split}_ppl"] == pytest.approx(math.exp(metrics[f"{split}_loss"]), rel=1e-12)
    params = on_disk["params"]
    assert params["trainable"] == bp["params"]["trainable"] - params["replaced"] + params["fusion"] < bp["params"]["trainable"]
    assert 0 < on_disk["flops"]["train_step"] < bp["flops"]["train_step"]  # lite drops attention in 1 of 4 blocks


@pytest.mark.slow
@pytest.mark.parametrize("repl", ["repl=none", "repl=repl"])
def test_lm_learns_the_synthetic_corpus(tmp_path, repl):
    """Uniform guessing has perplexity 64; the corpus's entropy rate bounds what any model reaches."""
    summary = run(tmp_path, TINY_LM, repl, "trainer.epochs=3", "optim.lr=3e-3")
    assert summary["metrics"]["test_ppl"] < 0.5 * 64


@pytest.mark.parametrize("tokenizer, layout", [("word", "tokens"), ("bpe", "raw_parquet")])
def test_lm_trains_on_wikitext2_files_in_their_released_layout(tmp_path, tokenizer, layout):
    make_wikitext2(tmp_path / "wikitext2", layout=layout)
    summary = run(tmp_path / "run", TINY_LM, "dataset=wikitext2", f"dataset.root={tmp_path / 'wikitext2'}",
                  f"dataset.tokenizer={tokenizer}", "dataset.vocab_size=300", "dataset.num_train=null",
                  "dataset.num_eval=null", "dataset.seq_len=16", "dataset.batch_size=8", "trainer.max_steps=3")
    assert summary["dataset"] == "wikitext2" and summary["steps_done"] == 3
    vocab = vocabulary_size(to_config(compose(TINY_LM + ["dataset=wikitext2", f"dataset.root={tmp_path / 'wikitext2'}",
                                                          f"dataset.tokenizer={tokenizer}", "dataset.vocab_size=300"])).dataset)
    ppl = summary["metrics"]["test_ppl"]
    assert 1 < ppl < 2 * vocab  # barely trained: near uniform over the vocabulary, not beyond it
