"""How sure a one-fold leaderboard can be: a paired bootstrap of each trial against rank 1.

A search scores every trial on the same dev fold, and a config's fold-to-fold spread (±0.01-0.02
level-2 macro-F1 on the real task) is larger than many of the gaps it ranks by. Each trial's
best-evaluation predictions on the dev rows are resampled with the rows (B bootstrap resamples,
the same ones for every trial, so the comparison is paired): a trial is *tied with rank 1* when,
in at least `alpha` of the resamples, it scores at least as high as rank 1 (a one-sided paired
bootstrap test at level `alpha`); else rank 1 is clearly better on this fold. The interval of a
trial's own score is the percentile interval of its resampled scores.

Pure functions over arrays: macro-F1 of many resamples at once from the per-row weights a
resample gives (how many times each row was drawn), exactly `model.metrics`' level-2 macro-F1 over
all labels (a label absent from truth and predictions counts as 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RESAMPLES = 1000
ALPHA = 0.05  # one-sided: tied unless rank 1 is better in more than 95% of the resamples
INTERVAL = 0.90  # of a trial's own score


def bootstrap_weights(rows: int, *, resamples: int = RESAMPLES, seed: int = 0) -> np.ndarray:
    """(B, rows) float32: how many times each row is drawn in each of B resamples with replacement."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(rows, np.full(rows, 1.0 / rows), size=resamples).astype(np.float32)


def resampled_macro_f1(y: np.ndarray, pred: np.ndarray, weights: np.ndarray, *, num_labels: int) -> np.ndarray:
    """(B,) level-2 macro-F1 of `pred` against `y` under each resample's row weights (B, N)."""
    eye = np.eye(num_labels, dtype=np.float32)
    truth, guess = eye[y], eye[pred]  # (N, C)
    tp = weights @ (truth * (y == pred)[:, None])  # (B, C)
    denominator = weights @ truth + weights @ guess  # (B, C): 2 tp + fp + fn
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = np.where(denominator > 0, 2 * tp / denominator, 0.0)
    return f1.mean(axis=1)


@dataclass(frozen=True)
class Noise:
    low: float  # the INTERVAL percentile interval of the trial's own score
    high: float
    tied_with_best: bool  # not clearly worse than rank 1 on this fold
    p_better_best: float  # the share of resamples where rank 1 scores higher


class PairedBootstrap:
    """`compare_to_best` with memory, for a leaderboard rewritten at every result: the resample
    weights are drawn once per dev set, and each trial's resampled scores computed once per version
    of its predictions (the caller's key for them, e.g. the file's modification time)."""

    def __init__(self, y: np.ndarray, *, num_labels: int, resamples: int = RESAMPLES, seed: int = 0):
        self.y, self.num_labels = np.asarray(y), num_labels
        self.weights = bootstrap_weights(len(self.y), resamples=resamples, seed=seed)
        self._scores: dict[str, tuple[object, np.ndarray]] = {}

    def scores(self, trial: str, pred: np.ndarray, version: object = None) -> np.ndarray:
        """(B,) the trial's macro-F1 on each resample; computed again only for a new `version`."""
        kept = self._scores.get(trial)
        if kept is None or version is None or kept[0] != version:
            kept = (version, resampled_macro_f1(self.y, pred, self.weights, num_labels=self.num_labels))
            self._scores[trial] = kept
        return kept[1]

    def compare(self, preds: dict[str, np.ndarray], best: str, *, versions: dict[str, object] | None = None,
                alpha: float = ALPHA) -> dict[str, Noise]:
        if best not in preds:
            raise ValueError(f"rank 1 ({best}) has no predictions to compare with")
        versions = versions or {}
        scores = {trial: self.scores(trial, pred, versions.get(trial)) for trial, pred in preds.items()}
        tail = (1 - INTERVAL) / 2 * 100
        out = {}
        for trial, score in scores.items():
            p_better = float(np.mean(scores[best] > score))
            out[trial] = Noise(low=float(np.percentile(score, tail)), high=float(np.percentile(score, 100 - tail)),
                               tied_with_best=p_better <= 1 - alpha, p_better_best=p_better)
        return out


def compare_to_best(y: np.ndarray, preds: dict[str, np.ndarray], best: str, *, num_labels: int,
                    resamples: int = RESAMPLES, alpha: float = ALPHA, seed: int = 0) -> dict[str, Noise]:
    """{trial: its `Noise`} for every trial of `preds` ((N,) predicted label indices on the dev rows
    `y`), each paired against `preds[best]` on the same resamples."""
    return PairedBootstrap(y, num_labels=num_labels, resamples=resamples, seed=seed).compare(preds, best, alpha=alpha)
