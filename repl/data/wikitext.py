"""WikiText-2 read through Hugging Face `datasets`, tokenized word-level or with a byte-level BPE.

Files under dataset.root, in any of the released layouts (the first complete one wins; `word` prefers
the tokenized release, which has `<unk>` and the standard 33,278-word vocabulary, `bpe` the raw one):

    wiki.{train,valid,test}.tokens            (wikitext-2-v1.zip; also inside wikitext-2/)
    wiki.{train,valid,test}.raw               (wikitext-2-raw-v1.zip; also inside wikitext-2-raw/)
    wikitext-2-v1/{train,validation,test}-00000-of-00001.parquet       (the Hugging Face hub layout)
    wikitext-2-raw-v1/{train,validation,test}-00000-of-00001.parquet   (also accepted directly in root)

Local files are read with the packaged `text` / `parquet` builders, which never contact the hub.
Only with dataset.download=true and no files, `Salesforce/wikitext` is fetched from the hub (config
wikitext-2-v1 for `word`, wikitext-2-raw-v1 for `bpe`; the HF_DATASETS_OFFLINE / HF_HUB_OFFLINE
variables are honoured by `datasets`) and saved under root in the parquet layout.

Every line (a text row) becomes its tokens followed by `<eos>`, blank lines a lone `<eos>`, as in the
PyTorch word_language_model example. `word`: whitespace-split words, the vocabulary is the training
split's words in order of first appearance (`<eos>` first, `<unk>` added if train lacks it); valid
and test words not in it become `<unk>`. `bpe`: a byte-level BPE (`tokenizers`) trained on the
stripped training lines to dataset.vocab_size, with `<eos>` and `<unk>` as its special ids 0 and 1.
`hf`: a Hugging Face tokenizer (`AutoTokenizer`, e.g. the model's own: GPT-2's) read from the local
cache or a local directory, never the hub, on the raw release, its eos token after each stripped
line; when none is cached, the project's `bpe` tokenizer is used instead, with one printed notice.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType

import torch

from repl.engine.console import echo
from repl.errors import ConfigError, DataError, install_hint

SPLITS = ("train", "valid", "test")
HF_SPLITS = {"train": "train", "valid": "validation", "test": "test"}
HUB_REPO = "Salesforce/wikitext"
HUB_CONFIG = {"word": "wikitext-2-v1", "bpe": "wikitext-2-raw-v1", "hf": "wikitext-2-raw-v1"}
RAW_TOKENIZERS = ("bpe", "hf")  # tokenizers that read the raw release (subwords of the original text)
FALLBACK = "bpe"  # what tokenizer=hf uses when no Hugging Face tokenizer is cached
EOS, UNK = "<eos>", "<unk>"
BPE_MIN_VOCAB = 256 + 2  # the byte alphabet and the two special tokens
PARQUET_NAME = "{split}-00000-of-00001.parquet"


@dataclass(frozen=True)
class Layout:
    """One way the three split files can lie under the root."""

    folder: str  # relative to root ("" = root itself)
    pattern: str  # file name with {split}
    builder: str  # the `datasets` packaged builder: text | parquet
    raw: bool | None  # raw release (no <unk>), tokenized, or unknown

    def paths(self, root: str) -> dict[str, str]:
        """split -> file path under `root`."""
        names = HF_SPLITS if self.builder == "parquet" else {s: s for s in SPLITS}
        return {s: os.path.join(root, self.folder, self.pattern.format(split=names[s])) for s in SPLITS}

    def describe(self) -> str:
        """The layout's files under the root, with the split as a brace list (for error messages)."""
        splits = "{train,validation,test}" if self.builder == "parquet" else "{train,valid,test}"
        return os.path.join(self.folder, self.pattern.format(split=splits))


LAYOUTS = (
    Layout("", "wiki.{split}.tokens", "text", False),
    Layout("wikitext-2", "wiki.{split}.tokens", "text", False),
    Layout("wikitext-2-v1", PARQUET_NAME, "parquet", False),
    Layout("", "wiki.{split}.raw", "text", True),
    Layout("wikitext-2-raw", "wiki.{split}.raw", "text", True),
    Layout("wikitext-2-raw-v1", PARQUET_NAME, "parquet", True),
    Layout("", PARQUET_NAME, "parquet", None),
)


