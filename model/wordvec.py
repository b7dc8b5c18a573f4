"""Corpus word vectors: word2vec or fastText (gensim) trained on the task's own text.

The cheap winners of the competition were static word vectors trained on the desensitized corpus
itself (no public vectors can know its integer tokens), feeding a TextCNN, DPCNN or BiGRU
(model/wordvec_encoders.py). `train_vectors(cfg, corpus, out)` reads the corpus
(`model.corpus.read_corpus`: CSV files with a `text` column, text files with one document per
line), trains with gensim and writes a checkpoint directory:

    vectors.npy    (V, dim) float32; row i is the vector of line i of vocab.txt
                   (`np.load(..., allow_pickle=False)` reads it: a data format, no code)
    vocab.txt      one token per line, in gensim's order (descending corpus frequency); with
                   view "bigrams", one token pair per line, "a b" (`token_pairs`)
    wordvec.json   the settings, the corpus files (path, sha256, rows), library versions,
                   per-epoch log, wall time, creation time and the command line

Deterministic for a seed with one worker thread (`threads=1`, the default): the same corpus and
settings give the same vectors.npy bytes in any process. gensim's own seeding is numpy's (its
`seed`); its `hashfxn` (Python's salted `hash` by default, so it would depend on PYTHONHASHSEED)
is replaced by a stable hash, so no code path of gensim can make the vectors depend on the
interpreter's hash salt. More threads train faster but in an order the OS decides, so not
reproducibly.

gensim is imported only while training: trials read checkpoints without it.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from model.corpus import Corpus, read_corpus
from model.errors import ConfigError, DataError
from model.filemode import as_if_opened
from model.provenance import git_revision, versions

VECTORS_FILE, VOCAB_FILE, RECORD_FILE = "vectors.npy", "vocab.txt", "wordvec.json"
CHECKPOINT_FILES = (VECTORS_FILE, VOCAB_FILE, RECORD_FILE)
FORMAT = "wordvec"  # wordvec.json's "format": what tells this kind of checkpoint from others
METHODS = ("word2vec", "fasttext")
# What a checkpoint's tokens are: the corpus tokens, or each token joined to the next by a space
# (a corpus token never holds whitespace, so "a b" is exactly the pair (a, b)).
VIEWS = ("tokens", "bigrams")
PAIR_SEPARATOR = " "


# ----------------------------------------------------------------------------- settings


@dataclass(frozen=True, kw_only=True)
class WordVecConfig:
    """What decides the vectors (the `embed` flags, one to one). gensim's names in brackets."""

    method: str = "word2vec"  # word2vec, or fasttext (also learns character n-grams of each token)
    dim: int = 128  # [vector_size]
    window: int = 5  # context tokens on each side
    min_count: int = 1  # rarer tokens get no vector (the encoders initialise them at random)
    epochs: int = 10
    # Skip-gram (sg 1) rather than CBOW: better vectors for rare tokens on a small corpus (Mikolov
    # et al. 2013), and the corpus here is ~17k short documents, so its extra cost is seconds.
    sg: int = 1
    negative: int = 5  # negative samples per positive pair
    seed: int = 0
    view: str = "tokens"  # tokens, or bigrams: vectors of each token paired with the next (`token_pairs`)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"--method is {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.view not in VIEWS:
            raise ConfigError(f"--view is {self.view!r}; choose one of {', '.join(VIEWS)}")
        for name in ("dim", "window", "min_count", "epochs", "negative"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} is {getattr(self, name)}, but must be >= 1")
        if self.dim > 4096:
            raise ConfigError(f"--dim is {self.dim}, above 4096 (word vectors have 100-300 dimensions); lower it")
        if self.sg not in (0, 1):
            raise ConfigError(f"sg is {self.sg!r}, but must be 1 (skip-gram, --sg) or 0 (CBOW, --cbow)")
        if not 0 <= self.seed < 2**32:
            raise ConfigError(f"--seed is {self.seed}, but must be in 0..2**32-1")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> WordVecConfig:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ConfigError(f"unknown word-vector setting(s) {unknown}; valid: {sorted(names)}")
        return cls(**values)


# ----------------------------------------------------------------------------- reading a checkpoint


@dataclass(frozen=True)
class WordVectors:
    """A checkpoint's contents: `vectors[i]` is the vector of `tokens[i]`."""

    tokens: tuple[str, ...]
    vectors: np.ndarray  # (V, dim) float32
    record: dict[str, Any]

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])


def read_tokens(path: Path) -> list[str]:
    """vocab.txt: one token per line (split on "\\n" only: a token is any run of non-whitespace)."""
    text = path.read_text(encoding="utf-8")
    return text[:-1].split("\n") if text.endswith("\n") else text.split("\n") if text else []


