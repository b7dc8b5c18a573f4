"""The pretraining corpus encoded: plain arrays every worker needs (cheap to ship through Ray)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.corpus import read_corpus
from model.data import MASK, SPECIAL_TOKENS, Vocab
from model.errors import DataError
from model.pretrain.config import PretrainConfig


@dataclass(frozen=True)
class PretrainData:
    """The encoded corpus: what every worker needs (plain arrays, cheap to ship through Ray)."""

    ids: np.ndarray  # (N, max_seq_len) int32, [CLS] tokens [SEP] then [PAD]
    lengths: np.ndarray  # (N,) int32
    vocab: Vocab
    files: list[dict]

    def __len__(self) -> int:
        return len(self.lengths)

    @functools.cached_property
    def mask_id(self) -> int:
        return self.vocab.tokens.index(MASK)

    @functools.cached_property
    def special_ids(self) -> tuple[int, ...]:
        return tuple(self.vocab.tokens.index(t) for t in SPECIAL_TOKENS)


def prepare_corpus(paths: Sequence[str | Path], cfg: PretrainConfig) -> PretrainData:
    corpus = read_corpus(paths)
    vocab = Vocab.build(corpus.texts, min_count=cfg.min_count)
    if len(vocab) <= len(SPECIAL_TOKENS):
        raise DataError(f"no token occurs --min-count {cfg.min_count} times in the corpus; lower --min-count")
    ids, lengths = vocab.encode(corpus.texts, max_seq_len=cfg.max_seq_len)
    return PretrainData(ids=ids, lengths=lengths, vocab=vocab, files=corpus.files)
