"""Data: read and validate the task's CSV files, label vocabularies, folds, token ids.

Format (the real competition files, read unchanged):
    train.csv  id,text,label   text = space-separated tokens, label = "L1-L2" (e.g. 5-24)
    test.csv   id,text

`prepare_data` turns a training table into an `EncodedData` of padded int32 arrays. The driver
builds it once and ships it to every trial through Ray's object store. The arrays hold each
text's head and its tail, so each trial cuts long texts its own way (`Truncation`).

Command line: `python -m model.data synth --out DIR [--rows N --seed S]` writes a synthetic
train.csv/test.csv pair (see model/synthetic.py).
"""

from __future__ import annotations

import argparse
import math
import re
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold

from model.datafiles import require_file
from model.errors import DataError

TRAIN_COLUMNS = ("id", "text", "label")
_LABEL_RE = re.compile(r"^\s*([^-\s]+)-([^-\s]+)\s*$")

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
SPECIAL_TOKENS = (PAD, UNK, CLS, SEP, MASK)


# ----------------------------------------------------------------------------- reading


def read_table(path: str | Path, *, columns: tuple[str, ...] = TRAIN_COLUMNS) -> pd.DataFrame:
    """Read and validate a train (`id,text,label`) or test (`id,text`) CSV.

    Errors name the file, the line (header = line 1) and the fix.
    """
    path = Path(path)
    frame = _read_columns(path, columns)
    line = pd.Series(np.arange(len(frame)) + 2, index=frame.index)  # header is line 1
    _check_ids(frame, line, path)
    _check_texts(frame, line, path)
    if "label" in columns:
        _check_labels_column(frame, line, path)
    return frame.reset_index(drop=True)


def _read_columns(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    """The CSV's `columns`, as text, with at least one row."""
    require_file(path)
    header = ",".join(columns)
    try:  # utf-8-sig: a byte-order mark (Excel's "CSV UTF-8") is not part of the first column's name
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except pd.errors.EmptyDataError as err:
        raise DataError(f"{path}: the file is empty; it needs the header {header} and one row per text") from err
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 ({err}); save it as UTF-8 (e.g. iconv -f GBK -t UTF-8)") from err
    except pd.errors.ParserError as err:
        raise DataError(f"{path}: not a readable CSV ({str(err).strip()}); every row needs as many fields as "
                        "the header: quote a field that holds a comma") from err
    frame.columns = [c.strip() for c in frame.columns]
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {', '.join(missing)}; the header must be {header} "
            f"(found {','.join(frame.columns)})"
        )
    frame = frame[list(columns)].copy()
    if frame.empty:
        raise DataError(f"{path}: no data rows under the header; add one row per text ({header})")
    return frame


def _check_ids(frame: pd.DataFrame, line: pd.Series, path: Path) -> None:
    frame["id"] = frame["id"].str.strip()
    dup = frame["id"].duplicated(keep=False)
    if dup.any():
        first = frame.loc[dup, "id"].iloc[0]
        lines = line[frame["id"] == first].tolist()
        raise DataError(
            f"{path}: id {first!r} appears on lines {', '.join(map(str, lines))}; ids must be unique "
            f"({int(frame.loc[dup, 'id'].nunique())} duplicated id(s) in all)"
        )


def _check_texts(frame: pd.DataFrame, line: pd.Series, path: Path) -> None:
    frame["text"] = frame["text"].str.strip()
    empty = frame["text"] == ""
    if empty.any():
        i = empty.idxmax()
        raise DataError(
            f"{path}: line {line[i]} (id {frame.at[i, 'id']}) has an empty text; every row needs at "
            f"least one token ({int(empty.sum())} empty row(s) in all): remove or fill them"
        )


def _check_labels_column(frame: pd.DataFrame, line: pd.Series, path: Path) -> None:
    frame["label"] = frame["label"].str.strip()
    bad = ~frame["label"].str.match(_LABEL_RE)
    if bad.any():
        i = bad.idxmax()
        raise DataError(
            f"{path}: line {line[i]} (id {frame.at[i, 'id']}) has label {frame.at[i, 'label']!r}, "
            "which is not of the form L1-L2 (e.g. 5-24: level-1 label, dash, level-2 label)"
        )
    parents = frame["label"].str.extract(_LABEL_RE).groupby(1)[0].unique()
    clash = parents[parents.map(len) > 1]
    if len(clash):
        l2 = clash.index[0]
        raise DataError(
            f"{path}: level-2 label {l2!r} appears under level-1 labels "
            f"{', '.join(sorted(clash.iloc[0]))}; each level-2 label must have one parent"
        )


