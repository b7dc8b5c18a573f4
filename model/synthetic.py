"""Seeded synthetic data with the schema and the statistics of the real task (DESIGN.md §2).

Why a generator and not a fixture: every command and test must run offline, and the real files
cannot ship. The statistics the generator reproduces at the default 14,009 rows:

- 35 level-2 labels under 10 level-1 labels with the real long tail: per-label rows 16 … 1,931
  (median 239), level-1 totals 1: 4,444, 2: 4,182, 6: 2,425, 5: 2,180, 4: 624, 8: 69, 7: 32,
  9: 19, 10: 18, 3: 16; five level-1 labels hold a single level-2 label.
- lengths: mean ≈ 45 tokens, min 8, median ≈ 45, p75 ≈ 53, a long tail up to 334.
- tokens: integer ids up to 30,400 (≈ 3,300 distinct, ≈ 500 seen once at full size) from a
  Zipfian core plus a rare tail, with the punctuation tokens `，` (the most frequent token) and `！`.

The signal is learnable but not trivial: each level-1 label owns a few tokens all its level-2
children share, each level-2 label owns indicative tokens and bigrams, a fraction of rows also carry
a sibling's signal, and a few training labels are flipped to a sibling (label noise).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from model.errors import DataError

# Rows per level-2 label in the real training set's shape; keys are "L1-L2".
LEVEL2_COUNTS: dict[str, int] = {
    "1-1": 1931, "1-2": 700, "1-3": 520, "1-4": 400, "1-5": 300, "1-6": 239, "1-7": 180,
    "1-8": 110, "1-9": 64,
    "2-10": 1200, "2-11": 900, "2-12": 700, "2-13": 500, "2-14": 400, "2-15": 230, "2-16": 150,
    "2-17": 102,
    "3-18": 16,
    "4-19": 380, "4-20": 160, "4-21": 84,
    "5-22": 900, "5-23": 600, "5-24": 350, "5-25": 210, "5-26": 120,
    "6-27": 1000, "6-28": 700, "6-29": 400, "6-30": 200, "6-31": 125,
    "7-32": 32, "8-33": 69, "9-34": 19, "10-35": 18,
}
DEFAULT_ROWS = sum(LEVEL2_COUNTS.values())  # 14,009
TEST_ROWS_PER_TRAIN_ROW = 6004 / DEFAULT_ROWS
MIN_ROWS_PER_LABEL = 6  # rows of every label, label noise included: each in every dev fold of a 5-fold split

COMMA, BANG = "，", "！"
MAX_TOKEN_ID = 30400
CORE_TYPES, RARE_TYPES, ZIPF_S = 2450, 1350, 1.0
RARE_PER_TOKEN = 1350 / 540_000  # about one draw per rare type at full size
COMMA_RATE, BANG_RATE = 0.13, 0.01
LEN_MEAN, LEN_SD, LEN_MIN, LONG_RATE, LONG_RANGE = 45, 12, 8, 0.005, (100, 334)

# Signal: tokens per level-1 label / per level-2 label, bigrams per level-2 label, and the Poisson
# rates at which a row carries them; SIBLING_RATE of rows also carry a sibling's level-2 signal.
GROUP_TOKENS, CLASS_TOKENS, CLASS_BIGRAMS = 6, 6, 3
GROUP_RATE, CLASS_RATE, BIGRAM_RATE = 1.5, 1.3, 0.8
SIBLING_RATE, LABEL_NOISE = 0.25, 0.04


def label_counts(rows: int, *, flag: str = "--rows") -> dict[str, int]:
    """Rows per level-2 label for a dataset of `rows` rows: the real shape, scaled, each label
    keeping at least MIN_ROWS_PER_LABEL rows; the largest label absorbs rounding. `flag` is the
    option the user set `rows` with, for the error."""
    floor = MIN_ROWS_PER_LABEL * len(LEVEL2_COUNTS)
    if rows < floor + 1:
        raise DataError(f"{flag} is {rows}, but the synthetic generator needs at least {floor + 1} rows "
                        f"({MIN_ROWS_PER_LABEL} per label x {len(LEVEL2_COUNTS)} labels, for a stratified "
                        f"5-fold split): pass {flag} {floor + 1} or more")
    # Labels that would scale below the floor sit at it; the others share the rest in proportion.
    floored: set[str] = set()
    while True:
        free = {k: v for k, v in LEVEL2_COUNTS.items() if k not in floored}
        scale = (rows - MIN_ROWS_PER_LABEL * len(floored)) / sum(free.values())
        newly = {k for k, v in free.items() if v * scale < MIN_ROWS_PER_LABEL}
        if not newly:
            break
        floored |= newly
    exact = {k: MIN_ROWS_PER_LABEL if k in floored else v * scale for k, v in LEVEL2_COUNTS.items()}
    counts = {k: int(v) for k, v in exact.items()}
    # Largest remainders get the rows lost to rounding down, so the total is exactly `rows`.
    for k in sorted(exact, key=lambda k: exact[k] - counts[k], reverse=True)[: rows - sum(counts.values())]:
        counts[k] += 1
    return counts


class _Vocabulary:
    """Background token sampler and the signal tokens of each label."""

    def __init__(self, rng: np.random.Generator, labels: list[str]):
        ids = rng.choice(np.arange(1, MAX_TOKEN_ID + 1), size=CORE_TYPES + RARE_TYPES, replace=False)
        self.core = ids[:CORE_TYPES].astype(str)
        self.rare = ids[CORE_TYPES:].astype(str)
        weights = np.arange(1, CORE_TYPES + 1, dtype=float) ** -ZIPF_S
        self.core_p = weights / weights.sum()
        # Signal tokens come from the mid-frequency core (ranks 150+), each owned by one label.
        groups = sorted({lab.split("-")[0] for lab in labels})
        need = GROUP_TOKENS * len(groups) + (CLASS_TOKENS + 2 * CLASS_BIGRAMS) * len(labels)
        pool = iter(rng.permutation(self.core[150:])[:need])
        self.group_tokens = {g: [next(pool) for _ in range(GROUP_TOKENS)] for g in groups}
        self.class_tokens = {lab: [next(pool) for _ in range(CLASS_TOKENS)] for lab in labels}
        self.class_bigrams = {lab: [(next(pool), next(pool)) for _ in range(CLASS_BIGRAMS)]
                              for lab in labels}

    def background(self, rng: np.random.Generator, n: int) -> list[str]:
        tokens = rng.choice(self.core, size=n, p=self.core_p).astype(object)
        u = rng.random(n)
        tokens[u < COMMA_RATE] = COMMA
        tokens[(u >= COMMA_RATE) & (u < COMMA_RATE + BANG_RATE)] = BANG
        rare = rng.random(n) < RARE_PER_TOKEN
        tokens[rare] = rng.choice(self.rare, size=int(rare.sum()))
        return list(tokens)

    def signal(self, rng: np.random.Generator, label: str) -> list[list[str]]:
        """Signal units (single tokens or bigrams) for one row of `label`."""
        group = label.split("-")[0]
        units = [[rng.choice(self.group_tokens[group])] for _ in range(rng.poisson(GROUP_RATE))]
        units += [[rng.choice(self.class_tokens[label])] for _ in range(rng.poisson(CLASS_RATE))]
        bigrams = self.class_bigrams[label]
        units += [list(bigrams[rng.integers(len(bigrams))]) for _ in range(rng.poisson(BIGRAM_RATE))]
        return units


def _length(rng: np.random.Generator) -> int:
    if rng.random() < LONG_RATE:
        return int(rng.integers(LONG_RANGE[0], LONG_RANGE[1] + 1))
    return int(max(LEN_MIN, round(rng.normal(LEN_MEAN, LEN_SD))))


def _text(rng: np.random.Generator, vocab: _Vocabulary, label: str, siblings: list[str]) -> str:
    length = _length(rng)
    tokens = vocab.background(rng, length)
    units = vocab.signal(rng, label)
    if siblings and rng.random() < SIBLING_RATE:
        units += vocab.signal(rng, siblings[rng.integers(len(siblings))])[1:]
    for unit in units:  # overwrite background at random places; the length stays as drawn
        at = int(rng.integers(0, max(1, length - len(unit) + 1)))
        tokens[at : at + len(unit)] = unit
    return " ".join(tokens[:length])


def _keep_floor(observed: list[str], true: np.ndarray) -> list[str]:
    """Undo the label flips that took a label below MIN_ROWS_PER_LABEL rows (at small sizes noise
    flips rows away from floored labels), so the floor holds as promised. Flips are undone after
    they are drawn, so the random stream, and the data of every size the floor does not bind, stay."""
    observed, have = list(observed), Counter(observed)
    undone = True
    while undone:  # undoing a flip into a label can take that one below the floor: repeat
        undone = False
        for i, lab in enumerate(true):
            if observed[i] != lab and have[lab] < MIN_ROWS_PER_LABEL:
                have[observed[i]] -= 1
                observed[i], have[lab], undone = lab, have[lab] + 1, True
    return observed


def synthesize(rows: int = DEFAULT_ROWS, *, seed: int = 0, flag: str = "--rows") -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train `id,text,label`, test `id,text`) frames; deterministic for a given (rows, seed)."""
    rng = np.random.default_rng(seed)
    counts = label_counts(rows, flag=flag)
    labels = list(counts)
    vocab = _Vocabulary(rng, labels)
    siblings = {lab: [s for s in labels if s != lab and s.split("-")[0] == lab.split("-")[0]]
                for lab in labels}

    train_labels = rng.permutation(np.repeat(labels, [counts[lab] for lab in labels]))
    texts = [_text(rng, vocab, lab, siblings[lab]) for lab in train_labels]
    noisy = rng.random(rows) < LABEL_NOISE
    observed = [rng.choice(siblings[lab]) if flip and siblings[lab] else lab
                for lab, flip in zip(train_labels, noisy, strict=True)]
    observed = _keep_floor(observed, train_labels)
    train = pd.DataFrame({"id": np.arange(rows), "text": texts, "label": observed})

    test_rows = max(1, round(rows * TEST_ROWS_PER_TRAIN_ROW))
    p = np.array([counts[lab] for lab in labels], dtype=float)
    test_labels = rng.choice(labels, size=test_rows, p=p / p.sum())
    test = pd.DataFrame({"id": np.arange(rows, rows + test_rows),
                         "text": [_text(rng, vocab, lab, siblings[lab]) for lab in test_labels]})
    return train, test


def write_synthetic(out: str | Path, *, rows: int = DEFAULT_ROWS, seed: int = 0) -> tuple[Path, Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    train, test = synthesize(rows, seed=seed)
    paths = out / "train.csv", out / "test.csv"
    train.to_csv(paths[0], index=False, encoding="utf-8")
    test.to_csv(paths[1], index=False, encoding="utf-8")
    return paths
