"""The linear reference member: TF-IDF over the tokens + LinearSVC(balanced), temperature-scaled (scikit-learn).

A cheap, strong, differently-biased member for ensembles of fine-tuned encoders, and the reference
every searched config must beat. `fit_linear(texts, y, num_labels=..., seed=...)` returns a
`LinearMember` whose `predict_proba(texts)` is `(N, num_labels)`, columns aligned to the label
indices even for labels absent from the training rows (their column is 0).

- Features: TfidfVectorizer over the space-separated tokens (`token_pattern=r"\\S+"`, so one-digit
  ids and the punctuation tokens count), 1-2 grams, sublinear tf, min_df 2.
- Classifier: LinearSVC(C=0.5, class_weight="balanced"), refitted on all training rows: its labels
  are exactly the reference's (`reference_pipeline`, 0.518 on the real train.csv).
- Probabilities: softmax(decision_function / T), one temperature T > 0 fitted by minimising the
  log-loss of the out-of-fold decision values of an inner StratifiedKFold(3) over the training
  rows (`fit_temperature`). One positive scalar keeps every row's class order, so the argmax, and
  with it the balanced weights' effect on the rare labels, is untouched.
- C: `grid` (default `(0.5,)`) is kept so that C can still be chosen by the inner CV (macro-F1 of
  the argmax over the same inner folds, `SEARCH_GRID` measured below); with one value nothing is
  chosen and the inner folds serve only T.
- The vectorizer is fitted once on all training rows and shared by the inner folds: it sees the
  inner validation rows' texts (document frequencies, no labels) and saves a refit per split. The
  held-out fold is never seen: callers pass only the training rows.

Measured on the real train.csv, StratifiedKFold(5, shuffle=True, random_state=0), held-out
level-2 macro-F1 / log-loss, mean ± std over folds, CPU seconds per fold on the shared 2-core
machine, range over two runs (`python -m benchmarks.linear_reference` prints the per-fold table):

    this member: C=0.5, temperature (T = 0.163-0.164)  0.518 ± 0.010 / 1.417 ± 0.042   2.8-3.1 CPU-s
    C by inner CV from (0.1, 0.3, 0.5, 1.0) + T        0.515 ± 0.010 / 1.417 ± 0.033   7.6-8.2 CPU-s
    reference LinearSVC(C=0.5), softmax at T=1          0.518 ± 0.010 / 2.757 ± 0.002   1.3-1.6 CPU-s
    previous member: sigmoid CalibratedClassifierCV     0.511 ± 0.007 / 1.166 ± 0.020   2.9-3.0 CPU-s
      (C=0.5, ensemble=False, same 3 inner folds)

- The member's labels equal the reference's on every row of every fold, hence the same F1.
- The inner-CV choice of C does not help: it picked 1.0, 0.3, 0.5, 1.0, 0.5 and lost 0.003 on
  average (worse on 3 folds, equal on 2) at 2.6-2.7 times the cost, so C is fixed at 0.5.
- The price of keeping the balanced argmax is log-loss: the per-class sigmoids learn the class
  frequencies back (fewer rare-label predictions, 0.007 less macro-F1) and reach 1.17 nats, where
  a single temperature cannot move probability between classes. T fitted on the held-out fold
  itself (an oracle) only reaches 1.370 (fold 0) and 1.431 (fold 2) against 1.388 and 1.464 with
  the inner T, so the gap is the design's, not the fit's. The inner T is slightly low (0.163 vs
  the oracle's 0.186-0.195: the inner models, trained on 2/3 of the rows, have smaller margins than
  the refit on all of them).

Why LinearSVC and not LogisticRegression's own probabilities, measured on outer fold 0 with fixed
C, wall seconds on the shared 2-core machine under load (exploratory runs; sigmoid calibration
with scikit-learn's default ensemble=True there; `python -m benchmarks.linear_reference
--compare-probabilities` reruns the first two rows):

    calibrated LinearSVC C=0.1 / 0.3 / 1.0      macro-F1 0.519 / 0.513 / 0.516, log-loss 1.19 / 1.18 / 1.20, 3-12 s
    LogisticRegression lbfgs balanced C=3/10/30 macro-F1 0.520 / 0.525 / 0.516, log-loss 1.47 / 1.24 / 1.17, 36-114 s
    one-vs-rest liblinear LogisticRegression    macro-F1 0.508 / 0.511 / 0.512, log-loss 1.43 / 1.22 / 1.17, 70-135 s

The same accuracy within fold noise (±0.01) at a tenth to a thirtieth of the cost.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.metrics import f1_score
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.svm import LinearSVC

from model.errors import DamagedFile, DataError

DEFAULT_GRID = (0.5,)  # LinearSVC C; a longer grid, e.g. SEARCH_GRID, turns on the inner-CV choice
SEARCH_GRID = (0.1, 0.3, 0.5, 1.0)  # the grid measured against the fixed C (module docstring)
INNER_FOLDS = 3
# The reference LinearSVC without calibration (published on train.csv: 0.518 ± 0.010).
REFERENCE_C = 0.5
# Search interval for log T. LinearSVC decision values are O(1) (margins ~ ±1), so the fitted T on
# the real data is around 0.1-0.2; e^±7 ~ [1e-3, 1e3] leaves room on both sides for any scale.
LOG_T_BOUNDS = (-7.0, 7.0)


def make_vectorizer() -> TfidfVectorizer:
    """TF-IDF over the space-separated tokens: 1-2 grams, sublinear tf, min_df 2."""
    return TfidfVectorizer(token_pattern=r"\S+", lowercase=False, ngram_range=(1, 2), sublinear_tf=True, min_df=2)


def make_svc(*, c: float, seed: int) -> LinearSVC:
    """LinearSVC(C, class_weight=balanced): one-vs-rest, squared hinge, liblinear's dual solver."""
    return LinearSVC(C=c, class_weight="balanced", random_state=seed)


