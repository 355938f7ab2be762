"""Language-modelling data: WikiText-2 in its real layouts (fabricated), the synthetic corpus, windows."""
from __future__ import annotations

import math
import socket
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
import yaml

from repl.data import ImageDataConfig, TextDataConfig
from repl.data import text as text_module
from repl.data.text import IGNORE_INDEX, TextData, build_text_data, vocabulary_size
from repl.data.text_synthetic import doc_shape, make_language, make_text_corpus
from repl.data.wikitext import BPEVocab
from repl.errors import ConfigError, DataError
from tests.data.fabricate_text import EVAL_ONLY, make_wikitext2

CPU = torch.device("cpu")
CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "dataset"


def wiki(root, **overrides) -> TextDataConfig:
    return TextDataConfig(**{"name": "wikitext2", "root": str(root), "seq_len": 16, "batch_size": 4, **overrides})


def synthetic(**overrides) -> TextDataConfig:
    values = {"name": "synthetic", "vocab_size": 32, "seq_len": 16, "batch_size": 8, "num_train": 4000,
              "num_eval": 500, **overrides}
    return TextDataConfig(**values)


def reference_word_ids(lines):
    """The PyTorch word_language_model Corpus: words + <eos> per line, train vocabulary, <unk> otherwise."""
    index = {}
    for line in lines["train"]:
        for word in line.split() + ["<eos>"]:
            index.setdefault(word, len(index))
    index.setdefault("<unk>", len(index))

    def encode(split):
        return [index.get(w, index["<unk>"]) for line in lines[split] for w in line.split() + ["<eos>"]]

    return index, {split: torch.tensor(encode(split)) for split in ("train", "valid", "test")}


def streams(data: TextData) -> dict:
    """Each eval split's scored targets, in order, from all eval batches of one rank."""
    out = {"valid": [], "test": []}
    for inputs, targets, split in data.eval_batches():
        assert inputs.shape == targets.shape and inputs.shape[1] == data.seq_len
        out[split].append(targets)
    return {split: torch.cat(parts) for split, parts in out.items()}


# --- WikiText-2 files ---------------------------------------------------------------------------


def test_word_level_matches_the_standard_corpus(tmp_path):
    lines = make_wikitext2(tmp_path, "tokens")
    index, expected = reference_word_ids(lines)
    assert vocabulary_size(wiki(tmp_path)) == len(index)
    data = build_text_data(wiki(tmp_path), seed=0, device=CPU)
    assert data.vocab_size == len(index)
    assert torch.equal(data.train, expected["train"])
    for split in ("valid", "test"):
        targets = streams(data)[split].flatten()
        assert torch.equal(targets[targets != IGNORE_INDEX], expected[split][1:])
    assert data.num_eval == len(expected["valid"]) + len(expected["test"]) - 2


def test_word_vocabulary_comes_from_train_only(tmp_path):
    lines = make_wikitext2(tmp_path, "tokens")
    index, expected = reference_word_ids(lines)
    train_words = {w for line in lines["train"] for w in line.split()}
    assert set(index) == train_words | {"<eos>"}  # the tokens files already contain <unk>
    assert "<unk>" in train_words and index["<eos>"] == 0  # the first line is blank, as in the release
    assert not set(EVAL_ONLY) & set(index)
    eval_words = [w for line in lines["valid"] for w in line.split() + ["<eos>"]]
    unseen = [i for i, w in enumerate(eval_words) if w in EVAL_ONLY]
    assert unseen and all(expected["valid"][i] == index["<unk>"] for i in unseen)
    eos = sum(1 for _ in lines["train"])
    assert int((build_text_data(wiki(tmp_path), seed=0, device=CPU).train == index["<eos>"]).sum()) == eos


