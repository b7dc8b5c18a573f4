"""The linear member on the real data: per-fold level-2 macro-F1, log-loss, CPU seconds; two-member ensembles.

    python -m benchmarks.linear_reference [--data ../shared/data/datagrand2021/train.csv --folds 5 --seed 0]
    python -m benchmarks.linear_reference --compare-probabilities   # + the older probability study on fold 0

Over StratifiedKFold(folds, shuffle=True, random_state=seed) (as model.data.fold_indices), side by
side in one run, each fitted on the training rows of the fold and scored on its held-out rows:

- `member`: model.linear.fit_linear as shipped (default grid: C=0.5 fixed; LinearSVC(balanced)
  with probabilities softmax(decision / T), T fitted on inner out-of-fold decision values),
- `member, C by inner CV`: the same with C chosen from model.linear.SEARCH_GRID by the inner CV,
- `reference`: TF-IDF + LinearSVC(C=0.5, class_weight=balanced) (published on train.csv:
  0.518 ± 0.010, folds 0.516 0.528 0.513 0.504 0.532); it has no probabilities, so its log-loss is
  that of softmax(decision) at T=1, the uncalibrated scores an ensemble would otherwise average,
- `sigmoid`: the previous member design, CalibratedClassifierCV(LinearSVC(C=0.5, balanced),
  method="sigmoid", ensemble=False) over the same 3 inner folds, for the calibration comparison.

Log-loss is scikit-learn's, over all labels, probabilities clipped at 1e-15. Then the OOF macro-F1
pooled over all rows, alone and for two-member ensembles through results.ensemble (equal weights,
nothing selected): `prob` (probability mean; the reference enters as softmax(decision)), `rank`
(per-row class ranks, a Borda count), and for comparison the former column-rank rule (each class
column ranked over the rows of one held-out fold).

std is over folds with ddof=0, as the published reference. CPU seconds per fold (process time; the
machines here are shared, so wall time is noisier; it is printed too). Runs single-threaded.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import rankdata
from sklearn.calibration import CalibratedClassifierCV
from sklearn.metrics import log_loss
from sklearn.model_selection import StratifiedKFold

from model.data import LabelSet, fold_indices, read_table
from model.errors import DataError
from model.linear import (
    DEFAULT_GRID,
    INNER_FOLDS,
    REFERENCE_C,
    SEARCH_GRID,
    fit_linear,
    make_svc,
    make_vectorizer,
    reference_pipeline,
    softmax,
)
from results.ensemble import macro_f1, nested_score

REPO = Path(__file__).resolve().parents[1]
# ../shared from the repository root; one level further up from a git worktree under a sibling folder.
DEFAULT_DATA = next((p for p in (REPO.parent / "shared" / "data" / "datagrand2021" / "train.csv",
                                 REPO.parents[1] / "shared" / "data" / "datagrand2021" / "train.csv") if p.is_file()),
                    REPO.parent / "shared" / "data" / "datagrand2021" / "train.csv")
PUBLISHED = "0.518 ± 0.010 (folds 0.516 0.528 0.513 0.504 0.532)"
VARIANTS = ("member", "member, C by inner CV", "reference", "sigmoid")


def timed(fn, *args, **kwargs):
    """fn(*args, **kwargs) and its (wall, CPU) seconds."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    return out, (time.perf_counter() - wall, time.process_time() - cpu)


def fit_sigmoid(texts, y, *, seed: int):
    """The previous member: TF-IDF + CalibratedClassifierCV(LinearSVC(C=0.5), sigmoid, ensemble=False)."""
    vectorizer = make_vectorizer()
    features = vectorizer.fit_transform(texts)
    calibrated = CalibratedClassifierCV(make_svc(c=REFERENCE_C, seed=seed), method="sigmoid",
                                        cv=StratifiedKFold(INNER_FOLDS, shuffle=True, random_state=seed),
                                        ensemble=False).fit(features, y)
    return vectorizer, calibrated


def column_rank_predict(scores: list[np.ndarray], fold_of: np.ndarray) -> np.ndarray:
    """The former `rank` rule: each class column ranked over the rows of one held-out fold, summed."""
    pred = np.empty(len(fold_of), dtype=np.int64)
    for f in np.unique(fold_of):
        rows = fold_of == f
        pred[rows] = sum(rankdata(s[rows], method="average", axis=0) for s in scores).argmax(axis=1)
    return pred


