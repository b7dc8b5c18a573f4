"""The linear reference member: TF-IDF over the tokens + a calibrated LinearSVC (scikit-learn).

A cheap, strong, differently-biased member for ensembles of fine-tuned encoders, and the reference
every searched config must beat. `fit_linear(texts, y, num_labels=..., seed=...)` returns a
`LinearMember` whose `predict_proba(texts)` is `(N, num_labels)`, columns aligned to the label
indices even for labels absent from the training rows (their column is 0).

- Features: TfidfVectorizer over the space-separated tokens (`token_pattern=r"\\S+"`, so one-digit
  ids and the punctuation tokens count), 1-2 grams, sublinear tf, min_df 2.
- Classifier: LinearSVC(class_weight="balanced") with C chosen from a small grid by an inner
  stratified CV (macro-F1 of the argmax of the decision function) on the training rows only; the
  chosen C is then refit with sigmoid calibration, CalibratedClassifierCV(method="sigmoid",
  ensemble=False) over the same inner folds: one sigmoid per class fitted on the inner folds'
  out-of-fold decision values, applied to one LinearSVC fitted on all training rows. That gives
  probabilities an ensemble can average.
- The vectorizer is fitted once on all training rows and shared by the inner folds: it sees the
  inner validation rows' texts (document frequencies, no labels) and saves a refit per split. The
  held-out fold is never seen: callers pass only the training rows.

Why calibrated LinearSVC and not LogisticRegression's own probabilities, measured on the real
train.csv, outer fold 0 of StratifiedKFold(5, shuffle=True, random_state=0), fixed C, wall seconds
on the shared 2-core machine under load (exploratory runs; calibration with scikit-learn's default
ensemble=True there; `python -m benchmarks.linear_reference --compare-probabilities` reruns the
first two rows with both calibration settings):

    calibrated LinearSVC C=0.1 / 0.3 / 1.0      macro-F1 0.519 / 0.513 / 0.516, log-loss 1.19 / 1.18 / 1.20, 3-12 s
    LogisticRegression lbfgs balanced C=3/10/30 macro-F1 0.520 / 0.525 / 0.516, log-loss 1.47 / 1.24 / 1.17, 36-114 s
    one-vs-rest liblinear LogisticRegression    macro-F1 0.508 / 0.511 / 0.512, log-loss 1.43 / 1.22 / 1.17, 70-135 s

The same accuracy and log-loss within fold noise (±0.01) at a tenth to a thirtieth of the cost.
The price of calibration, all 5 folds (`python -m benchmarks.linear_reference`): this member's
argmax scores 0.511 ± 0.009 against 0.518 ± 0.010 for the uncalibrated reference LinearSVC(C=0.5):
the sigmoids learn the class frequencies back, which class_weight="balanced" had removed from the
decision values. The member is meant for probability averaging, where that matters less.
Calibration with ensemble=False against scikit-learn's default ensemble=True (the mean of the
inner folds' calibrated SVCs), C=0.3, all 5 outer folds: macro-F1 0.514 ± 0.009 vs 0.506 ± 0.007
(better on 4 of 5 folds), log-loss 1.154 vs 1.186 (lower on all 5), 4.1 vs 5.5 CPU-s per fold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from sklearn.calibration import CalibratedClassifierCV
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.metrics import f1_score, make_scorer
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.svm import LinearSVC

from model.errors import DataError

DEFAULT_GRID = (0.1, 0.3, 1.0)  # LinearSVC C
INNER_FOLDS = 3
# The reference LinearSVC without calibration (published on train.csv: 0.518 ± 0.010).
REFERENCE_C = 0.5


def make_vectorizer() -> TfidfVectorizer:
    """TF-IDF over the space-separated tokens: 1-2 grams, sublinear tf, min_df 2."""
    return TfidfVectorizer(token_pattern=r"\S+", lowercase=False, ngram_range=(1, 2), sublinear_tf=True, min_df=2)


def reference_pipeline(*, seed: int = 0, c: float = REFERENCE_C) -> Pipeline:
    """The fixed reference: TF-IDF + LinearSVC(C=0.5, class_weight=balanced), no calibration (labels only)."""
    return Pipeline([("tfidf", make_vectorizer()),
                     ("clf", LinearSVC(C=c, class_weight="balanced", random_state=seed))])


@dataclass(frozen=True)
class LinearMember:
    """A fitted TF-IDF + calibrated LinearSVC with probabilities over all `num_labels` labels."""

    pipeline: Pipeline = field(repr=False)
    num_labels: int
    params: dict  # the chosen hyperparameters: C, inner_folds, calibration, seed
    cv_scores: dict  # {C: inner-CV macro-F1} over the grid

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """(N, num_labels) probabilities; labels absent from the training rows get 0."""
        present = self.pipeline.predict_proba(list(texts))  # (N, len(classes_))
        out = np.zeros((present.shape[0], self.num_labels))
        out[:, self.pipeline.classes_] = present
        return out

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        """(N,) labels: the argmax of predict_proba."""
        return self.predict_proba(texts).argmax(axis=1)


def _check(texts: Sequence[str], y: np.ndarray, num_labels: int, inner_folds: int) -> np.ndarray:
    y = np.asarray(y)
    if len(texts) != len(y):
        raise DataError(f"{len(texts)} texts but {len(y)} labels: pass one level-2 label index per text")
    if not np.issubdtype(y.dtype, np.integer) or (len(y) and (y.min() < 0 or y.max() >= num_labels)):
        raise DataError(f"labels must be integers in 0..{num_labels - 1} (LabelSet.encode gives them); "
                        f"got dtype {y.dtype}" + (f", range {y.min()}..{y.max()}" if len(y) else ""))
    labels, counts = np.unique(y, return_counts=True)
    if len(labels) < 2:
        raise DataError("the training rows hold fewer than 2 labels: a classifier needs at least 2")
    small = [(int(lab), int(n)) for lab, n in zip(labels, counts, strict=True) if n < inner_folds]
    if small:
        listing = ", ".join(f"label {lab} ({n} rows)" for lab, n in small)
        raise DataError(f"{listing} have fewer training rows than inner_folds={inner_folds}: the inner "
                        "stratified CV needs one row of each label per fold. Lower inner_folds, or drop "
                        "those rows (their columns then get probability 0)")
    return y.astype(np.int64)


def select_c(features, y: np.ndarray, *, grid: Sequence[float], seed: int, inner_folds: int) -> dict[float, float]:
    """{C: mean macro-F1 over an inner stratified CV} of LinearSVC(balanced) on these rows only.

    `features` is the TF-IDF matrix of the training rows. Scored on the argmax of the decision
    function, not the calibrated probabilities: calibrating inside each inner split would cost
    `inner_folds` more fits per grid point, and the sigmoid is monotone per class.
    """
    present = np.unique(y)
    scorer = make_scorer(f1_score, average="macro", labels=present, zero_division=0.0)
    search = GridSearchCV(LinearSVC(class_weight="balanced", random_state=seed), {"C": list(grid)},
                          scoring=scorer, cv=StratifiedKFold(inner_folds, shuffle=True, random_state=seed),
                          refit=False, n_jobs=1)
    search.fit(features, y)
    return {float(c): float(s) for c, s in zip(grid, search.cv_results_["mean_test_score"], strict=True)}


def fit_linear(texts: Sequence[str], y, *, num_labels: int, seed: int = 0, grid: Sequence[float] = DEFAULT_GRID,
               inner_folds: int = INNER_FOLDS) -> LinearMember:
    """Fit the linear member on training rows only (never the held-out fold).

    Chooses C from `grid` by inner CV (`select_c`; ties go to the smaller C, the stronger
    regularisation), then fits CalibratedClassifierCV(LinearSVC(C), method="sigmoid") over the same
    inner folds. Deterministic for a given (texts, y, seed).
    """
    texts = list(texts)
    y = _check(texts, y, num_labels, inner_folds)
    grid = sorted(float(c) for c in grid)
    if not grid or min(grid) <= 0:
        raise DataError(f"grid is {grid}, but must hold at least one C > 0, e.g. {list(DEFAULT_GRID)}")
    vectorizer = make_vectorizer()
    features = vectorizer.fit_transform(texts)  # (N, V) sparse
    cv_scores = select_c(features, y, grid=grid, seed=seed, inner_folds=inner_folds)
    best_c = grid[int(np.argmax([cv_scores[c] for c in grid]))]  # first maximum: the smaller C
    calibrated = CalibratedClassifierCV(
        LinearSVC(C=best_c, class_weight="balanced", random_state=seed), method="sigmoid",
        cv=StratifiedKFold(inner_folds, shuffle=True, random_state=seed), ensemble=False)
    calibrated.fit(features, y)
    pipeline = Pipeline([("tfidf", vectorizer), ("clf", calibrated)])  # both steps already fitted
    params = {"C": best_c, "inner_folds": inner_folds, "calibration": "sigmoid", "seed": seed}  # JSON-able
    return LinearMember(pipeline=pipeline, num_labels=num_labels, params=params, cv_scores=cv_scores)
