"""Language-modelling data (task=lm): token streams cut into windows, batches already on the device.

    vocab = vocabulary_size(cfg)                   # before the model is built; cached per process
    data = build_text_data(cfg, seed=0, device=device, rank=rank, world_size=world_size)
    for inputs, targets in data.train_batches(epoch, start_step): ...       # int64 [B_local, seq_len]
    for inputs, targets, split in data.eval_batches(): ...                  # split: "valid", then "test"

Training: the train stream is cut into contiguous non-overlapping windows of seq_len + 1 tokens
(stride seq_len); window w gives inputs tokens[w*L : w*L+L] and targets tokens[w*L+1 : w*L+L+1].
`num_train` and the BatchOrder count windows; dataset.batch_size is the global number of windows per
step (drop_last), shuffled per (seed, epoch), each rank taking batch_size / world_size of them.

Evaluation: each split's stream of M tokens is cut the same way into ceil((M - 1) / L) windows, so
each of its tokens 1 .. M - 1 is a target exactly once over all ranks (token 0 is context only).
The last window is padded: inputs with 0, targets with IGNORE_INDEX (-100), so every evaluation batch
is [b, seq_len]. `num_eval` is the number of scored tokens over valid and test; `eval_tokens` has
them per split. Each window is scored with its own context only (no state carried across windows).
"""
from __future__ import annotations

import os
from collections.abc import Iterator

import torch
from omegaconf import DictConfig

from repl.data.config import SYNTHETIC, DataConfig, TextDataConfig, as_data_config
from repl.data.module import DataModule
from repl.data.order import BatchOrder, eval_shards
from repl.data.text_synthetic import (
    DEFAULT_EVAL_TOKENS,
    DEFAULT_TRAIN_TOKENS,
    MIN_SEQ_LEN,
    make_text_corpus,
)
from repl.data.wikitext import BPE_MIN_VOCAB, RAW_TOKENIZERS, find_layout, load_wikitext, missing_message
from repl.errors import ConfigError, DataError
from repl.tasks.registry import DataKind, tasks_where

IGNORE_INDEX = -100
TEXT_DATASETS = (SYNTHETIC, "wikitext2")
EvalBatch = tuple[torch.Tensor, torch.Tensor, str]
# (vocabulary size, split -> ids) of each tokenized file corpus, by (name, root, tokenizer, bpe size, hf name).
_CORPORA: dict[tuple[str, str, str, int, str], tuple[int, dict[str, torch.Tensor]]] = {}