# ----------------------------------------------------------------------------- labels


def _natural_key(label: str) -> tuple:
    """Sort '2' before '10'; non-numeric parts sort as text after numbers."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in label.split("-"))


@dataclass(frozen=True)
class LabelSet:
    """Level-2 labels ("L1-L2" strings, naturally sorted) and their level-1 parents."""

    level2: tuple[str, ...]
    level1: tuple[str, ...]

    @classmethod
    def from_labels(cls, labels) -> LabelSet:
        level2 = tuple(sorted(set(labels), key=_natural_key))
        level1 = tuple(sorted({lab.split("-")[0] for lab in level2}, key=_natural_key))
        return cls(level2=level2, level1=level1)

    @property
    def level1_of(self) -> np.ndarray:
        """(num_level2,) index of each level-2 label's level-1 parent."""
        index = {name: i for i, name in enumerate(self.level1)}
        return np.array([index[lab.split("-")[0]] for lab in self.level2], dtype=np.int64)

    def encode(self, labels) -> np.ndarray:
        index = {name: i for i, name in enumerate(self.level2)}
        return np.array([index[lab] for lab in labels], dtype=np.int64)


# ----------------------------------------------------------------------------- tokens


@dataclass(frozen=True)
class Vocab:
    """Token vocabulary: the special tokens, then tokens by descending frequency (ties by text)."""

    tokens: tuple[str, ...]

    @classmethod
    def build(cls, texts, *, min_count: int = 1) -> Vocab:
        """Tokens seen at least `min_count` times (the others encode as [UNK])."""
        counts = Counter(tok for text in texts for tok in text.split())
        ranked = sorted((t for t, c in counts.items() if c >= min_count), key=lambda t: (-counts[t], t))
        return cls(tokens=SPECIAL_TOKENS + tuple(t for t in ranked if t not in SPECIAL_TOKENS))

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def index(self) -> dict[str, int]:
        return {t: i for i, t in enumerate(self.tokens)}

    def encode(self, texts, *, max_seq_len: int) -> tuple[np.ndarray, np.ndarray]:
        """Texts -> ((N, max_seq_len) int32 ids as [CLS] tokens... [SEP] then [PAD], (N,) lengths).

        Texts longer than max_seq_len - 2 tokens are truncated (keeping the head).
        """
        if max_seq_len < 3:
            raise DataError(f"max_seq_len is {max_seq_len}, but must be >= 3 ([CLS], a token, [SEP])")
        index, unk = self.index, self.index[UNK]
        texts = list(texts)
        ids = np.full((len(texts), max_seq_len), self.index[PAD], dtype=np.int32)
        lengths = np.empty(len(texts), dtype=np.int32)
        for row, text in enumerate(texts):
            body = [index.get(tok, unk) for tok in text.split()[: max_seq_len - 2]]
            seq = [index[CLS], *body, index[SEP]]
            ids[row, : len(seq)] = seq
            lengths[row] = len(seq)
        return ids, lengths

    def encode_tails(self, texts, *, max_seq_len: int) -> np.ndarray:
        """Texts -> (N, max_seq_len - 2) int32: the ids of each text's last max_seq_len - 2 tokens,
        right-aligned ([PAD] before a shorter text). With `encode`'s head, what `Truncation` needs
        to cut a long text any way a trial asks."""
        body = max_seq_len - 2
        index, unk = self.index, self.index[UNK]
        texts = list(texts)
        tails = np.full((len(texts), body), self.index[PAD], dtype=np.int32)
        for row, text in enumerate(texts):
            tokens = text.split()[-body:]
            if tokens:
                tails[row, body - len(tokens):] = [index.get(tok, unk) for tok in tokens]
        return tails


TRUNCATIONS = ("head", "tail", "head_tail")