def reference_pipeline(*, seed: int = 0, c: float = REFERENCE_C) -> Pipeline:
    """The fixed reference: TF-IDF + LinearSVC(C=0.5, class_weight=balanced), no calibration (labels only)."""
    return Pipeline([("tfidf", make_vectorizer()), ("clf", make_svc(c=c, seed=seed))])


def decision_matrix(decision: np.ndarray) -> np.ndarray:
    """LinearSVC.decision_function -> (N, K) scores, one column per class in `classes_`.

    With two classes scikit-learn returns one column (N,), the score of classes_[1]; as a softmax
    over (-d/2, d/2) that is sigmoid(d), the binary counterpart of the multi-class softmax.
    """
    decision = np.asarray(decision, dtype=np.float64)
    if decision.ndim == 1:
        return np.column_stack([-decision / 2, decision / 2])
    return decision


def softmax(scores: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """(N, K) scores -> (N, K) softmax(scores / temperature), rows summing to 1."""
    return np.exp(log_softmax(scores / temperature, axis=1))


def temperature_log_loss(decision: np.ndarray, y_columns: np.ndarray, temperature: float) -> float:
    """Mean negative log-likelihood of softmax(decision / T) at the true columns `y_columns` (N,)."""
    log_p = log_softmax(decision / temperature, axis=1)
    return float(-log_p[np.arange(len(y_columns)), y_columns].mean())


def fit_temperature(decision: np.ndarray, y_columns: np.ndarray) -> float:
    """The T > 0 minimising the log-loss of softmax(decision / T) (Guo et al., ICML 2017).

    `decision` (N, K) must be out-of-sample for its rows (the inner folds' out-of-fold decision
    values), else T only measures how well the SVC fits its own training rows. One scalar keeps
    every row's class order, so the argmax (the member's labels) is unchanged.

    Why bounded Brent over log T (scipy.optimize.minimize_scalar) rather than a grid: the log-loss
    is convex in beta = 1/T (a log-sum-exp of functions linear in beta minus a linear term), hence
    unimodal in log T, so a bracketing 1-D search finds the global minimum; it needs about 25
    evaluations (each O(N K), milliseconds) for |Δlog T| < 1e-4, where a grid of the same
    resolution over the same range would need 10^5 points, and a coarse grid would leave a
    measurable amount of log-loss on the table. Log T, not T, so that the interval spans several
    orders of magnitude evenly and T stays positive.
    """
    result = minimize_scalar(lambda log_t: temperature_log_loss(decision, y_columns, float(np.exp(log_t))),
                             bounds=LOG_T_BOUNDS, method="bounded", options={"xatol": 1e-4})
    return float(np.exp(result.x))


@dataclass(frozen=True)
class LinearMember:
    """A fitted TF-IDF + LinearSVC(balanced) with temperature-scaled probabilities over all labels.

    `pipeline` is TfidfVectorizer -> LinearSVC (its `classes_` are the labels seen in training);
    probabilities are softmax(decision_function / temperature), placed in the columns of their labels.
    """

    pipeline: Pipeline = field(repr=False)
    num_labels: int
    params: dict  # the chosen hyperparameters: C, temperature, inner_folds, calibration, seed (JSON-able)
    cv_scores: dict  # {C: inner-CV macro-F1} over the grid

    @property
    def temperature(self) -> float:
        return self.params["temperature"]

    def decision_function(self, texts: Sequence[str]) -> np.ndarray:
        """(N, num_labels) raw LinearSVC scores; labels absent from the training rows get -inf."""
        present = decision_matrix(self.pipeline.decision_function(list(texts)))  # (N, len(classes_))
        out = np.full((present.shape[0], self.num_labels), -np.inf)
        out[:, self.pipeline.classes_] = present
        return out

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """(N, num_labels) softmax(decision / T); labels absent from the training rows get 0."""
        present = decision_matrix(self.pipeline.decision_function(list(texts)))  # (N, len(classes_))
        out = np.zeros((present.shape[0], self.num_labels))
        out[:, self.pipeline.classes_] = softmax(present, self.temperature)
        return out

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        """(N,) labels: the argmax of predict_proba, which is the LinearSVC's own prediction."""
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


def inner_decisions(features, y: np.ndarray, *, c: float, seed: int, inner_folds: int) -> tuple[np.ndarray, float]:
    """Out-of-fold decision values (N, K) of LinearSVC(C, balanced) over an inner stratified CV of
    these rows only, and the mean over inner folds of their macro-F1 (labels present in `y`).

    `features` is the TF-IDF matrix of the training rows. Columns follow np.unique(y): every inner
    training split holds every label, because `_check` asks for at least `inner_folds` rows each.
    """
    present = np.unique(y)
    oof = np.zeros((len(y), len(present)))
    scores = []
    for fit_rows, val_rows in StratifiedKFold(inner_folds, shuffle=True, random_state=seed).split(features, y):
        svc = make_svc(c=c, seed=seed).fit(features[fit_rows], y[fit_rows])
        if not np.array_equal(svc.classes_, present):  # guaranteed by _check; a silent misalignment otherwise
            raise DataError(f"an inner fold lacks labels {np.setdiff1d(present, svc.classes_).tolist()}: "
                            "raise their row counts or lower inner_folds")
        oof[val_rows] = decision_matrix(svc.decision_function(features[val_rows]))
        pred = present[oof[val_rows].argmax(axis=1)]
        scores.append(f1_score(y[val_rows], pred, labels=present, average="macro", zero_division=0.0))
    return oof, float(np.mean(scores))


def fit_linear(texts: Sequence[str], y, *, num_labels: int, seed: int = 0, grid: Sequence[float] = DEFAULT_GRID,
               inner_folds: int = INNER_FOLDS) -> LinearMember:
    """Fit the linear member on training rows only (never the held-out fold).

    For each C in `grid`, an inner stratified CV (`inner_decisions`) gives out-of-fold decision
    values and their macro-F1; the best C wins (ties to the smaller C, the stronger regularisation).
    The temperature is fitted on that C's out-of-fold decision values (`fit_temperature`), and
    LinearSVC(C) is refitted on all training rows. With a one-point grid (the default, C=0.5)
    nothing is chosen and the inner CV only serves the temperature. Costs `inner_folds * len(grid)
    + 1` LinearSVC fits. Deterministic for a given (texts, y, seed).
    """
    texts = list(texts)
    y = _check(texts, y, num_labels, inner_folds)
    grid = sorted(float(c) for c in grid)
    if not grid or min(grid) <= 0 or len(set(grid)) != len(grid):
        raise DataError(f"grid is {grid}, but must hold distinct values of C > 0, e.g. {list(SEARCH_GRID)}")
    vectorizer = make_vectorizer()
    features = vectorizer.fit_transform(texts)  # (N, V) sparse
    decisions, cv_scores = {}, {}
    for c in grid:
        decisions[c], cv_scores[c] = inner_decisions(features, y, c=c, seed=seed, inner_folds=inner_folds)
    best_c = grid[int(np.argmax([cv_scores[c] for c in grid]))]  # first maximum: the smaller C
    temperature = fit_temperature(decisions[best_c], np.searchsorted(np.unique(y), y))
    svc = make_svc(c=best_c, seed=seed).fit(features, y)
    pipeline = Pipeline([("tfidf", vectorizer), ("clf", svc)])  # both steps already fitted
    params = {"C": best_c, "temperature": temperature, "inner_folds": inner_folds, "calibration": "temperature",
              "seed": seed}
    return LinearMember(pipeline=pipeline, num_labels=num_labels, params=params, cv_scores=cv_scores)


# --- the member as a file of arrays (linear.npz): data only, never unpickled ---

# What a TfidfVectorizer's transform depends on besides its vocabulary and idf.
VECTORIZER_SETTINGS = ("token_pattern", "lowercase", "ngram_range", "sublinear_tf", "norm", "use_idf", "smooth_idf",
                       "analyzer", "binary", "strip_accents")
LINEAR_ARRAYS = ("terms", "idf", "coef", "intercept", "classes", "meta")


def linear_bytes(member: LinearMember) -> bytes:
    """linear.npz: the fitted vectorizer's terms (by column) and idf, the SVC's coef, intercept and
    classes, and a JSON `meta` (labels, params, inner-CV scores, vectorizer settings); no pickles."""
    vectorizer, svc = member.pipeline.named_steps["tfidf"], member.pipeline.named_steps["clf"]
    terms = sorted(vectorizer.vocabulary_, key=vectorizer.vocabulary_.get)
    settings = {k: v for k, v in vectorizer.get_params().items() if k in VECTORIZER_SETTINGS}
    meta = {"format": 1, "num_labels": member.num_labels, "params": member.params,
            "cv_scores": [[float(c), float(v)] for c, v in member.cv_scores.items()], "vectorizer": settings}
    buffer = io.BytesIO()
    np.savez_compressed(buffer, terms=np.asarray(terms, dtype=np.str_), idf=vectorizer.idf_, coef=svc.coef_,
                        intercept=svc.intercept_, classes=svc.classes_, meta=np.asarray(json.dumps(meta)))
    return buffer.getvalue()


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in LINEAR_ARRAYS if k not in data.files]
            if missing:
                raise DamagedFile(path, f"not a readable linear member: no array {', '.join(missing)}")
            return {k: data[k] for k in LINEAR_ARRAYS}
    except DamagedFile:
        raise
    except OSError as err:
        raise DamagedFile(path, err.strerror or str(err)) from None
    except (ValueError, EOFError, zipfile.BadZipFile) as err:
        raise DamagedFile(path, f"not a readable linear member ({type(err).__name__}: {err})") from None
    except Exception as err:  # zlib.error of a damaged archive
        if type(err).__module__ == "zlib":
            raise DamagedFile(path, f"not a readable linear member ({err})") from None
        raise


