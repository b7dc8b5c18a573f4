"""The linear reference member on the real data: per-fold level-2 macro-F1, chosen C, seconds.

    python -m benchmarks.linear_reference [--data ../shared/data/datagrand2021/train.csv --folds 5 --seed 0]
    python -m benchmarks.linear_reference --compare-probabilities   # + the probability study on fold 0

Over StratifiedKFold(folds, shuffle=True, random_state=seed) (as model.data.fold_indices), side by
side in one run:

- `linear`: model.linear.fit_linear (TF-IDF 1-2 grams + LinearSVC with C chosen by inner CV on the
  training rows, sigmoid-calibrated probabilities),
- `reference`: the fixed TF-IDF + LinearSVC(C=0.5, class_weight=balanced) without calibration
  (published on train.csv: 0.518 ± 0.010, folds 0.516 0.528 0.513 0.504 0.532),

then the OOF macro-F1 of both pooled over all rows and of their two-member ensembles through
results.ensemble (equal weights, nothing selected): `prob` averages the linear member's
probabilities with a softmax of the reference's decision values (the reference has no calibrated
probabilities, so that member is flat and the average leans to the linear member), `rank` averages
per-class ranks of the probabilities and the raw decision values (ranked within each fold).

std is over folds with ddof=0, as the published reference. Seconds are wall-clock and CPU per fold
(the machines here are shared: CPU seconds are the steadier number). Runs single-threaded.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from model.data import LabelSet, fold_indices, read_table
from model.errors import DataError
from model.linear import DEFAULT_GRID, REFERENCE_C, fit_linear, make_vectorizer, reference_pipeline
from results.ensemble import macro_f1, nested_score

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "datagrand2021" / "train.csv"
PUBLISHED = "0.518 ± 0.010 (folds 0.516 0.528 0.513 0.504 0.532)"


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def compare_probabilities(texts, y, train, held, num_labels: int, seed: int) -> None:
    """Calibrated LinearSVC (both ensemble settings) against LogisticRegression's own probabilities."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss
    from sklearn.model_selection import StratifiedKFold
    from sklearn.svm import LinearSVC

    vectorizer = make_vectorizer()
    a, b = vectorizer.fit_transform(texts[train]), vectorizer.transform(texts[held])
    inner = StratifiedKFold(3, shuffle=True, random_state=seed)
    candidates = {}
    for c in DEFAULT_GRID:
        for ensemble in (False, True):
            candidates[f"calibrated LinearSVC C={c} ensemble={ensemble}"] = CalibratedClassifierCV(
                LinearSVC(C=c, class_weight="balanced", random_state=seed), method="sigmoid", cv=inner,
                ensemble=ensemble)
    for c in (3.0, 10.0, 30.0):
        candidates[f"LogisticRegression lbfgs C={c}"] = LogisticRegression(C=c, class_weight="balanced", max_iter=1000)
    print("\n| probabilities (fold 0, fixed C) | macro-F1 | log-loss | wall s | CPU s |\n|---|---|---|---|---|")
    for name, estimator in candidates.items():
        wall, cpu = time.perf_counter(), time.process_time()
        estimator.fit(a, y[train])
        proba = np.zeros((len(held), num_labels))
        proba[:, estimator.classes_] = estimator.predict_proba(b)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        score = macro_f1(y[held], proba.argmax(axis=1), num_labels=num_labels)
        loss = log_loss(y[held], np.clip(proba, 1e-15, 1), labels=np.arange(num_labels))
        print(f"| {name} | {score:.4f} | {loss:.4f} | {wall:.1f} | {cpu:.1f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help=f"training CSV id,text,label (default {DEFAULT_DATA})")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compare-probabilities", action="store_true",
                        help="also compare probability sources on fold 0 (about 5 minutes: LogisticRegression is slow)")
    args = parser.parse_args()
    if not args.data.is_file():
        sys.exit(f"error: training data not found at {args.data}. Pass --data PATH to a train.csv (header "
                 "id,text,label); the real file lives at ../shared/data/datagrand2021/train.csv from the repo "
                 "root (see its README)")
    try:
        frame = read_table(args.data)
    except DataError as err:
        sys.exit(f"error: {err}")
    labels = LabelSet.from_labels(frame["label"])
    y = labels.encode(frame["label"])
    texts = frame["text"].to_numpy()
    num_labels = len(labels.level2)
    names = frame["label"].tolist()

    proba = np.zeros((len(y), num_labels))  # linear member OOF probabilities
    decision = np.zeros((len(y), num_labels))  # reference OOF decision values
    fold_of = np.empty(len(y), dtype=np.int64)
    rows = []
    for fold in range(args.folds):
        train, held = fold_indices(names, folds=args.folds, fold=fold, seed=args.seed)
        fold_of[held] = fold
        wall, cpu = time.perf_counter(), time.process_time()
        member = fit_linear(texts[train], y[train], num_labels=num_labels, seed=args.seed)
        proba[held] = member.predict_proba(texts[held])
        linear_s = (time.perf_counter() - wall, time.process_time() - cpu)
        wall, cpu = time.perf_counter(), time.process_time()
        reference = reference_pipeline(seed=args.seed).fit(texts[train], y[train])
        decision[np.ix_(held, reference.classes_)] = reference.decision_function(texts[held])
        if len(reference.classes_) < num_labels:  # a label absent from training: never predicted
            absent = np.setdiff1d(np.arange(num_labels), reference.classes_)
            decision[np.ix_(held, absent)] = -np.inf
        reference_s = (time.perf_counter() - wall, time.process_time() - cpu)
        rows.append({
            "fold": fold, "rows": len(held),
            "linear": macro_f1(y[held], proba[held].argmax(axis=1), num_labels=num_labels),
            "C": member.params["C"], "inner": member.cv_scores[member.params["C"]], "linear_s": linear_s,
            "reference": macro_f1(y[held], decision[held].argmax(axis=1), num_labels=num_labels),
            "reference_s": reference_s,
        })
        r = rows[-1]
        print(f"fold {fold}: linear {r['linear']:.4f} (C={r['C']}), reference {r['reference']:.4f}", file=sys.stderr,
              flush=True)

    print(f"\n{args.data} ({len(y)} rows, {num_labels} labels), StratifiedKFold({args.folds}, shuffle=True, "
          f"random_state={args.seed}); linear grid C in {list(DEFAULT_GRID)}, reference C={REFERENCE_C}\n")
    print("| fold | held-out rows | linear macro-F1 | chosen C | inner-CV macro-F1 | linear s wall/CPU "
          "| reference macro-F1 | reference s wall/CPU |\n|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['fold']} | {r['rows']} | {r['linear']:.4f} | {r['C']} | {r['inner']:.4f} "
              f"| {r['linear_s'][0]:.1f} / {r['linear_s'][1]:.1f} | {r['reference']:.4f} "
              f"| {r['reference_s'][0]:.1f} / {r['reference_s'][1]:.1f} |")
    lin, ref = np.array([r["linear"] for r in rows]), np.array([r["reference"] for r in rows])
    print(f"| mean ± std | | {lin.mean():.4f} ± {lin.std():.4f} | | | "
          f"{np.mean([r['linear_s'][0] for r in rows]):.1f} / {np.mean([r['linear_s'][1] for r in rows]):.1f} "
          f"| {ref.mean():.4f} ± {ref.std():.4f} | "
          f"{np.mean([r['reference_s'][0] for r in rows]):.1f} / {np.mean([r['reference_s'][1] for r in rows]):.1f} |")
    print(f"\npublished reference: {PUBLISHED}")

    # Out-of-fold, pooled over all rows; the two-member ensembles have equal weights (nothing selected).
    finite = np.where(np.isfinite(decision), decision, np.finfo(float).min / 4)
    members = [proba, softmax(finite)]
    print("\n| OOF, pooled over all rows | macro-F1 |\n|---|---|")
    print(f"| linear (calibrated) | {macro_f1(y, proba.argmax(axis=1), num_labels=num_labels):.4f} |")
    reference_oof = macro_f1(y, decision.argmax(axis=1), num_labels=num_labels)
    print(f"| reference (LinearSVC C={REFERENCE_C}) | {reference_oof:.4f} |")
    prob = nested_score(members, y, fold_of, method="prob", selection="all")
    rank = nested_score([proba, finite], y, fold_of, method="rank", selection="all")
    print(f"| prob average (linear + softmax of reference decisions) | {prob.score:.4f} |")
    print(f"| rank average (linear + reference decisions, ranks within each fold) | {rank.score:.4f} |")

    if args.compare_probabilities:
        train, held = fold_indices(names, folds=args.folds, fold=0, seed=args.seed)
        compare_probabilities(texts, y, train, held, num_labels, args.seed)


if __name__ == "__main__":
    main()