@pytest.mark.parametrize("layout", ["tokens_folder", "parquet"])
def test_tokenized_layouts_give_the_same_corpus(layout, tmp_path):
    make_wikitext2(tmp_path / "a", "tokens")
    make_wikitext2(tmp_path / "b", layout)
    a = build_text_data(wiki(tmp_path / "a"), seed=0, device=CPU)
    b = build_text_data(wiki(tmp_path / "b"), seed=0, device=CPU)
    assert a.vocab_size == b.vocab_size and torch.equal(a.train, b.train)
    assert all(torch.equal(a.eval_windows[s][1], b.eval_windows[s][1]) for s in ("valid", "test"))


@pytest.mark.parametrize("layout", ["raw_folder", "raw_parquet", "parquet_root"])
def test_raw_layouts_with_bpe_give_the_same_corpus(layout, tmp_path):
    make_wikitext2(tmp_path / "a", "raw")
    make_wikitext2(tmp_path / "b", layout)
    a = build_text_data(wiki(tmp_path / "a", tokenizer="bpe", vocab_size=300), seed=0, device=CPU)
    b = build_text_data(wiki(tmp_path / "b", tokenizer="bpe", vocab_size=300), seed=0, device=CPU)
    assert torch.equal(a.train, b.train)


def test_word_tokenizer_prefers_the_tokenized_release(tmp_path):
    make_wikitext2(tmp_path, "raw_parquet")
    raw_size = vocabulary_size(wiki(tmp_path))
    tokens_lines = make_wikitext2(tmp_path, "tokens")  # now both releases lie in root
    text_module._CORPORA.clear()
    assert vocabulary_size(wiki(tmp_path)) == len(reference_word_ids(tokens_lines)[0]) < raw_size


def test_bpe_is_deterministic_reaches_its_size_and_round_trips(tmp_path):
    lines = make_wikitext2(tmp_path, "raw")
    first, second = BPEVocab(lines["train"], 300), BPEVocab(lines["train"], 300)
    assert len(first) == 300 and first.tokenizer.to_str() == second.tokenizer.to_str()
    ids = first.encode(lines["valid"])
    assert torch.equal(ids, second.encode(lines["valid"]))
    assert int((ids == first.eos).sum()) == len(lines["valid"])
    line = next(line for line in lines["valid"] if any(w in line for w in EVAL_ONLY))
    one = first.encode([line])
    assert first.tokenizer.decode(one[:-1].tolist()).strip() == line.strip()  # unseen words still encode
    assert len(one) - 1 < len(line.strip().encode())  # merges were learned
    assert vocabulary_size(wiki(tmp_path, tokenizer="bpe", vocab_size=300)) == 300


def test_vocabulary_is_read_once_and_reused(tmp_path, monkeypatch):
    make_wikitext2(tmp_path, "tokens")
    calls = []
    real = text_module.load_wikitext
    monkeypatch.setattr(text_module, "load_wikitext", lambda *a, **k: calls.append(a) or real(*a, **k))
    size = vocabulary_size(wiki(tmp_path))
    assert vocabulary_size(wiki(tmp_path)) == size
    assert build_text_data(wiki(tmp_path), seed=0, device=CPU).vocab_size == size
    assert len(calls) == 1


def test_num_train_and_num_eval_take_prefixes(tmp_path):
    make_wikitext2(tmp_path, "tokens")
    full = build_text_data(wiki(tmp_path), seed=0, device=CPU)
    part = build_text_data(wiki(tmp_path, num_train=500, num_eval=100), seed=0, device=CPU)
    assert torch.equal(part.train, full.train[:500]) and part.eval_tokens == {"valid": 99, "test": 99}
    assert part.num_eval == 198 and part.num_train == 499 // 16


def test_missing_dataset_is_one_line_naming_path_layouts_and_download(tmp_path):
    with pytest.raises(DataError) as err:
        vocabulary_size(wiki(tmp_path / "nowhere"))
    message = str(err.value)
    assert "\n" not in message and str(tmp_path / "nowhere") in message
    assert "wiki.{train,valid,test}.tokens" in message and "parquet" in message
    assert "dataset.download=true" in message