def _check_arrays(a: dict[str, np.ndarray], meta: dict, path: Path) -> None:
    k, v = a["coef"].shape if a["coef"].ndim == 2 else (0, 0)
    labels = meta["num_labels"]
    problems = [
        (a["terms"].ndim != 1 or a["idf"].shape != a["terms"].shape or v != len(a["terms"]),
         "coef, terms and idf do not have matching shapes"),
        (a["intercept"].shape != (k,) or not 2 <= len(a["classes"]) <= labels
         or k != (1 if len(a["classes"]) == 2 else len(a["classes"])), "coef, intercept and classes do not match"),
        (not np.issubdtype(a["classes"].dtype, np.integer) or len(np.unique(a["classes"])) != len(a["classes"])
         or a["classes"].min() < 0 or a["classes"].max() >= labels, f"classes are not distinct labels < {labels}"),
        (not all(np.isfinite(a[key]).all() for key in ("idf", "coef", "intercept")), "it holds NaN or inf"),
    ]
    for bad, problem in problems:
        if bad:
            raise DamagedFile(path, f"not a readable linear member: {problem}")


def load_linear(path: str | Path) -> LinearMember:
    """The member `linear_bytes` wrote; a missing, cut-short or foreign file is `DamagedFile`."""
    path = Path(path)
    arrays = _read_arrays(path)
    try:
        meta = json.loads(str(arrays["meta"]))
        temperature, labels = float(meta["params"]["temperature"]), meta["num_labels"]
        settings = {k: tuple(v) if k == "ngram_range" else v for k, v in meta["vectorizer"].items()}
        cv_scores = {float(c): float(v) for c, v in meta["cv_scores"]}
    except (ValueError, KeyError, TypeError) as err:
        raise DamagedFile(path, f"not a readable linear member: its meta is not the one confirm writes ({err!r})"
                          ) from None
    if not (isinstance(labels, int) and labels >= 2 and np.isfinite(temperature) and temperature > 0
            and set(settings) <= set(VECTORIZER_SETTINGS)):
        raise DamagedFile(path, "not a readable linear member: num_labels, temperature or settings out of range")
    _check_arrays(arrays, meta, path)
    vectorizer = TfidfVectorizer(**settings, vocabulary={t: i for i, t in enumerate(arrays["terms"].tolist())})
    vectorizer.idf_ = arrays["idf"]
    params = meta["params"]
    svc = make_svc(c=float(params.get("C", REFERENCE_C)), seed=int(params.get("seed", 0)))
    svc.coef_, svc.intercept_, svc.classes_ = arrays["coef"], arrays["intercept"], arrays["classes"]
    svc.n_features_in_ = arrays["coef"].shape[1]
    return LinearMember(pipeline=Pipeline([("tfidf", vectorizer), ("clf", svc)]), num_labels=labels, params=params,
                        cv_scores=cv_scores)
