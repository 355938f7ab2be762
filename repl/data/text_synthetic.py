"""The embedded language-modelling corpus: token ids generated from the seed, with a known entropy rate.

The corpus is a sequence of documents of exactly seq_len tokens (so every training and evaluation
window holds one whole document, and what the model can know from its context is all there is), each

    BOS, x_1 ... x_n, SEP, x_1 ... x_m          (m = max(1, seq_len // 4), n = seq_len - m - 2)

where x_1 is drawn from the stationary distribution pi of a sparse random Markov chain over the
V - 2 "word" ids (V = dataset.vocab_size; BOS = V - 2, SEP = V - 1), x_2 ... x_n follow the chain
(each word has SUCCESSORS possible next words with Dirichlet(1) probabilities, one of them the next id
mod V - 2 so the chain is irreducible), and after SEP the document repeats its first m words. A
bigram model learns the chain; predicting the copy needs attention back over n + 1 tokens.

Given its document so far, the markers and the copy are certain, so the entropy rate in nats per token
(and per target of a window) is

    (H(pi) + (n - 1) * sum_i pi_i H(P_i)) / seq_len

and `exp` of it is the best achievable perplexity (`SyntheticCorpus.reference_ppl`). The language
(the chain) and the three splits are drawn from the run seed; tokens are ids already
(dataset.tokenizer is not used). Sizes in tokens: dataset.num_train (default 200,000) and
dataset.num_eval (default 20,000 for each of valid and test).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from repl.data.order import derive_seed

DEFAULT_TRAIN_TOKENS = 200_000
DEFAULT_EVAL_TOKENS = 20_000
MIN_SEQ_LEN = 4  # BOS, one word, SEP, its copy
SUCCESSORS = 4  # possible next words of each word
STATIONARY_TOL = 1e-13


@dataclass(frozen=True)
class MarkovLanguage:
    """A sparse Markov chain over `num_words` ids: successors[i] with probabilities probs[i]."""

    successors: np.ndarray  # (num_words, SUCCESSORS) int64
    probs: np.ndarray  # (num_words, SUCCESSORS) float64, rows sum to 1
    stationary: np.ndarray  # (num_words,) float64

    @property
    def num_words(self) -> int:
        """The vocabulary size of the chain."""
        return len(self.stationary)

    def entropy_rate(self, doc_len: int) -> float:
        """Nats per token of the documents of `doc_len` tokens (see the module docstring)."""
        pi = self.stationary
        start = -float(np.sum(pi[pi > 0] * np.log(pi[pi > 0])))
        transition = -float(np.sum(pi * np.sum(self.probs * np.log(self.probs), axis=1)))
        return (start + (doc_shape(doc_len)[0] - 1) * transition) / doc_len


def doc_shape(doc_len: int) -> tuple[int, int]:
    """(n, m): the Markov words and the copied words of a document of `doc_len` tokens."""
    copy = max(1, doc_len // 4)
    return doc_len - copy - 2, copy


def make_language(vocab_size: int, seed: int) -> MarkovLanguage:
    """The random chain of `seed` over vocab_size - 2 words (two ids are the BOS and SEP markers)."""
    words = vocab_size - 2
    rng = np.random.default_rng(derive_seed(seed, "text/language", vocab_size))
    successors = np.empty((words, SUCCESSORS), dtype=np.int64)
    successors[:, 0] = (np.arange(words) + 1) % words  # a cycle through all words: irreducible
    for i in range(words):
        row = [int(successors[i, 0])]
        while len(row) < SUCCESSORS:  # distinct random others
            candidate = int(rng.integers(words))
            if candidate not in row:
                row.append(candidate)
        successors[i] = row
    probs = rng.dirichlet(np.ones(SUCCESSORS), size=words)
    return MarkovLanguage(successors, probs, _stationary(successors, probs))


def _stationary(successors: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """pi = pi P by power iteration on the lazy chain (I + P) / 2: same pi, and aperiodic."""
    words = len(successors)
    pi = np.full(words, 1.0 / words)
    for _ in range(100_000):
        moved = np.bincount(successors.ravel(), weights=(pi[:, None] * probs).ravel(), minlength=words)
        updated = 0.5 * (pi + moved)
        if np.abs(updated - pi).sum() < STATIONARY_TOL:
            return updated / updated.sum()
        pi = updated
    raise RuntimeError("the stationary distribution of the synthetic chain did not converge")


def sample_documents(
    language: MarkovLanguage, doc_len: int, num_tokens: int, rng: np.random.Generator
) -> torch.Tensor:
    """A stream of exactly `num_tokens` ids: documents of `doc_len` tokens, the last one cut."""
    docs = math.ceil(num_tokens / doc_len)
    segment_len, copy = doc_shape(doc_len)
    bos, sep = language.num_words, language.num_words + 1
    segment = np.empty((docs, segment_len), dtype=np.int64)
    segment[:, 0] = rng.choice(language.num_words, size=docs, p=language.stationary)
    cumulative = np.cumsum(language.probs, axis=1)
    for t in range(1, segment_len):
        state = segment[:, t - 1]
        pick = (rng.random(docs)[:, None] >= cumulative[state]).sum(1).clip(max=SUCCESSORS - 1)
        segment[:, t] = language.successors[state, pick]
    marker = np.full((docs, 1), bos), np.full((docs, 1), sep)
    documents = np.concatenate([marker[0], segment, marker[1], segment[:, :copy]], axis=1)
    return torch.from_numpy(documents.reshape(-1)[:num_tokens].copy())


@dataclass(frozen=True)
class SyntheticCorpus:
    """The three token streams and the language they were drawn from."""

    language: MarkovLanguage
    doc_len: int
    splits: dict[str, torch.Tensor]  # "train", "valid", "test": 1-D int64 ids

    @property
    def reference_ppl(self) -> float:
        """exp(entropy rate): the perplexity of the true process, reachable with a window's context."""
        return math.exp(self.language.entropy_rate(self.doc_len))


def make_text_corpus(vocab_size: int, seq_len: int, seed: int, num_train: int, num_eval: int) -> SyntheticCorpus:
    """The corpus of `seed` in documents of seq_len tokens: `num_train` training tokens, `num_eval`
    tokens each for valid and test."""
    language = make_language(vocab_size, seed)
    sizes = {"train": num_train, "valid": num_eval, "test": num_eval}
    splits = {
        name: sample_documents(language, seq_len, size, np.random.default_rng(derive_seed(seed, f"text/{name}")))
        for name, size in sizes.items()
    }
    return SyntheticCorpus(language, seq_len, splits)