@dataclass(frozen=True)
class Truncation:
    """Which tokens a text longer than max_seq_len - 2 keeps (the `truncation` and `head_share`
    fields): its head, its tail, or `head_share` of them from the head and the rest from the tail
    (Sun et al. 2019, "How to fine-tune BERT for text classification?": head+tail beat either).

    Applied per batch (`select`), so each trial cuts the same encoded arrays its own way. Every
    mode keeps min(tokens, max_seq_len - 2) tokens, so a row's length, and with it the batching,
    is the same whatever the mode.
    """

    mode: str = "head"
    head_share: float = 0.25

    def __post_init__(self) -> None:
        if self.mode not in TRUNCATIONS:
            raise ValueError(f"truncation is {self.mode!r}, but must be one of: {', '.join(TRUNCATIONS)}")

    def head_tokens(self, body: int) -> int:
        """Of the `body` tokens a long text keeps, how many come from its head (rounded half up)."""
        if self.mode == "head":
            return body
        if self.mode == "tail":
            return 0
        return min(body, int(math.floor(self.head_share * body + 0.5)))

    def select(self, split: EncodedSplit, idx: np.ndarray, width: int) -> np.ndarray:
        """(B, width) int32 ids of rows `idx` cut this way: [CLS] kept tokens [SEP] [PAD]...;
        `width` is at least their longest length."""
        ids = split.ids[idx, :width]
        if self.mode == "head":
            return ids  # the arrays hold the heads already
        body = split.ids.shape[1] - 2
        # Rows at full length: the cut ones (and those exactly body tokens long, which every mode
        # keeps whole, so replacing their tail changes nothing). Then width is the full length.
        full = split.lengths[idx] == split.ids.shape[1]
        if not full.any():
            return ids
        if split.tails is None:
            raise ValueError(f"truncation {self.mode!r} needs the texts' tails, but this split was encoded without "
                             "them: encode it with model.data.prepare_data or model.inference.encode_texts")
        head = self.head_tokens(body)
        # `ids` is a copy (fancy indexing), so this never writes into the split (read-only in Ray's store)
        ids[full, 1 + head:1 + body] = split.tails[idx[full], head:]
        return ids


# ----------------------------------------------------------------------------- splits and arrays


def check_fold_flags(*, folds: int, fold: int) -> None:
    """--folds and --fold on their own (the preflight runs it before reading any data)."""
    if folds < 2:
        raise DataError(f"--folds is {folds}, but must be >= 2 (one fold is held out for evaluation; "
                        "5 is the usual choice)")
    if not 0 <= fold < folds:
        raise DataError(f"--fold is {fold}, but must be in 0..{folds - 1} for --folds {folds}")