def test_incomplete_layout_names_the_missing_file(tmp_path):
    make_wikitext2(tmp_path, "tokens")
    (tmp_path / "wiki.test.tokens").unlink()
    with pytest.raises(DataError, match="wiki.test.tokens does not exist"):
        build_text_data(wiki(tmp_path), seed=0, device=CPU)


def test_malformed_parquet_is_a_data_error(tmp_path):
    make_wikitext2(tmp_path, "raw_parquet")
    bad = tmp_path / "wikitext-2-raw-v1" / "test-00000-of-00001.parquet"
    bad.write_bytes(b"not parquet")
    with pytest.raises(DataError, match="malformed") as err:
        build_text_data(wiki(tmp_path), seed=0, device=CPU)
    assert f"{bad} is malformed" in str(err.value)  # the file, not only the root


@pytest.fixture
def hub_calls(monkeypatch):
    """Records every load_dataset call and every attempt to open a network connection."""
    calls = {"load_dataset": [], "connect": []}
    real = datasets.load_dataset

    def recording(path, *args, **kwargs):
        calls["load_dataset"].append(path)
        return real(path, *args, **kwargs)

    def refuse(sock, address):
        calls["connect"].append(address)
        raise OSError("network disabled by the test")

    monkeypatch.setattr(datasets, "load_dataset", recording)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    return calls


def test_local_files_never_touch_the_hub(tmp_path, hub_calls):
    make_wikitext2(tmp_path, "parquet")
    build_text_data(wiki(tmp_path), seed=0, device=CPU)
    assert hub_calls == {"load_dataset": ["parquet"], "connect": []}


def test_missing_files_without_download_never_ask_the_hub(tmp_path, hub_calls):
    with pytest.raises(DataError):
        build_text_data(wiki(tmp_path), seed=0, device=CPU)
    assert hub_calls == {"load_dataset": [], "connect": []}


def test_download_in_offline_mode_fails_in_one_line_without_network(tmp_path, hub_calls):
    if not datasets.config.HF_HUB_OFFLINE:  # tests/conftest.py sets HF_HUB_OFFLINE=1 unless the caller set it
        pytest.skip("HF_HUB_OFFLINE is off in this environment")
    with pytest.raises(DataError) as err:
        build_text_data(wiki(tmp_path, download=True), seed=0, device=CPU)
    assert "\n" not in str(err.value) and "Salesforce/wikitext" in str(err.value)
    assert hub_calls["load_dataset"] == ["Salesforce/wikitext"] and hub_calls["connect"] == []


def test_download_saves_the_hub_parquet_layout(tmp_path, monkeypatch):
    source = make_wikitext2(tmp_path / "source", "tokens")
    hub = datasets.DatasetDict({
        hf: datasets.Dataset.from_dict({"text": ["" if not line.strip() else line + "\n" for line in source[split]]})
        for split, hf in (("train", "train"), ("valid", "validation"), ("test", "test"))
    })
    requested, real = [], datasets.load_dataset

    def fake_hub(path, *args, **kwargs):
        requested.append((path, *args))
        return hub if path == "Salesforce/wikitext" else real(path, *args, **kwargs)

    monkeypatch.setattr(datasets, "load_dataset", fake_hub)
    root = tmp_path / "downloaded"
    size = vocabulary_size(wiki(root, download=True))
    assert requested == [("Salesforce/wikitext", "wikitext-2-v1"), ("parquet",)]
    assert sorted(p.name for p in (root / "wikitext-2-v1").iterdir()) == [
        "test-00000-of-00001.parquet", "train-00000-of-00001.parquet", "validation-00000-of-00001.parquet"
    ]
    assert size == len(reference_word_ids(source)[0])


# --- windows, resume, shards, evaluation ----------------------------------------------------------


