"""Masking for masked-language-model pretraining: n-gram (whole-span) masking of token id arrays.

As the DataGrand 2021 solutions pretrained (after ERNIE / SpanBERT-style n-gram masking): the
masked positions come in contiguous spans of 1 .. `ngram_max` tokens, a span of n tokens drawn with
probability proportional to 1/n (for `ngram_max` 3: 0.545, 0.273, 0.182), until `mask_prob` of a
row's maskable tokens are covered. Each span is then, as a whole, replaced by [MASK] (80%), by
random tokens (10%) or kept (10%); the model predicts the original tokens of every span.

Never masked: special tokens ([PAD], [UNK], [CLS], [SEP], [MASK]); padding is a special token.
Spans never touch (a gap of at least one unmasked token separates them), so every run of masked
positions is exactly one span and at most `ngram_max` long.

Pure: the only randomness is the numpy Generator passed in, so a batch's masks are a function of
the seed that Generator was made from (model/pretrain/loop.py seeds it with (seed, epoch, batch)).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

IGNORE_INDEX = -100  # label of a position the loss skips (torch's cross_entropy ignore_index)

MASK, RANDOM, KEEP = 0, 1, 2  # what a span's tokens became


def span_length_probs(ngram_max: int) -> np.ndarray:
    """(ngram_max,) probability of a span of n = 1 .. ngram_max tokens: proportional to 1/n."""
    if ngram_max < 1:
        raise ValueError(f"ngram_max is {ngram_max}, but must be >= 1 (1 = single-token masking)")
    weights = 1.0 / np.arange(1, ngram_max + 1)
    return weights / weights.sum()


@dataclass(frozen=True)
class Masked:
    inputs: np.ndarray  # (B, T) int64 ids to feed the model: spans replaced by [MASK], random ids or kept
    labels: np.ndarray  # (B, T) int64 original id at masked positions, IGNORE_INDEX elsewhere
    spans: np.ndarray  # (S, 4) int64 rows of (row, start, length, MASK|RANDOM|KEEP), one per span


def mask_spans(
    ids: np.ndarray,
    *,
    rng: np.random.Generator,
    mask_id: int,
    vocab_size: int,
    special_ids: Sequence[int],
    mask_prob: float = 0.15,
    ngram_max: int = 3,
    mask_ratio: float = 0.8,
    random_ratio: float = 0.1,
) -> Masked:
    """Mask `ids` (B, T) (padded with a special id) for MLM.

    Per row, round(mask_prob x maskable tokens) positions are masked (at least one when the row has
    a maskable token), in spans placed at random starts; a span is cut short where it would cover a
    special token, touch another span or exceed the row's budget. Random replacements are drawn
    uniformly from the non-special ids below `vocab_size`.
    """
    if not 0 < mask_prob < 1:
        raise ValueError(f"mask_prob is {mask_prob}, but must be in (0, 1)")
    if mask_ratio < 0 or random_ratio < 0 or mask_ratio + random_ratio > 1:
        raise ValueError(f"mask_ratio {mask_ratio} and random_ratio {random_ratio} must be >= 0 with a sum <= 1")
    probs = span_length_probs(ngram_max)
    ids = np.asarray(ids, dtype=np.int64)
    maskable = ~np.isin(ids, np.asarray(special_ids, dtype=np.int64))  # (B, T)
    regular = np.setdiff1d(np.arange(vocab_size), np.asarray(special_ids, dtype=np.int64))
    spans = [(r, start, n, -1) for r in range(ids.shape[0])
             for start, n in _row_spans(maskable[r], rng=rng, probs=probs, mask_prob=mask_prob)]
    # One draw per span for its fate, then the random replacement ids, in span order (reproducible).
    fates = rng.random(len(spans))
    inputs, labels = ids.copy(), np.full_like(ids, IGNORE_INDEX)
    table = np.array(spans, dtype=np.int64).reshape(-1, 4)
    for k, (r, start, n, _) in enumerate(spans):
        stop = start + n
        labels[r, start:stop] = ids[r, start:stop]
        if fates[k] < mask_ratio:
            inputs[r, start:stop], table[k, 3] = mask_id, MASK
        elif fates[k] < mask_ratio + random_ratio:
            inputs[r, start:stop], table[k, 3] = rng.choice(regular, size=n), RANDOM
        else:
            table[k, 3] = KEEP
    return Masked(inputs=inputs, labels=labels, spans=table)


def _row_spans(maskable: np.ndarray, *, rng: np.random.Generator, probs: np.ndarray,
               mask_prob: float) -> list[tuple[int, int]]:
    """(start, length) of the spans masked in one row, `maskable` (T,) its maskable positions."""
    candidates = np.flatnonzero(maskable)
    if candidates.size == 0:
        return []
    width = maskable.shape[0]
    budget = max(1, int(round(candidates.size * mask_prob)))
    taken = np.zeros(width + 1, dtype=bool)  # one spare slot: taken[width] is never set
    starts = rng.permutation(candidates)
    lengths = rng.choice(len(probs), size=candidates.size, p=probs) + 1
    covered = 0
    spans: list[tuple[int, int]] = []
    for start, n in zip(starts.tolist(), lengths.tolist(), strict=True):
        if covered >= budget:
            break
        if taken[start] or (start > 0 and taken[start - 1]):
            continue
        n = min(n, budget - covered)
        end = start  # grow [start, end) while the next position is free and keeps a gap after it
        while end < start + n and end < width and maskable[end] and not taken[end + 1]:
            end += 1
        if end == start:
            continue
        taken[start:end] = True
        covered += end - start
        spans.append((start, end - start))
    return spans
