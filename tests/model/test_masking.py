"""N-gram masking: the rate, the spans, the 80/10/10 split, and what is never masked."""

import numpy as np
import pytest

from model.data import SPECIAL_TOKENS, Vocab
from model.masking import IGNORE_INDEX, KEEP, MASK, RANDOM, mask_spans, span_length_probs
from model.synthetic import synthesize

SPECIAL_IDS = tuple(range(len(SPECIAL_TOKENS)))  # Vocab puts them first
MASK_ID = SPECIAL_TOKENS.index("[MASK]")


@pytest.fixture(scope="module")
def encoded():
    """(ids (N, 96), vocab size) of 600 synthetic documents: [CLS] tokens [SEP] [PAD]..., a few [UNK]."""
    texts = synthesize(600, seed=3)[0]["text"].tolist()
    vocab = Vocab.build(texts, min_count=2)  # singletons become [UNK]: special tokens inside the text
    ids, _ = vocab.encode(texts, max_seq_len=96)
    return ids.astype(np.int64), len(vocab)


def mask(ids, vocab_size, seed=0, **kwargs):
    return mask_spans(ids, rng=np.random.default_rng(seed), mask_id=MASK_ID, vocab_size=vocab_size,
                      special_ids=SPECIAL_IDS, **kwargs)


def runs(row: np.ndarray) -> list[tuple[int, int]]:
    """(start, length) of every run of True in a boolean row."""
    edges = np.diff(np.concatenate([[0], row.astype(int), [0]]))
    starts, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return list(zip(starts.tolist(), (stops - starts).tolist(), strict=True))


@pytest.mark.parametrize("mask_prob", [0.15, 0.3])
def test_the_masked_fraction_is_mask_prob(encoded, mask_prob):
    ids, vocab_size = encoded
    out = mask(ids, vocab_size, mask_prob=mask_prob)
    maskable = ~np.isin(ids, SPECIAL_IDS)
    rate = (out.labels != IGNORE_INDEX).sum() / maskable.sum()
    assert rate == pytest.approx(mask_prob, abs=0.01)
    per_row = (out.labels != IGNORE_INDEX).sum(1) / maskable.sum(1)
    assert np.all(per_row > 0) and np.percentile(per_row, 5) > mask_prob - 0.06


@pytest.mark.parametrize("ngram_max", [1, 3, 5])
def test_spans_are_contiguous_runs_of_at_most_ngram_max_tokens(encoded, ngram_max):
    ids, vocab_size = encoded
    out = mask(ids, vocab_size, ngram_max=ngram_max)
    masked = out.labels != IGNORE_INDEX
    found = sorted((r, s, n) for r in range(len(ids)) for s, n in runs(masked[r]))
    # spans never touch, so each run of masked positions is exactly one reported span
    assert found == sorted(map(tuple, out.spans[:, :3].tolist()))
    lengths = np.bincount(out.spans[:, 2], minlength=ngram_max + 1)[1:]
    assert out.spans[:, 2].max() == ngram_max and out.spans[:, 2].min() == 1
    if ngram_max > 1:  # drawn with probability ~ 1/n: shorter spans are more frequent
        assert np.all(np.diff(lengths) < 0), lengths
        assert (out.spans[:, 2] > 1).mean() > 0.3


def test_span_lengths_are_drawn_with_probability_one_over_n():
    assert span_length_probs(3) == pytest.approx([6 / 11, 3 / 11, 2 / 11])
    assert span_length_probs(1) == pytest.approx([1.0])
    with pytest.raises(ValueError, match="ngram_max is 0"):
        span_length_probs(0)


def test_spans_are_masked_randomised_or_kept_80_10_10(encoded):
    ids, vocab_size = encoded
    out = mask(ids, vocab_size, mask_prob=0.3)
    masked = out.labels != IGNORE_INDEX
    became_mask = (out.inputs == MASK_ID) & masked
    kept = (out.inputs == ids) & masked
    replaced = masked & ~became_mask & ~kept
    total = masked.sum()
    assert became_mask.sum() / total == pytest.approx(0.8, abs=0.03)
    assert kept.sum() / total == pytest.approx(0.1, abs=0.02)  # a random id equal to the original is ~1/3000
    assert replaced.sum() / total == pytest.approx(0.1, abs=0.02)
    fates = np.bincount(out.spans[:, 3], minlength=3) / len(out.spans)
    assert fates[MASK] == pytest.approx(0.8, abs=0.03) and fates[RANDOM] == pytest.approx(0.1, abs=0.02)
    assert fates[KEEP] == pytest.approx(0.1, abs=0.02)
    # a random replacement is a regular token, never a special one
    assert not np.isin(out.inputs[replaced], SPECIAL_IDS).any()
    assert out.inputs[replaced].max() < vocab_size


def test_special_tokens_and_padding_are_never_masked_and_labels_are_minus_100_elsewhere(encoded):
    ids, vocab_size = encoded
    out = mask(ids, vocab_size, mask_prob=0.5, ngram_max=4)
    special = np.isin(ids, SPECIAL_IDS)
    assert special.any(axis=None) and (ids == SPECIAL_TOKENS.index("[UNK]")).any()
    assert np.all(out.labels[special] == IGNORE_INDEX)
    assert np.array_equal(out.inputs[special], ids[special])
    masked = out.labels != IGNORE_INDEX
    assert np.array_equal(out.labels[masked], ids[masked])
    assert np.array_equal(out.inputs[~masked], ids[~masked])
    assert out.inputs.dtype == out.labels.dtype == np.int64 and out.inputs.shape == ids.shape


def test_masks_are_a_function_of_the_generator_seed(encoded):
    ids, vocab_size = encoded
    a, b, c = mask(ids, vocab_size, seed=1), mask(ids, vocab_size, seed=1), mask(ids, vocab_size, seed=2)
    assert np.array_equal(a.inputs, b.inputs) and np.array_equal(a.labels, b.labels)
    assert not np.array_equal(a.labels, c.labels)


def test_short_and_empty_rows():
    ids = np.array([[2, 7, 3, 0, 0],      # one maskable token: it is masked
                    [2, 3, 0, 0, 0],      # nothing maskable: untouched
                    [2, 1, 1, 3, 0]])     # only [UNK]s: untouched
    out = mask(ids, 20, mask_prob=0.15, ngram_max=3)
    assert out.labels.tolist() == [[-100, 7, -100, -100, -100], [-100] * 5, [-100] * 5]
    assert np.array_equal(out.inputs[1:], ids[1:])


@pytest.mark.parametrize("kwargs, message", [
    (dict(mask_prob=0.0), "mask_prob is 0.0"),
    (dict(mask_prob=1.0), "mask_prob is 1.0"),
    (dict(mask_ratio=0.8, random_ratio=0.3), "sum <= 1"),
])
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        mask(np.array([[2, 7, 3]]), 20, **kwargs)