def test_training_windows_are_shifted_stream_slices_in_the_batch_order():
    data = build_text_data(synthetic(), seed=3, device=CPU)
    assert data.num_train == (4000 - 1) // 16 and data.steps_per_epoch == data.num_train // 8
    order = data.order.permutation(1)
    for step, (inputs, targets) in enumerate(data.train_batches(1)):
        assert inputs.dtype == targets.dtype == torch.int64 and inputs.shape == (8, 16)
        for row, window in enumerate(order[step * 8 : (step + 1) * 8].tolist()):
            chunk = data.train[window * 16 : window * 16 + 17]
            assert torch.equal(inputs[row], chunk[:-1]) and torch.equal(targets[row], chunk[1:])
    assert step + 1 == data.steps_per_epoch
    assert not torch.equal(data.order.permutation(0), order)  # reshuffled every epoch


def test_resume_at_a_step_continues_the_epoch_exactly():
    data = build_text_data(synthetic(), seed=1, device=CPU)
    full = list(data.train_batches(2))
    resumed = list(data.train_batches(2, start_step=5))
    assert len(resumed) == len(full) - 5
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(full[5:], resumed))


def test_rank_shards_are_disjoint_and_form_the_global_batch():
    single = build_text_data(synthetic(), seed=0, device=CPU)
    ranks = [build_text_data(synthetic(), seed=0, device=CPU, rank=r, world_size=2) for r in range(2)]
    for whole, *parts in zip(single.train_batches(0), *(r.train_batches(0) for r in ranks)):
        assert all(p[0].shape == (4, 16) for p in parts)
        assert torch.equal(torch.cat([p[0] for p in parts]), whole[0])
        assert torch.equal(torch.cat([p[1] for p in parts]), whole[1])
    windows = [torch.cat(list(r.order.rank_batches(0))) for r in ranks]
    assert not set(windows[0].tolist()) & set(windows[1].tolist())


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_evaluation_scores_every_token_once_over_all_ranks(world_size):
    cfg = synthetic(num_eval=437, eval_batch_size=5, batch_size=6)
    ranks = [build_text_data(cfg, seed=0, device=CPU, rank=r, world_size=world_size) for r in range(world_size)]
    corpus = make_text_corpus(32, 16, 0, 4000, 437)
    splits = [[split for *_, split in r.eval_batches()] for r in ranks]
    assert all(s == sorted(s, key=["valid", "test"].index) for s in splits)  # valid first, then test
    for split in ("valid", "test"):
        per_rank = [[(x, y) for x, y, s in r.eval_batches() if s == split] for r in ranks]
        inputs, targets = [], []
        for batch in range(len(per_rank[0])):  # rank parts of each global batch, in rank order
            parts = [p[batch] for p in per_rank if batch < len(p)]
            inputs.append(torch.cat([x for x, _ in parts]))
            targets.append(torch.cat([y for _, y in parts]))
        inputs, targets = torch.cat(inputs).flatten(), torch.cat(targets).flatten()
        scored = targets != IGNORE_INDEX
        stream = corpus.splits[split]
        assert int(scored.sum()) == 436 == ranks[0].eval_tokens[split]
        assert torch.equal(targets[scored], stream[1:]) and torch.equal(inputs[scored], stream[:-1])
        assert scored[: 436].all() and not scored[436:].any()  # only the last window is padded
    assert ranks[0].num_eval == 872


# --- the synthetic corpus -------------------------------------------------------------------------


def test_synthetic_corpus_is_determined_by_the_seed():
    a, b, c = (build_text_data(synthetic(), seed=s, device=CPU) for s in (0, 0, 1))
    assert torch.equal(a.train, b.train) and not torch.equal(a.train, c.train)
    assert a.reference_ppl == b.reference_ppl != c.reference_ppl
    assert vocabulary_size(synthetic()) == a.vocab_size == 32
    assert int(a.train.min()) >= 0 and int(a.train.max()) == 31 and len(a.train) == 4000
    assert a.eval_tokens == {"valid": 499, "test": 499}


def test_synthetic_documents_have_markers_and_copies():
    corpus = make_text_corpus(32, 16, 0, 10 * 16, 100)
    docs, (words, copy) = corpus.splits["train"].view(10, 16), doc_shape(16)
    assert (words, copy) == (10, 4)
    assert (docs[:, 0] == 30).all() and (docs[:, words + 1] == 31).all()
    assert torch.equal(docs[:, words + 2 :], docs[:, 1 : 1 + copy])
    assert int(docs[:, 1 : words + 1].max()) < 30