def fold_indices(labels, *, folds: int, fold: int, seed: int, source: str = "the training data"
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, dev_idx) of fold `fold` of a stratified, shuffled, seeded k-fold split.

    A label with fewer rows than `folds` is absent from some dev folds (`absent_from_dev` says which);
    it still has a training row in every fold as long as it has 2 rows, so only single-row labels,
    and splits whose dev fold would score fewer than 2 labels, are refused.
    """
    check_fold_flags(folds=folds, fold=fold)
    counts = Counter(labels)
    _check_labels(counts, source)
    largest, rows = counts.most_common(1)[0]
    if folds > rows:  # StratifiedKFold refuses it: no label could be spread over every fold
        raise DataError(f"--folds {folds} is more than the {rows} rows of the largest label, {largest}; pass "
                        f"--folds {_folds_scoring_two_labels(counts)} or fewer")
    split = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # rows < folds: `dev_fold_note` tells the user which labels, and the fix
        warnings.filterwarnings("ignore", "The least populated class", UserWarning)
        train_idx, dev_idx = list(split.split(np.zeros(len(labels)), labels))[fold]
    scored = sorted({labels[i] for i in dev_idx}, key=_natural_key)
    if len(scored) < 2:
        raise DataError(
            f"dev fold {fold} of --folds {folds} holds only label {scored[0]} ({len(dev_idx)} rows): a macro-F1 "
            f"over one label is meaningless. Pass --folds {_folds_scoring_two_labels(counts)} or fewer, or add rows"
        )
    return train_idx, dev_idx


def _check_labels(counts: Counter, source: str) -> None:
    """At least 2 labels, each with a row to train on and a row to score in some dev fold."""
    if len(counts) < 2:
        (label, rows), = counts.items()
        raise DataError(f"{source} has a single label, {label} ({rows} rows): level-2 macro-F1 would "
                        "be 1.0 whatever a model predicts. Add rows of at least one other label")
    single = sorted((lab for lab, c in counts.items() if c == 1), key=_natural_key)
    if single:
        raise DataError(
            f"{source}: label(s) {', '.join(single)} have 1 row each: a label needs at least 2 (one to train on, "
            "one to score), whatever --folds is. Merge each into a sibling label (same level-1 label), drop its row, "
            "or add rows of it"
        )


def _folds_scoring_two_labels(counts: Counter) -> int:
    """The largest --folds whose every dev fold holds the two largest labels (>= 2 labels scored)."""
    return max(2, sorted(counts.values())[-2])


@dataclass(frozen=True)
class EncodedSplit:
    ids: np.ndarray  # (N, max_seq_len) int32, [CLS] head tokens [SEP], [PAD]-filled
    lengths: np.ndarray  # (N,) int32, tokens incl. [CLS] and [SEP]
    labels: np.ndarray  # (N,) int64 level-2 indices
    # (N, max_seq_len - 2) int32, the last tokens of each text (`Vocab.encode_tails`), for the tail
    # and head_tail truncations; None: head truncation only.
    tails: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class EncodedData:
    """Everything a trial needs, as plain arrays (cheap to put in Ray's object store)."""

    train: EncodedSplit
    dev: EncodedSplit
    labels: LabelSet
    vocab: Vocab
    max_seq_len: int
    source: str  # where the data came from, for the run's record

    @property
    def num_labels(self) -> int:
        return len(self.labels.level2)

    @property
    def class_counts(self) -> np.ndarray:
        """(num_labels,) training rows per level-2 label."""
        return np.bincount(self.train.labels, minlength=self.num_labels)


def prepare_data(
    frame: pd.DataFrame, *, folds: int = 5, fold: int = 0, seed: int = 0, max_seq_len: int = 128,
    source: str = "",
) -> EncodedData:
    """Split a validated training table and encode both parts.

    The token vocabulary comes from the training part only, so dev tokens unseen in training
    map to [UNK] as unseen test tokens would.
    """
    labels = LabelSet.from_labels(frame["label"])
    train_idx, dev_idx = fold_indices(frame["label"].tolist(), folds=folds, fold=fold, seed=seed,
                                      source=source or "the training data")
    texts = frame["text"].to_numpy()
    y = labels.encode(frame["label"])
    vocab = Vocab.build(texts[train_idx])

    def split(idx: np.ndarray) -> EncodedSplit:
        ids, lengths = vocab.encode(texts[idx], max_seq_len=max_seq_len)
        return EncodedSplit(ids=ids, lengths=lengths, labels=y[idx],
                            tails=vocab.encode_tails(texts[idx], max_seq_len=max_seq_len))

    return EncodedData(train=split(train_idx), dev=split(dev_idx), labels=labels, vocab=vocab,
                       max_seq_len=max_seq_len, source=source)


def absent_from_dev(data: EncodedData) -> dict[str, int]:
    """{label: its rows} of the labels with no row in the dev fold (rows < --folds): macro-F1 counts
    each as F1 0 there, so the user is told, and shown --folds that keeps every label scored."""
    rows = data.class_counts + np.bincount(data.dev.labels, minlength=data.num_labels)
    scored = np.bincount(data.dev.labels, minlength=data.num_labels) > 0
    return {data.labels.level2[i]: int(rows[i]) for i in np.flatnonzero(~scored)}


def dev_fold_note(data: EncodedData, *, fold: int, folds: int) -> str | None:
    """A warning line when labels are absent from the dev fold, else None."""
    absent = absent_from_dev(data)
    if not absent:
        return None
    listing = ", ".join(f"{lab} ({rows} rows)" for lab, rows in absent.items())
    return (f"warning: label(s) {listing} have no row in dev fold {fold} of --folds {folds}; level-2 macro-F1 "
            f"counts each as F1 0 there. --folds {min(absent.values())} or fewer scores every label in every fold")


# ----------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> None:
    from model.synthetic import DEFAULT_ROWS, write_synthetic

    parser = argparse.ArgumentParser(prog="python -m model.data", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    synth = sub.add_parser("synth", help="write a synthetic train.csv/test.csv with the real schema")
    synth.add_argument("--out", required=True, help="output directory")
    synth.add_argument("--rows", type=int, default=DEFAULT_ROWS, help="training rows (default: %(default)s)")
    synth.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    train, test = write_synthetic(args.out, rows=args.rows, seed=args.seed)
    print(f"wrote {train} and {test}")


if __name__ == "__main__":
    main()