def compare_probabilities(texts, y, train, held, num_labels: int, seed: int) -> None:
    """Calibrated LinearSVC (both ensemble settings) against LogisticRegression's own probabilities."""
    from sklearn.linear_model import LogisticRegression

    vectorizer = make_vectorizer()
    a, b = vectorizer.fit_transform(texts[train]), vectorizer.transform(texts[held])
    inner = StratifiedKFold(INNER_FOLDS, shuffle=True, random_state=seed)
    candidates = {}
    for c in (0.1, 0.3, 1.0):
        for ensemble in (False, True):
            candidates[f"calibrated LinearSVC C={c} ensemble={ensemble}"] = CalibratedClassifierCV(
                make_svc(c=c, seed=seed), method="sigmoid", cv=inner, ensemble=ensemble)
    for c in (3.0, 10.0, 30.0):
        candidates[f"LogisticRegression lbfgs C={c}"] = LogisticRegression(C=c, class_weight="balanced", max_iter=1000)
    print("\n| probabilities (fold 0, fixed C) | macro-F1 | log-loss | wall s | CPU s |\n|---|---|---|---|---|")
    for name, estimator in candidates.items():
        _, (wall, cpu) = timed(estimator.fit, a, y[train])
        proba = np.zeros((len(held), num_labels))
        proba[:, estimator.classes_] = estimator.predict_proba(b)
        score = macro_f1(y[held], proba.argmax(axis=1), num_labels=num_labels)
        loss = log_loss(y[held], np.clip(proba, 1e-15, 1), labels=np.arange(num_labels))
        print(f"| {name} | {score:.4f} | {loss:.4f} | {wall:.1f} | {cpu:.1f} |", flush=True)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help=f"training CSV id,text,label (default {DEFAULT_DATA})")
    parser.add_argument("--folds", type=int, default=5, help="stratified folds")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split and the members")
    parser.add_argument("--compare-probabilities", action="store_true",
                        help="also compare probability sources on fold 0 (about 5 minutes: LogisticRegression is slow)")
    return parser.parse_args()


def load(path: Path):
    if not path.is_file():
        sys.exit(f"error: training data not found at {path}. Pass --data PATH to a train.csv (header "
                 "id,text,label); the real file lives at ../shared/data/datagrand2021/train.csv from the repo "
                 "root (see its README)")
    try:
        return read_table(path)
    except DataError as err:
        sys.exit(f"error: {err}")


def run_fold(fold: int, train: np.ndarray, held: np.ndarray, texts: np.ndarray, y: np.ndarray, proba: dict,
             decision: np.ndarray, *, num_labels: int, seed: int) -> dict:
    """Fit every variant on `train`, fill its OOF rows `held` in `proba`/`decision`; the fold's table row."""
    every = np.arange(num_labels)
    row = {"fold": fold, "rows": len(held), "s": {}, "f1": {}, "loss": {}}
    xs, ys = texts[train], y[train]
    member, row["s"]["member"] = timed(fit_linear, xs, ys, num_labels=num_labels, seed=seed)
    searched, row["s"]["member, C by inner CV"] = timed(fit_linear, xs, ys, num_labels=num_labels,
                                                        seed=seed, grid=SEARCH_GRID)
    reference, row["s"]["reference"] = timed(reference_pipeline(seed=seed).fit, xs, ys)
    (vectorizer, sigmoid), row["s"]["sigmoid"] = timed(fit_sigmoid, xs, ys, seed=seed)
    proba["member"][held] = member.predict_proba(texts[held])
    proba["member, C by inner CV"][held] = searched.predict_proba(texts[held])
    decision[np.ix_(held, reference.classes_)] = reference.decision_function(texts[held])
    proba["reference"][held] = softmax(decision[held])  # absent labels (-inf) get 0
    proba["sigmoid"][np.ix_(held, sigmoid.classes_)] = sigmoid.predict_proba(vectorizer.transform(texts[held]))
    for v in VARIANTS:
        p = proba[v][held]
        row["f1"][v] = macro_f1(y[held], p.argmax(axis=1), num_labels=num_labels)
        row["loss"][v] = log_loss(y[held], np.clip(p, 1e-15, 1), labels=every)
    row.update(T=member.temperature, C_search=searched.params["C"], T_search=searched.temperature,
               same=bool((proba["member"][held].argmax(1) == decision[held].argmax(1)).all()))
    print(f"fold {fold}: " + ", ".join(f"{v} {row['f1'][v]:.4f}/{row['loss'][v]:.3f}" for v in VARIANTS),
          file=sys.stderr, flush=True)
    return row