def test_every_window_holds_one_document():
    data = build_text_data(synthetic(), seed=0, device=CPU)
    inputs, targets = next(iter(data.train_batches(0)))
    assert (inputs[:, 0] == 30).all() and (targets[:, -1] == 30).all()  # BOS in, the next BOS is the last target
    inputs, targets, _ = next(iter(data.eval_batches()))
    assert (inputs[:, 0] == 30).all()


def test_synthetic_default_sizes():
    data = build_text_data(synthetic(num_train=None, num_eval=None), seed=0, device=CPU)
    assert data.train_tokens == 200_000 and data.eval_tokens == {"valid": 19_999, "test": 19_999}


def test_stationary_distribution_matches_an_eigenvector():
    language = make_language(20, seed=4)
    dense = np.zeros((18, 18))
    np.put_along_axis(dense, language.successors, language.probs, axis=1)
    values, vectors = np.linalg.eig(dense.T)
    pi = np.real(vectors[:, np.argmin(np.abs(values - 1))])
    assert np.allclose(pi / pi.sum(), language.stationary, atol=1e-10)


@pytest.mark.parametrize("seq_len", [16, 64])
def test_entropy_rate_matches_the_empirical_log_likelihood(seq_len):
    corpus = make_text_corpus(64, seq_len, 5, 120_000, 100)
    language, docs = corpus.language, corpus.splits["train"].view(-1, seq_len).numpy()
    words = docs[:, 1 : doc_shape(seq_len)[0] + 1]
    nll = -np.log(language.stationary[words[:, 0]]).sum()
    prev, nxt = words[:, :-1].ravel(), words[:, 1:].ravel()
    position = (language.successors[prev] == nxt[:, None]).argmax(1)
    assert (language.successors[prev, position] == nxt).all()  # every transition is in the chain
    nll -= np.log(language.probs[prev, position]).sum()
    empirical = nll / docs.size  # the markers and copies cost nothing given the document so far
    assert empirical == pytest.approx(language.entropy_rate(seq_len), rel=0.02)
    assert math.exp(language.entropy_rate(seq_len)) == pytest.approx(corpus.reference_ppl)
    assert 1.5 < corpus.reference_ppl < 4  # far below the vocabulary: there is structure to learn


# --- configuration --------------------------------------------------------------------------------


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="dataset.batch_size=300 exceeds the 249 training sequences"):
        build_text_data(synthetic(batch_size=300), seed=0, device=CPU)
    with pytest.raises(ConfigError, match="dataset.seq_len=3 is too short"):
        build_text_data(synthetic(seq_len=3), seed=0, device=CPU)
    with pytest.raises(ConfigError, match="not a text dataset"):
        vocabulary_size(TextDataConfig(name="cifar10"))
    with pytest.raises(ConfigError, match="dataset.name=cifar10: this is image data; task=lm takes text data"):
        vocabulary_size(ImageDataConfig(name="cifar10"))
    with pytest.raises(ConfigError, match="dataset.vocab_size=100 is too small for bpe"):
        vocabulary_size(wiki(tmp_path, tokenizer="bpe", vocab_size=100))


def test_wikitext2_config_file_is_a_valid_dataset_config(monkeypatch):
    monkeypatch.setenv("REPL_DATA", "/data")
    from omegaconf import OmegaConf

    for name in ("wikitext2", "synthetic_text"):
        values = OmegaConf.to_container(OmegaConf.create(yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())),
                                        resolve=True)
        assert values.pop("defaults")[0].startswith("/schema/dataset/text@")  # typed as text data when composed
        cfg = TextDataConfig(**values).validate(task="lm")
        assert cfg.seq_len * cfg.batch_size >= 1024
    assert cfg.name == "synthetic"