def _hf() -> ModuleType:
    """The `datasets` package, or a one-line error saying how to install it."""
    try:
        import datasets
    except ImportError:
        raise ConfigError(f"dataset=wikitext2 needs Hugging Face datasets: {install_hint('text')}") from None
    return datasets


def _failures(datasets: ModuleType) -> tuple[type[Exception], ...]:
    """What `datasets` raises for unreachable hubs, offline mode and malformed files."""
    return (datasets.exceptions.DatasetsError, OSError, ValueError, KeyError, RuntimeError)


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def find_layout(root: str, tokenizer: str) -> Layout | None:
    """The first complete layout under `root`, the preferred release (raw for bpe and hf) first."""
    want_raw = tokenizer in RAW_TOKENIZERS
    ranked = sorted(LAYOUTS, key=lambda layout: layout.raw is None or layout.raw != want_raw)
    for layout in ranked:
        if all(os.path.isfile(p) for p in layout.paths(root).values()):
            return layout
    return None


def missing_message(root: str) -> str:
    """One line: what was looked for under `root`, what is missing, and how to get it."""
    partial = [layout for layout in LAYOUTS if any(os.path.isfile(p) for p in layout.paths(root).values())]
    if partial:
        absent = next(p for p in partial[0].paths(root).values() if not os.path.isfile(p))
        found = f"{absent} does not exist"
    else:
        found = f"no WikiText-2 files in {root}"
    accepted = ", ".join(layout.describe() for layout in LAYOUTS)
    return (
        f"WikiText-2 not found: {found}; place one of {accepted} in {root}, "
        f"or set dataset.download=true to fetch {HUB_REPO} from the Hugging Face hub"
    )


def download(root: str, tokenizer: str) -> None:
    """Fetch WikiText-2 from the hub and save its splits under root in the parquet layout."""
    config = HUB_CONFIG[tokenizer]
    datasets = _hf()
    try:
        parts = datasets.load_dataset(HUB_REPO, config)
        folder = os.path.join(root, config)
        os.makedirs(folder, exist_ok=True)
        for split in HF_SPLITS.values():
            path = os.path.join(folder, PARQUET_NAME.format(split=split))
            parts[split].to_parquet(path + ".part")
            os.replace(path + ".part", path)
    except _failures(datasets) as err:
        raise DataError(
            f"downloading WikiText-2 ({HUB_REPO}, {config}) to {root} failed ({_first_line(err)}); "
            f"place the files in {root} (see docs/text_data.md)"
        ) from None


def _malformed(datasets: ModuleType, layout: Layout, files: dict[str, str], cache: str) -> str:
    """The first of `files` its builder cannot read alone (all of them, braced, if each reads)."""
    for split, path in files.items():
        try:
            datasets.load_dataset(layout.builder, data_files={split: path}, cache_dir=cache, keep_in_memory=True)
        except _failures(datasets):
            return path
    return ", ".join(files.values())


def read_lines(root: str, layout: Layout) -> dict[str, list[str]]:
    """split -> its lines, read with the packaged `datasets` builder (local files only)."""
    datasets = _hf()
    files = layout.paths(root)
    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # local files of a few MB: "Generating split" bars would only bury errors
    try:
        with tempfile.TemporaryDirectory(prefix="repl-wikitext-") as cache:  # no arrow files left behind
            try:
                parts = datasets.load_dataset(layout.builder, data_files=files, cache_dir=cache, keep_in_memory=True)
                lines = {split: list(parts[split]["text"]) for split in SPLITS}
            except _failures(datasets) as err:
                raise DataError(f"WikiText-2 file {_malformed(datasets, layout, files, cache)} is malformed: "
                                f"{_first_line(err)}") from None
    finally:
        if bars:
            datasets.enable_progress_bars()
    if not any(line.strip() for line in lines["train"]):
        raise DataError(f"WikiText-2 training split {files['train']} has no text")
    return lines