def print_fold_tables(rows: list[dict]) -> None:
    for key, title, fmt in (("f1", "held-out level-2 macro-F1", "{:.4f}"), ("loss", "held-out log-loss", "{:.4f}"),
                            ("s", "seconds per fold, CPU (wall)", None)):
        print(f"| {title} | " + " | ".join(VARIANTS) + " |\n" + "|---" * (len(VARIANTS) + 1) + "|")
        for r in rows:
            if fmt:
                cells = [fmt.format(r[key][v]) for v in VARIANTS]
            else:
                cells = [f"{r[key][v][1]:.1f} ({r[key][v][0]:.1f})" for v in VARIANTS]
            print(f"| fold {r['fold']} ({r['rows']} rows) | " + " | ".join(cells) + " |")
        if fmt:
            stats = [np.array([r[key][v] for r in rows]) for v in VARIANTS]
            print("| mean ± std | " + " | ".join(f"{a.mean():.4f} ± {a.std():.4f}" for a in stats) + " |\n")
        else:
            print("| mean | " + " | ".join(f"{np.mean([r[key][v][1] for r in rows]):.1f} "
                                           f"({np.mean([r[key][v][0] for r in rows]):.1f})" for v in VARIANTS) + " |\n")
    print("| fold | member T | member labels == reference labels | inner-CV C | its T |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['fold']} | {r['T']:.4f} | {r['same']} | {r['C_search']} | {r['T_search']:.4f} |")
    print(f"\npublished reference: {PUBLISHED}")


def print_oof_table(proba: dict, y: np.ndarray, fold_of: np.ndarray, *, num_labels: int) -> None:
    """Out-of-fold, pooled over all rows; the two-member ensembles have equal weights (nothing selected)."""
    print("\n| OOF, pooled over all rows | macro-F1 |\n|---|---|")
    for v in VARIANTS:
        print(f"| {v} alone | {macro_f1(y, proba[v].argmax(axis=1), num_labels=num_labels):.4f} |")
    for v in ("member", "member, C by inner CV", "sigmoid"):
        pair = [proba[v], proba["reference"]]
        prob = nested_score(pair, y, fold_of, method="prob", selection="all")
        rank = nested_score(pair, y, fold_of, method="rank", selection="all")
        column = macro_f1(y, column_rank_predict(pair, fold_of), num_labels=num_labels)
        print(f"| {v} + reference: prob average | {prob.score:.4f} |")
        print(f"| {v} + reference: rank average (per-row Borda) | {rank.score:.4f} |")
        print(f"| {v} + reference: former column ranks within each fold | {column:.4f} |")
    for v in ("member", "sigmoid"):
        column = macro_f1(y, column_rank_predict([proba[v]], fold_of), num_labels=num_labels)
        print(f"| {v} alone, former column ranks within each fold | {column:.4f} |")


def main() -> None:
    args = parse_args()
    frame = load(args.data)
    labels = LabelSet.from_labels(frame["label"])
    y, texts, names = labels.encode(frame["label"]), frame["text"].to_numpy(), frame["label"].tolist()
    num_labels = len(labels.level2)
    proba = {v: np.zeros((len(y), num_labels)) for v in VARIANTS}  # OOF probabilities
    decision = np.full((len(y), num_labels), -np.inf)  # reference OOF decision values
    fold_of = np.empty(len(y), dtype=np.int64)
    rows = []
    for fold in range(args.folds):
        train, held = fold_indices(names, folds=args.folds, fold=fold, seed=args.seed)
        fold_of[held] = fold
        rows.append(run_fold(fold, train, held, texts, y, proba, decision, num_labels=num_labels, seed=args.seed))
    print(f"\n{args.data} ({len(y)} rows, {num_labels} labels), StratifiedKFold({args.folds}, shuffle=True, "
          f"random_state={args.seed}); member grid C in {list(DEFAULT_GRID)}, inner-CV grid {list(SEARCH_GRID)}, "
          f"reference C={REFERENCE_C}\n")
    print_fold_tables(rows)
    print_oof_table(proba, y, fold_of, num_labels=num_labels)
    if args.compare_probabilities:
        train, held = fold_indices(names, folds=args.folds, fold=0, seed=args.seed)
        compare_probabilities(texts, y, train, held, num_labels, args.seed)


if __name__ == "__main__":
    main()
