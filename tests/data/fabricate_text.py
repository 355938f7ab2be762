"""A small WikiText-2 written in its released on-disk layouts, for tests (no downloads here).

The real files are lines of space-separated tokens with a leading and a trailing space: ` = Title = `
headings, ` = = Section = = ` subheadings, paragraphs, and blank lines (a lone space) between them.
The tokenized release (wiki.*.tokens, wikitext-2-v1) replaces rare words by `<unk>`; the raw release
(wiki.*.raw, wikitext-2-raw-v1) keeps them. The Hugging Face parquet files hold one row per line
(column `text`): blank lines are empty strings and the others keep their trailing newline.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

COMMON = (
    "the", ",", ".", "of", "and", "in", "to", "a", "was", "@-@", "is", "for", "on", "as", "with", "by", "he",
    "at", "from", "his", "that", "it", "an", "were", "which", "'s", "game", "battle", "season", "album", "song",
    "first", "two", "after", "also", "its", "@,@", "1", "000", "2", "5", "(", ")", '"', ";", ":", "team", "war",
    "ship", "Valkyria", "Chronicles", "Japanese", "série", "café", "戦場", "new", "York",
)
RARE = ("Senjō", "Gallian", "Imperiali", "Nameless", "Calamity", "Raven")  # `<unk>` in the tokenized release
EVAL_ONLY = ("zyzzyva", "quokka")  # valid/test words the training split never has
SPLIT_LINES = {"train": 300, "valid": 60, "test": 60}
Lines = dict[str, list[str]]


def wikitext_lines(seed: int = 0) -> dict[str, Lines]:
    """{"tokens": split -> lines, "raw": split -> lines} (lines without their newline)."""
    rng = np.random.default_rng(seed)
    tokens: Lines = {}
    raw: Lines = {}
    for split, count in SPLIT_LINES.items():
        vocab = list(COMMON) + (list(EVAL_ONLY) if split != "train" else [])
        tok_lines, raw_lines = [" "], [" "]
        while len(tok_lines) < count:
            kind = rng.random()
            if kind < 0.15:  # a heading: = Title = or = = Section = =
                marks = ["="] * int(rng.integers(1, 3))
                words = marks + [str(w) for w in rng.choice(COMMON[26:], int(rng.integers(1, 4)))] + marks
                pair = (words, words)
            else:
                raw_words = [str(rng.choice(vocab)) if rng.random() > 0.05 else str(rng.choice(RARE))
                             for _ in range(int(rng.integers(3, 40)))]
                pair = ([("<unk>" if w in RARE else w) for w in raw_words], raw_words)
            for target, words in zip((tok_lines, raw_lines), pair):
                target.extend([" " + " ".join(words) + " ", " "])
        tokens[split], raw[split] = tok_lines[:count], raw_lines[:count]
    return {"tokens": tokens, "raw": raw}


def _write_text(folder: Path, suffix: str, lines: Lines) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for split, split_lines in lines.items():
        (folder / f"wiki.{split}.{suffix}").write_text("".join(line + "\n" for line in split_lines), encoding="utf-8")


def _write_parquet(folder: Path, lines: Lines) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for split, hf_split in (("train", "train"), ("valid", "validation"), ("test", "test")):
        rows = ["" if not line.strip() else line + "\n" for line in lines[split]]
        pq.write_table(pa.table({"text": rows}), folder / f"{hf_split}-00000-of-00001.parquet")


def make_wikitext2(root: Path, layout: str = "tokens", seed: int = 0) -> Lines:
    """Write one layout under `root` and return its split -> lines:

    tokens: wiki.{train,valid,test}.tokens       raw: wiki.{train,valid,test}.raw
    tokens_folder: wikitext-2/wiki.*.tokens      raw_folder: wikitext-2-raw/wiki.*.raw
    parquet: wikitext-2-v1/*.parquet             raw_parquet: wikitext-2-raw-v1/*.parquet
    parquet_root: {train,validation,test}-00000-of-00001.parquet (raw) directly in root
    """
    lines = wikitext_lines(seed)
    root = Path(root)
    writers = {
        "tokens": lambda: _write_text(root, "tokens", lines["tokens"]),
        "tokens_folder": lambda: _write_text(root / "wikitext-2", "tokens", lines["tokens"]),
        "raw": lambda: _write_text(root, "raw", lines["raw"]),
        "raw_folder": lambda: _write_text(root / "wikitext-2-raw", "raw", lines["raw"]),
        "parquet": lambda: _write_parquet(root / "wikitext-2-v1", lines["tokens"]),
        "raw_parquet": lambda: _write_parquet(root / "wikitext-2-raw-v1", lines["raw"]),
        "parquet_root": lambda: _write_parquet(root, lines["raw"]),
    }
    writers[layout]()
    return lines["raw" if "raw" in layout or layout == "parquet_root" else "tokens"]