def check_vectors_dir(directory: str | Path) -> tuple[int, int]:
    """(tokens, dim) of the checkpoint in `directory`, or a `ConfigError` saying what is wrong and the fix.

    Cheap whatever the size: the vectors are memory-mapped, only their header is read. Preflight
    runs it before Ray starts; the encoders again when they load the vectors."""
    directory = Path(directory)
    fix = "write one with `python -m search embed --corpus FILE... --out DIR`"
    if not directory.is_dir():
        raise ConfigError(f"{directory} does not exist or is not a directory (on a cluster, every node must see it); "
                          f"{fix}")
    missing = [name for name in CHECKPOINT_FILES if not (directory / name).is_file()]
    if missing:
        raise ConfigError(f"{directory} is not a word-vector checkpoint: it has no {', '.join(missing)}; {fix}")
    try:
        vectors = np.load(directory / VECTORS_FILE, mmap_mode="r", allow_pickle=False)
        record = json.loads((directory / RECORD_FILE).read_text(encoding="utf-8"))
        tokens = read_tokens(directory / VOCAB_FILE)
    except (ValueError, OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{directory} holds a damaged word-vector checkpoint ({err}); {fix}") from None
    problem = _shape_problem(vectors, record, tokens)
    if problem:
        raise ConfigError(f"{directory} holds a damaged word-vector checkpoint: {problem}; {fix}")
    return vectors.shape[0], vectors.shape[1]


def _shape_problem(vectors: np.ndarray, record: Any, tokens: list[str]) -> str | None:
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        return f"{RECORD_FILE} does not say format {FORMAT!r}"
    if vectors.ndim != 2 or vectors.dtype != np.float32:
        return f"{VECTORS_FILE} is a {vectors.ndim}-d {vectors.dtype} array, not (tokens, dim) float32"
    if vectors.shape[0] != len(tokens):
        return f"{VECTORS_FILE} has {vectors.shape[0]} rows but {VOCAB_FILE} {len(tokens)} tokens"
    if record.get("dim") != vectors.shape[1]:
        return f"{RECORD_FILE} says dim {record.get('dim')} but the vectors have {vectors.shape[1]}"
    if len(set(tokens)) != len(tokens) or "" in tokens:
        return f"{VOCAB_FILE} has duplicate or empty tokens"
    return None


def token_pairs(tokens: Sequence[str]) -> list[str]:
    """The bigram view of a text: each token joined to the next, ["a", "b", "c"] -> ["a b", "b c"]."""
    return [f"{a}{PAIR_SEPARATOR}{b}" for a, b in zip(tokens[:-1], tokens[1:], strict=True)]


def split_pair(pair: str) -> tuple[str, str]:
    first, _, second = pair.partition(PAIR_SEPARATOR)
    return first, second


def vectors_view(directory: str | Path) -> str:
    """The view of the checkpoint in `directory` (checked by `check_vectors_dir` first): a checkpoint
    written before views existed holds token vectors."""
    record = json.loads((Path(directory) / RECORD_FILE).read_text(encoding="utf-8"))
    return record.get("view", "tokens")


def load_vectors(directory: str | Path) -> WordVectors:
    """The checkpoint in `directory` (checked by `check_vectors_dir`), vectors in memory."""
    check_vectors_dir(directory)
    directory = Path(directory)
    vectors = np.load(directory / VECTORS_FILE, allow_pickle=False)
    if not np.isfinite(vectors).all():
        raise ConfigError(f"{directory} holds a damaged word-vector checkpoint: {VECTORS_FILE} has non-finite "
                          "values; write it again with `python -m search embed`")
    return WordVectors(tokens=tuple(read_tokens(directory / VOCAB_FILE)), vectors=vectors,
                       record=json.loads((directory / RECORD_FILE).read_text(encoding="utf-8")))


# ----------------------------------------------------------------------------- training


def stable_hash(text: str) -> int:
    """gensim's `hashfxn`: CRC-32 of the UTF-8 bytes, the same in every process (Python's `hash`
    of a str is salted per process unless PYTHONHASHSEED is set)."""
    return zlib.crc32(text.encode("utf-8"))


class EpochLog:
    """Prints one line per epoch while gensim trains. gensim's callback protocol (the four methods
    of `gensim.models.callbacks.CallbackAny2Vec`), duck-typed so this module imports gensim only to
    train. word2vec reports its loss (gensim sums it over the run, so each line shows the epoch's
    share); gensim's fastText computes none."""

    def __init__(self, *, epochs: int, out: Callable[[str], None] | None):
        self.epochs, self.out = epochs, out
        self.log: list[dict[str, float]] = []
        self._loss_before, self._started = 0.0, time.perf_counter()

    def on_train_begin(self, model: Any) -> None:
        self._started = time.perf_counter()

    def on_epoch_begin(self, model: Any) -> None:
        pass

    def on_epoch_end(self, model: Any) -> None:
        entry = {"epoch": len(self.log) + 1, "seconds": round(time.perf_counter() - self._started, 3)}
        if getattr(model, "compute_loss", False):
            total = float(model.get_latest_training_loss())
            entry["loss"], self._loss_before = total - self._loss_before, total
        self.log.append(entry)
        if self.out is not None:
            loss = f", loss {entry['loss']:.4g}" if "loss" in entry else ""
            self.out(f"epoch {entry['epoch']}/{self.epochs}{loss} ({entry['seconds']:.1f} s)")

    def on_train_end(self, model: Any) -> None:
        pass


def _gensim_model(cfg: WordVecConfig, *, threads: int) -> Any:
    """An untrained gensim model of `cfg` (nothing is read or trained yet)."""
    from gensim.models import FastText, Word2Vec

    common = dict(vector_size=cfg.dim, window=cfg.window, min_count=cfg.min_count, sg=cfg.sg, negative=cfg.negative,
                  seed=cfg.seed, workers=threads, hashfxn=stable_hash, epochs=cfg.epochs)
    if cfg.method == "fasttext":
        return FastText(**common)
    return Word2Vec(**common, compute_loss=True)


def fit_vectors(cfg: WordVecConfig, corpus: Corpus, *, threads: int = 1,
                out: Callable[[str], None] | None = print) -> tuple[list[str], np.ndarray, list[dict]]:
    """Train on `corpus`: (tokens, (V, dim) float32 vectors, per-epoch log). `out` gets one line per
    epoch (None: silent)."""
    documents = [text.split() for text in corpus.texts]
    if cfg.view == "bigrams":
        documents = [token_pairs(tokens) for tokens in documents]
    model = _gensim_model(cfg, threads=threads)
    model.build_vocab(documents)
    if len(model.wv) == 0:
        raise DataError(f"no {'token pair' if cfg.view == 'bigrams' else 'token'} occurs --min-count {cfg.min_count} "
                        f"times in the corpus "
                        f"({', '.join(f['path'] for f in corpus.files)}); lower --min-count")
    log = EpochLog(epochs=cfg.epochs, out=out)
    model.train(documents, total_examples=model.corpus_count, epochs=cfg.epochs, callbacks=[log],
                compute_loss=cfg.method == "word2vec")
    # For fastText, wv.vectors are the full vectors of the corpus tokens (their own vector plus
    # their n-grams'), what a lookup of the token returns.
    vectors = np.ascontiguousarray(model.wv.vectors, dtype=np.float32)  # (V, dim)
    return list(model.wv.index_to_key), vectors, log.log


def check_output(out: Path) -> None:
    """Refuse an `--out` that is a file, or a non-empty directory other than a word-vector
    checkpoint (which is replaced): nothing a user keeps there is ever deleted."""
    if not out.exists():
        return
    if not out.is_dir():
        raise ConfigError(f"--out {out} is a file; pass a directory (a missing one is created)")
    present = sorted(p.name for p in out.iterdir())
    foreign = [name for name in present if name not in CHECKPOINT_FILES]
    if foreign or (present and RECORD_FILE not in present):
        shown = ", ".join((foreign or present)[:5])
        raise ConfigError(f"--out {out} holds {shown}, which is not a word-vector checkpoint (it would be "
                          "replaced); pass a new or empty directory, or an earlier `embed` output to overwrite")


def write_checkpoint(out: Path, *, tokens: Sequence[str], vectors: np.ndarray, record: dict) -> None:
    """Write the checkpoint directory: built in a temporary sibling and renamed into place, so a
    reader or a crash sees the old checkpoint or the new one, never a mix."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    old = out.parent / f"{tmp.name}.old"
    try:
        np.save(tmp / VECTORS_FILE, vectors, allow_pickle=False)
        (tmp / VOCAB_FILE).write_text("".join(f"{t}\n" for t in tokens), encoding="utf-8")
        (tmp / RECORD_FILE).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
        for path in (tmp, *tmp.iterdir()):
            as_if_opened(path)  # mkdtemp makes the directory 0700
        if out.exists():
            out.rename(old)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)


def train_vectors(cfg: WordVecConfig, corpus: Sequence[str | Path], out: str | Path, *, threads: int = 1,
                  progress: Callable[[str], None] | None = print, command: Sequence[str] | None = None) -> dict:
    """Train word vectors on the `corpus` files and write the checkpoint directory `out`; returns
    its wordvec.json record. `out` is checked before the corpus is read or anything trains."""
    out = Path(out)
    if threads < 1:
        raise ConfigError(f"--threads is {threads}, but must be >= 1")
    check_output(out)
    started = time.perf_counter()
    documents = read_corpus(corpus)
    tokens, vectors, log = fit_vectors(cfg, documents, threads=threads, out=progress)
    record = {
        "format": FORMAT, **cfg.to_dict(), "architecture": "skip-gram" if cfg.sg else "cbow",
        "vocab_size": len(tokens), "documents": len(documents.texts),
        "tokens": sum(len(text.split()) for text in documents.texts), "corpus": documents.files,
        "threads": threads, "deterministic": threads == 1, "epoch_log": log,
        "versions": versions(("gensim", "numpy")), "git_revision": git_revision(),
        "seconds": round(time.perf_counter() - started, 3),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": list(command) if command is not None else None,
    }
    write_checkpoint(out, tokens=tokens, vectors=vectors, record=record)
    return record