class WordVocab:
    """The standard word-level vocabulary: training words in order of first appearance."""

    def __init__(self, train_lines: Sequence[str]) -> None:
        index: dict[str, int] = {}
        for line in train_lines:
            for word in line.split() + [EOS]:
                index.setdefault(word, len(index))
        index.setdefault(UNK, len(index))
        self.index = index

    def __len__(self) -> int:
        return len(self.index)

    def encode(self, lines: Sequence[str]) -> torch.Tensor:
        """The ids of all lines, `<eos>` after each; unknown words become `<unk>`."""
        index, unk = self.index, self.index[UNK]
        ids = [index.get(word, unk) for line in lines for word in line.split() + [EOS]]
        return torch.tensor(ids, dtype=torch.int64)


class BPEVocab:
    """A byte-level BPE trained on the training lines (deterministic for given lines and size)."""

    def __init__(self, train_lines: Sequence[str], vocab_size: int) -> None:
        try:
            from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
        except ImportError:
            raise ConfigError(f"dataset.tokenizer=bpe needs tokenizers: {install_hint('text')}") from None
        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=[EOS, UNK],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tokenizer.train_from_iterator(_stripped(train_lines), trainer=trainer)
        self.tokenizer = tokenizer
        self.eos = tokenizer.token_to_id(EOS)

    def __len__(self) -> int:
        return self.tokenizer.get_vocab_size()

    def encode(self, lines: Sequence[str]) -> torch.Tensor:
        """The ids of all stripped lines, `<eos>` after each."""
        ids: list[int] = []
        for encoding in self.tokenizer.encode_batch(_stripped(lines)):
            ids.extend(encoding.ids)
            ids.append(self.eos)
        return torch.tensor(ids, dtype=torch.int64)


class HFVocab:
    """A Hugging Face tokenizer: its ids of each stripped line, its eos token (if it has one) after each."""

    def __init__(self, tokenizer: object) -> None:
        self.tokenizer = tokenizer
        self.eos = getattr(tokenizer, "eos_token_id", None)

    def __len__(self) -> int:
        return len(self.tokenizer)  # type: ignore[arg-type]

    def encode(self, lines: Sequence[str]) -> torch.Tensor:
        """The ids of all stripped lines, eos after each."""
        eos = [] if self.eos is None else [self.eos]
        ids: list[int] = []
        for line_ids in self.tokenizer(_stripped(lines), add_special_tokens=False)["input_ids"]:  # type: ignore[operator]
            ids.extend(line_ids)
            ids.extend(eos)
        return torch.tensor(ids, dtype=torch.int64)


def cached_tokenizer(name: str | None) -> object | None:
    """`AutoTokenizer.from_pretrained(name, local_files_only=True)` (a hub id in the local cache, or a local
    directory), or None when transformers is missing, `name` is unset, or no such tokenizer is stored."""
    if not name:
        return None
    try:
        from transformers import AutoTokenizer
    except ImportError:
        return None
    try:
        return AutoTokenizer.from_pretrained(name, local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _stripped(lines: Sequence[str]) -> list[str]:
    """Lines without surrounding whitespace: the .tokens files and the parquet rows then agree."""
    return [line.strip() for line in lines]


def load_wikitext(root: str, tokenizer: str, vocab_size: int, allow_download: bool,
                  hf_tokenizer: str | None = None) -> tuple[int, dict[str, torch.Tensor]]:
    """(vocabulary size, split -> 1-D int64 ids) of WikiText-2 under `root`; `hf_tokenizer` names the
    Hugging Face tokenizer of tokenizer=hf (a notice and the project's bpe when it is not cached)."""
    root = os.path.abspath(os.path.expanduser(root))
    hf = cached_tokenizer(hf_tokenizer) if tokenizer == "hf" else None
    if tokenizer == "hf" and hf is None:
        echo(f"dataset.tokenizer=hf: no Hugging Face tokenizer {hf_tokenizer!r} in the local cache; "
             f"using the project's {FALLBACK} tokenizer (dataset.vocab_size={vocab_size}) instead", warning=True)
    layout = find_layout(root, tokenizer)
    if layout is None and allow_download:
        download(root, tokenizer)
        layout = find_layout(root, tokenizer)
    if layout is None:
        raise DataError(missing_message(root))
    lines = read_lines(root, layout)
    if hf is not None:
        vocab: WordVocab | BPEVocab | HFVocab = HFVocab(hf)
    elif tokenizer == "word":
        vocab = WordVocab(lines["train"])
    else:
        vocab = BPEVocab(lines["train"], vocab_size)
    return len(vocab), {split: vocab.encode(lines[split]) for split in SPLITS}
