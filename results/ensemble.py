"""Ensembles of out-of-fold (OOF) predictions: combination rules, greedy selection, nested scoring.

Pure functions over numpy arrays, no I/O. The `confirm` stage retrains each of the top-K configs
(the *members*) on every fold of one stratified F-fold split and keeps each fold model's level-2
probabilities for its held-out rows, so each member has one OOF matrix `(N, C)` over all N training
rows, and `fold_of` `(N,)` says which fold held each row out. This module answers "which weighted
combination of members, by which rule, and how good is it on rows it was not chosen on".

Combination rules (`METHODS`), all taking per-member weights `w_m >= 0`:

- `prob`: the weighted mean of the members' probabilities; predict the argmax.
- `rank`: per-row class ranks, a Borda count. Each member's row of class scores is replaced by the
  ranks of its classes within that row, `rank_m[n, c] = rankdata(P_m[n, :])[c]`, 1 for the least
  likely class up to C for the member's top class (average ranks for ties); then the weighted mean
  over members; predict the argmax over classes. Why: members of different families are calibrated
  differently (a LinearSVC's softmax is flat, a BERT trained with label smoothing is peaked, one
  trained with focal loss under-confident), and a plain probability mean lets the most confident
  member dominate. Ranks keep only each member's ordering of the classes per row, so any strictly
  increasing transform of one member's scores (temperature, a power, log) changes nothing, and a
  row's result depends on that row alone (no set of rows to rank over: test rows, held-out folds
  and the OOF rows are all treated the same). Ranks within a row, not within a column: ranking each
  class column over the rows (per-class percentiles, the AUC view) makes the argmax favour each
  row's "unusually high" class and so over-predicts the rare labels. Measured on the real
  train.csv (5-fold OOF pooled, `python -m benchmarks.linear_reference`): the sigmoid-calibrated
  LinearSVC alone scores 0.512, and 0.4345 under column ranks (row ranks of one member are its own
  argmax); paired with the uncalibrated reference LinearSVC (0.517), column ranks give 0.419, the
  probability mean 0.514 and row ranks 0.521. With the temperature-scaled linear member of
  model/linear.py (the reference's labels) every row-wise rule gives 0.517, column ranks 0.437.
  With few members the Borda sums tie often (member A's first is B's second and vice versa); ties
  go to the lower label index like every argmax here.
- `vote`: each member votes for its argmax label with its weight (a member added k times by greedy
  selection has k votes); the most votes wins. Ties go to the label of the earliest member in the
  members list (member rank: list members best first) that voted for one of the tied labels, as the
  competition's vote_three did. Members with weight 0 do not vote.

Ties in `prob`/`rank` argmax go to the lower label index (numpy's argmax).

Scoring is the level-2 macro-F1 over all C labels, scikit-learn's `f1_score(labels=range(C),
average="macro", zero_division=0)`, the same number as `model.metrics.classification_metrics`'s
`level2_macro_f1` (a label absent from both truth and predictions counts as 0).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from results.ranking import fold_std

METHODS = ("prob", "rank", "vote")
# "greedy": Caruana ensemble selection; "all": every member with weight 1 (no selection).
SELECTIONS = ("greedy", "all")


class EnsembleError(ValueError):
    """Inputs to an ensemble function are inconsistent; the message says which and how to fix."""


# ----------------------------------------------------------------------------- validation


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise EnsembleError(f"method is {method!r}, but must be one of {', '.join(METHODS)}")


def _stack(probs: Sequence[np.ndarray]) -> np.ndarray:
    """list of M (N, C) arrays -> (M, N, C) float64, checked."""
    if len(probs) == 0:
        raise EnsembleError("probs is empty: pass one (N, C) OOF probability matrix per member")
    arrays = [np.asarray(p, dtype=np.float64) for p in probs]
    first = arrays[0].shape
    for m, a in enumerate(arrays):
        if a.ndim != 2:
            raise EnsembleError(f"probs[{m}] has shape {a.shape}, but each member's scores must be "
                                "(N, C): one row per training row, one column per level-2 label")
        if a.shape != first:
            raise EnsembleError(f"probs[{m}] has shape {a.shape} but probs[0] has {first}: all members must "
                                "score the same rows in the same order with the same label columns")
        if not np.isfinite(a).all():
            raise EnsembleError(f"probs[{m}] contains NaN or inf: fix or drop that member")
    return np.stack(arrays)


def _check_labels(y, n: int, c: int, name: str = "y") -> np.ndarray:
    y = np.asarray(y)
    if y.shape != (n,):
        raise EnsembleError(f"{name} has shape {y.shape}, but must be ({n},): one label per row of probs")
    if not np.issubdtype(y.dtype, np.integer):
        raise EnsembleError(f"{name} has dtype {y.dtype}: pass level-2 label indices (integers 0..{c - 1})")
    if n and (y.min() < 0 or y.max() >= c):
        raise EnsembleError(f"{name} holds labels {y.min()}..{y.max()}, outside 0..{c - 1} (the columns of probs)")
    return y.astype(np.int64)


def _check_weights(weights, m: int) -> np.ndarray:
    if weights is None:
        return np.ones(m)
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (m,):
        raise EnsembleError(f"weights has shape {w.shape}, but there are {m} members: pass one weight per member")
    if not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise EnsembleError(f"weights {w.tolist()} must be finite, >= 0, and not all 0")
    return w


# ----------------------------------------------------------------------------- scoring


def macro_f1(y_true, y_pred, *, num_labels: int) -> float:
    """Level-2 macro-F1 over labels 0..num_labels-1 (absent labels count as 0)."""
    from sklearn.metrics import f1_score  # imported here, as in model.metrics: keep module import light

    return float(f1_score(y_true, y_pred, labels=np.arange(num_labels), average="macro", zero_division=0.0))


def label_f1(y_true, y_pred, *, num_labels: int) -> tuple[float, ...]:
    """F1 of each label 0..num_labels-1 (absent labels 0): their mean is `macro_f1`, so these say
    where it is lost."""
    from sklearn.metrics import f1_score

    scores = f1_score(y_true, y_pred, labels=np.arange(num_labels), average=None, zero_division=0.0)
    return tuple(float(v) for v in scores)


# ----------------------------------------------------------------------------- combination


def _transform(stack: np.ndarray, method: str) -> np.ndarray:
    """(M, N, C) probabilities -> what the rule sums over members.

    prob: (M, N, C) unchanged; rank: (M, N, C) ranks 1..C of the classes within each row (ties get
    their average rank); vote: (M, N) argmax labels. All three are row-wise: row n of the result
    depends on row n of the input only.
    """
    if method == "prob":
        return stack
    if method == "rank":
        from scipy.stats import rankdata  # scipy ships with scikit-learn; imported here to keep import light

        return rankdata(stack, method="average", axis=2)
    return stack.argmax(axis=2)


def _vote_counts(labels: np.ndarray, w: np.ndarray, c: int) -> np.ndarray:
    """(M, N) member labels, (M,) weights -> (N, C) weighted vote counts."""
    m, n = labels.shape
    counts = np.zeros((n, c))
    rows = np.arange(n)
    for k in range(m):
        if w[k] > 0:
            counts[rows, labels[k]] += w[k]
    return counts


def _vote_decide(labels: np.ndarray, w: np.ndarray, c: int) -> np.ndarray:
    """Most votes; ties to the tied label of the earliest voting member. (M, N) -> (N,)."""
    counts = _vote_counts(labels, w, c)
    # Weights may be fractional: labels within a rounding error of the top count are tied.
    top = counts >= counts.max(axis=1, keepdims=True) - 1e-9 * w.sum()
    rows = np.arange(labels.shape[1])
    pred = np.full(labels.shape[1], -1, dtype=np.int64)
    for k in np.flatnonzero(w > 0):  # members in list order: the first to vote for a tied label wins
        hit = (pred < 0) & top[rows, labels[k]]
        pred[hit] = labels[k][hit]
    return pred


def _decide(t: np.ndarray, w: np.ndarray, method: str, c: int) -> np.ndarray:
    if method == "vote":
        return _vote_decide(t, w, c)
    # Weighted sum, not mean: the argmax is the same and it saves a division.
    return np.tensordot(w, t, axes=1).argmax(axis=1)


def combine(probs: Sequence[np.ndarray], weights=None, method: str = "prob") -> np.ndarray:
    """(N, C) ensemble scores of M members' (N, C) scores; `weights` (M,) default to 1.

    prob: weighted mean probability (rows sum to 1 if the members' do); rank: weighted mean of the
    per-row class ranks, 1..C (rows sum to C(C+1)/2); vote: weighted share of votes per label (rows
    sum to 1). For `vote` the argmax of these scores ignores the member-order tie-break: use
    `predict` for labels.
    """
    _check_method(method)
    stack = _stack(probs)
    w = _check_weights(weights, stack.shape[0])
    t = _transform(stack, method)
    if method == "vote":
        return _vote_counts(t, w, stack.shape[2]) / w.sum()
    return np.tensordot(w, t, axes=1) / w.sum()


def predict(probs: Sequence[np.ndarray], weights=None, method: str = "prob") -> np.ndarray:
    """(N,) level-2 labels of the ensemble (see the module docstring for each rule and its ties)."""
    _check_method(method)
    stack = _stack(probs)
    w = _check_weights(weights, stack.shape[0])
    return _decide(_transform(stack, method), w, method, stack.shape[2])


# ----------------------------------------------------------------------------- selection


@dataclass(frozen=True)
class Selection:
    """The outcome of choosing members on some rows."""

    weights: tuple[int, ...]  # (M,) times each member was added; the ensemble is their weighted combination
    score: float  # macro-F1 of that ensemble on the rows it was chosen on (in-sample: optimistic)
    path: tuple[float, ...]  # greedy: score after each addition; all: the one score
    added: tuple[int, ...]  # greedy: member added at each step; all: every member once


def greedy_selection(probs: Sequence[np.ndarray], y, *, max_members: int, method: str = "prob") -> Selection:
    """Ensemble selection with replacement (Caruana et al., ICML 2004) on the given rows.

    Start from the empty ensemble and add, `max_members` times, the member whose addition gives the
    highest macro-F1 on these rows (with replacement: a member added k times has weight k). The
    first addition is therefore the single best member: we start from it rather than from
    Caruana's "sorted initialisation" with the n best members, since with a few dozen members and a
    noisy 35-label macro-F1 the path itself should decide how many members help. Every step adds a
    member even if the score drops (a later addition can recover); the result is the prefix of the
    path with the highest score, the shortest one on ties. Ties between candidates go to the earlier
    member in the list, so the outcome is deterministic.
    """
    _check_method(method)
    stack = _stack(probs)
    m, n, c = stack.shape
    y = _check_labels(y, n, c)
    if not isinstance(max_members, int | np.integer) or max_members < 1:
        raise EnsembleError(f"max_members is {max_members!r}, but must be an integer >= 1 "
                            "(the number of greedy additions; 2-3 times the number of members is typical)")
    t = _transform(stack, method)
    counts = np.zeros(m, dtype=np.int64)
    running = np.zeros((n, c))  # prob/rank: sum of the added members' (transformed) scores
    path: list[float] = []
    added: list[int] = []
    best_score, best_counts = -math.inf, counts.copy()
    for _ in range(max_members):
        candidate_scores = np.empty(m)
        for k in range(m):
            if method == "vote":
                w = counts.astype(np.float64)
                w[k] += 1
                pred = _vote_decide(t, w, c)
            else:
                pred = (running + t[k]).argmax(axis=1)
            candidate_scores[k] = macro_f1(y, pred, num_labels=c)
        k = int(np.argmax(candidate_scores))  # first maximum: the earliest member wins ties
        counts[k] += 1
        if method != "vote":
            running += t[k]
        path.append(float(candidate_scores[k]))
        added.append(k)
        if candidate_scores[k] > best_score:  # strict: the shorter ensemble wins ties
            best_score, best_counts = float(candidate_scores[k]), counts.copy()
    return Selection(weights=tuple(int(x) for x in best_counts), score=best_score, path=tuple(path),
                     added=tuple(added))


def select(probs: Sequence[np.ndarray], y, *, method: str = "prob", selection: str = "greedy",
           max_members: int | None = None) -> Selection:
    """`greedy_selection`, or for selection="all" every member once (scored on these rows)."""
    if selection == "greedy":
        if max_members is None:
            raise EnsembleError("selection 'greedy' needs max_members (the number of greedy additions)")
        return greedy_selection(probs, y, max_members=max_members, method=method)
    if selection != "all":
        raise EnsembleError(f"selection is {selection!r}, but must be one of {', '.join(SELECTIONS)}")
    _check_method(method)
    stack = _stack(probs)
    m, n, c = stack.shape
    y = _check_labels(y, n, c)
    weights = np.ones(m)
    score = macro_f1(y, _decide(_transform(stack, method), weights, method, c), num_labels=c)
    return Selection(weights=(1,) * m, score=score, path=(score,), added=tuple(range(m)))


# ----------------------------------------------------------------------------- nested scoring


@dataclass(frozen=True)
class NestedScore:
    """Held-out score of a selection procedure: each fold scored by a selection made without it."""

    score: float  # macro-F1 of all folds' held-out predictions pooled (the headline number)
    fold_scores: tuple[float, ...]  # macro-F1 of each fold's held-out predictions, folds in sorted order
    fold_weights: tuple[tuple[int, ...], ...]  # the weights chosen for each fold (on the other folds)
    folds: tuple[int, ...]  # the fold ids, sorted
    predictions: np.ndarray  # (N,) the held-out predictions whose macro-F1 is `score`

    @property
    def fold_mean(self) -> float:
        return float(np.mean(self.fold_scores))

    @property
    def fold_std(self) -> float:
        return fold_std(self.fold_scores)


def nested_score(probs: Sequence[np.ndarray], y, fold_of, *, method: str = "prob", selection: str = "greedy",
                 max_members: int | None = None) -> NestedScore:
    """Score a selection procedure on rows it did not see.

    For each fold f: select members (`select(..., selection, max_members)`) on the rows of the other
    folds only, then predict fold f's rows with those weights. The headline `score` is the macro-F1
    of the pooled held-out predictions over all N rows, not the mean of per-fold scores: the rarest
    labels have 2-3 rows per fold, so per-fold macro-F1 is noisy, and pooling makes the number
    directly comparable with the in-sample OOF score of the same rows (the gap is the selection's
    optimism). Per-fold scores come back too (`fold_scores`, `fold_mean`).

    Every rule is row-wise (a row's prediction depends on its own scores and the weights only), so
    the members' scores are transformed once for all rows, and with selection="all" (equal weights,
    nothing chosen) the pooled score is exactly the in-sample OOF score.

    What this does not remove: the OOF probabilities of fold g came from a model trained on the
    other folds, fold f included, and the members themselves were picked by a search; both are
    second-order compared with selecting the ensemble on the very rows it is scored on.
    """
    _check_method(method)
    stack = _stack(probs)
    m, n, c = stack.shape
    y = _check_labels(y, n, c)
    fold_of = np.asarray(fold_of)
    if fold_of.shape != (n,):
        raise EnsembleError(f"fold_of has shape {fold_of.shape}, but must be ({n},): the fold that held out each row")
    if not np.issubdtype(fold_of.dtype, np.integer):
        raise EnsembleError(f"fold_of has dtype {fold_of.dtype}: pass integer fold ids (0..F-1)")
    folds = np.unique(fold_of)
    if len(folds) < 2:
        raise EnsembleError(f"fold_of holds {len(folds)} fold(s); nested scoring needs >= 2 "
                            "(selection on the others, scoring on each)")
    t = _transform(stack, method)  # row-wise, so the held-out rows' part is t[:, outer]
    predictions = np.empty(n, dtype=np.int64)
    fold_scores, fold_weights = [], []
    for f in folds:
        inner, outer = fold_of != f, fold_of == f
        chosen = select(list(stack[:, inner]), y[inner], method=method, selection=selection,
                        max_members=max_members)
        w = np.asarray(chosen.weights, dtype=np.float64)
        predictions[outer] = _decide(t[:, outer], w, method, c)
        fold_scores.append(macro_f1(y[outer], predictions[outer], num_labels=c))
        fold_weights.append(chosen.weights)
    return NestedScore(score=macro_f1(y, predictions, num_labels=c), fold_scores=tuple(fold_scores),
                       fold_weights=tuple(fold_weights), folds=tuple(int(f) for f in folds),
                       predictions=predictions)


# ----------------------------------------------------------------------------- result record


@dataclass(frozen=True)
class EnsembleResult:
    """An ensemble chosen on all OOF rows, with its in-sample and nested scores. JSON-able via to_dict."""

    members: tuple[str, ...]  # member names (e.g. trial ids), in member-rank order
    weights: tuple[int, ...]  # per member, chosen on all rows
    method: str
    selection: str
    max_members: int | None
    oof_score: float  # selection and scoring on the same rows: optimistic for greedy
    nested_score: float  # pooled held-out score of the same procedure (see nested_score)
    fold_scores: tuple[float, ...]
    fold_weights: tuple[tuple[int, ...], ...]
    folds: tuple[int, ...]
    # per label, the F1 of the nested held-out predictions (their mean is nested_score); () in files
    # written before it existed
    label_f1: tuple[float, ...] = ()

    @property
    def nested_fold_mean(self) -> float:
        return float(np.mean(self.fold_scores))

    def to_dict(self) -> dict:
        out = asdict(self)
        for key in ("members", "weights", "fold_scores", "folds", "label_f1"):
            out[key] = list(out[key])
        out["fold_weights"] = [list(w) for w in self.fold_weights]
        return out

    @classmethod
    def from_dict(cls, data: dict) -> EnsembleResult:
        return cls(members=tuple(data["members"]), weights=tuple(data["weights"]), method=data["method"],
                   selection=data["selection"], max_members=data["max_members"],
                   oof_score=float(data["oof_score"]), nested_score=float(data["nested_score"]),
                   fold_scores=tuple(data["fold_scores"]),
                   fold_weights=tuple(tuple(w) for w in data["fold_weights"]), folds=tuple(data["folds"]),
                   label_f1=tuple(data.get("label_f1", ())))


def build_ensemble(probs: Sequence[np.ndarray], y, fold_of, *, members: Sequence[str], method: str = "prob",
                   selection: str = "greedy", max_members: int | None = None) -> EnsembleResult:
    """Select on all OOF rows (the ensemble to use) and score the procedure nested (the number to trust)."""
    if len(members) != len(probs):
        raise EnsembleError(f"{len(members)} member names for {len(probs)} probability matrices: pass one name each")
    chosen = select(probs, y, method=method, selection=selection, max_members=max_members)
    nested = nested_score(probs, y, fold_of, method=method, selection=selection, max_members=max_members)
    return EnsembleResult(members=tuple(members), weights=chosen.weights, method=method, selection=selection,
                          max_members=max_members if selection == "greedy" else None,
                          oof_score=chosen.score, nested_score=nested.score, fold_scores=nested.fold_scores,
                          fold_weights=nested.fold_weights, folds=nested.folds,
                          label_f1=label_f1(y, nested.predictions, num_labels=np.shape(probs[0])[1]))