class TextData(DataModule):
    """Windows of token ids held on the device (see the module docstring for their layout)."""

    def __init__(
        self,
        splits: dict[str, torch.Tensor],
        *,
        vocab_size: int,
        seq_len: int,
        order: BatchOrder,
        eval_batch_size: int,
        rank: int,
        world_size: int,
        device: torch.device,
        reference_ppl: float | None = None,
    ) -> None:
        evaluation = {split: splits[split] for split in ("valid", "test")}
        super().__init__(
            num_eval=sum(len(ids) - 1 for ids in evaluation.values()),
            order=order,
            eval_batch_size=eval_batch_size,
            rank=rank,
            world_size=world_size,
            device=device,
        )
        self.vocab_size = vocab_size
        self.seq_len = seq_len
        self.reference_ppl = reference_ppl  # best achievable perplexity, where known (synthetic)
        self.train_tokens = len(splits["train"])
        self.eval_tokens = {split: len(ids) - 1 for split, ids in evaluation.items()}
        self.train = splits["train"].to(device)
        self.offsets = torch.arange(seq_len, device=device)
        self.eval_windows = {split: eval_windows(ids, seq_len, device) for split, ids in evaluation.items()}

    def train_batches(self, epoch: int, start_step: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for windows in self.order.rank_batches(epoch, start_step, device=self.device):
            positions = windows[:, None] * self.seq_len + self.offsets
            yield self.train[positions], self.train[positions + 1]

    def eval_batches(self) -> Iterator[EvalBatch]:
        for split, (inputs, targets) in self.eval_windows.items():
            for indices in eval_shards(len(inputs), self.eval_batch_size, self.rank, self.world_size):
                indices = indices.to(self.device)
                yield inputs[indices], targets[indices], split


def eval_windows(ids: torch.Tensor, seq_len: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets) [ceil((M-1)/L), L] scoring tokens 1..M-1 once; the tail padded (0 / IGNORE_INDEX)."""
    scored = len(ids) - 1
    count = -(-scored // seq_len)
    inputs = torch.zeros(count * seq_len, dtype=torch.int64)
    targets = torch.full((count * seq_len,), IGNORE_INDEX, dtype=torch.int64)
    inputs[:scored], targets[:scored] = ids[:-1], ids[1:]
    return inputs.view(count, seq_len).to(device), targets.view(count, seq_len).to(device)


def text_task() -> str:
    """The task this data is built for: the registered task that takes text."""
    return tasks_where(data=DataKind.TEXT)[0]


def _text_config(cfg: DataConfig | DictConfig, world_size: int = 1) -> TextDataConfig:
    """`cfg` as a validated TextDataConfig (ConfigError for image data or a bad value)."""
    return as_data_config(cfg, text_task()).validate(world_size, text_task())  # type: ignore[return-value]


def vocabulary_size(cfg: DataConfig | DictConfig) -> int:
    """The number of token ids of the dataset (the model's vocabulary); reads and tokenizes files once."""
    cfg = _text_config(cfg)
    _check_name(cfg)
    if cfg.name == SYNTHETIC:
        return cfg.vocab_size
    return _file_corpus(cfg)[0]


def check_text_files(cfg: DataConfig | DictConfig) -> None:
    """DataError when WikiText-2's files are not under dataset.root (read nothing); the synthetic corpus is
    generated, and dataset.download=true fetches the corpus (a failed download stops its run)."""
    if cfg.name != SYNTHETIC and not cfg.download:
        root = os.path.abspath(os.path.expanduser(cfg.root))
        if find_layout(root, cfg.tokenizer) is None:
            raise DataError(missing_message(root))


def build_text_data(
    cfg: DataConfig | DictConfig, *, seed: int, device: torch.device, rank: int = 0, world_size: int = 1
) -> TextData:
    """The TextData of one run: the synthetic corpus of `seed`, or WikiText-2 from dataset.root."""
    cfg = _text_config(cfg, world_size)
    _check_name(cfg)
    reference_ppl = None
    if cfg.name == SYNTHETIC:
        num_train, num_eval = cfg.num_train or DEFAULT_TRAIN_TOKENS, cfg.num_eval or DEFAULT_EVAL_TOKENS
        corpus = make_text_corpus(cfg.vocab_size, cfg.seq_len, seed, num_train, num_eval)
        vocab, splits, reference_ppl = cfg.vocab_size, corpus.splits, corpus.reference_ppl
    else:
        vocab, splits = _file_corpus(cfg)
        splits = {split: _prefix(ids, cfg.num_train if split == "train" else cfg.num_eval) for split, ids in splits.items()}
    for split, ids in splits.items():
        if len(ids) < 2:
            raise ConfigError(f"the {split} split of {cfg.name} has {len(ids)} tokens; at least 2 are needed")
    windows = (len(splits["train"]) - 1) // cfg.seq_len
    if cfg.batch_size > windows:
        raise ConfigError(
            f"dataset.batch_size={cfg.batch_size} exceeds the {windows} training sequences of dataset.seq_len="
            f"{cfg.seq_len} in {len(splits['train'])} tokens; lower one of them"
        )
    return TextData(
        splits,
        vocab_size=vocab,
        seq_len=cfg.seq_len,
        order=BatchOrder(windows, cfg.batch_size, seed=seed, rank=rank, world_size=world_size),
        eval_batch_size=cfg.eval_batch,
        rank=rank,
        world_size=world_size,
        device=torch.device(device),
        reference_ppl=reference_ppl,
    )


def _check_name(cfg: TextDataConfig) -> None:
    """Only text datasets; synthetic documents need 4 tokens; a BPE vocabulary holds 256 bytes + 2 specials."""
    if cfg.name not in TEXT_DATASETS:
        raise ConfigError(
            f"dataset.name={cfg.name!r} is not a text dataset; task={text_task()} accepts dataset={' | '.join(TEXT_DATASETS)}"
        )
    if cfg.name == SYNTHETIC and cfg.seq_len < MIN_SEQ_LEN:
        raise ConfigError(f"dataset.seq_len={cfg.seq_len} is too short for the synthetic corpus; use {MIN_SEQ_LEN} or more")
    if cfg.name != SYNTHETIC and cfg.tokenizer in RAW_TOKENIZERS and cfg.vocab_size < BPE_MIN_VOCAB:
        # tokenizer=hf falls back to bpe of this size when its tokenizer is not cached
        raise ConfigError(f"dataset.vocab_size={cfg.vocab_size} is too small for {cfg.tokenizer}; use {BPE_MIN_VOCAB} or more")


def _file_corpus(cfg: TextDataConfig) -> tuple[int, dict[str, torch.Tensor]]:
    """The tokenized files of `cfg`, read once per (name, root, tokenizer, bpe vocabulary size, hf tokenizer)."""
    root = os.path.abspath(os.path.expanduser(cfg.root))
    hf = cfg.hf_tokenizer if cfg.tokenizer == "hf" else None
    key = (cfg.name, root, cfg.tokenizer, cfg.vocab_size if cfg.tokenizer in RAW_TOKENIZERS else 0, hf or "")
    if key not in _CORPORA:
        _CORPORA[key] = load_wikitext(root, cfg.tokenizer, cfg.vocab_size, allow_download=cfg.download,
                                      hf_tokenizer=hf)
    return _CORPORA[key]


def _prefix(ids: torch.Tensor, limit: int | None) -> torch.Tensor:
    """The first `limit` tokens (dataset.num_train / num_eval for file corpora; None = all)."""
    return ids if limit is None else ids[:limit]

