"""The keys of what one trial computes and reports, and pure metric functions.

The key constants below are the only spelling of each key: `fit` reports them, and the same
strings go to `tune.report`, ASHA, Optuna, the callbacks and the leaderboard. The keys added
around a trial (where it ran, its config dict, a confirm job's id) live in rundir/keys.py.
"""

from __future__ import annotations

import numpy as np

LEVEL2_MACRO_F1 = "level2_macro_f1"
LEVEL1_MACRO_F1 = "level1_macro_f1"
BEST_LEVEL2_MACRO_F1 = "best_level2_macro_f1"
BEST_EPOCH = "best_epoch"
ACCURACY = "accuracy"
DEV_LOSS = "dev_loss"
WORST5_F1 = "worst5_level2_f1"
EPOCH = "epoch"  # epochs trained so far (fractional between epoch ends when eval_every is set)
STEP = "train_step"  # optimizer steps so far: Optuna's step for intermediate values
PER_CLASS_F1 = "per_class_f1"  # list: level-2 F1 of each label, in label order
# True on the last evaluation of a trial that ended on its own (full budget or patience).
# A trial whose last result lacks it was stopped by the scheduler.
FINISHED = "finished"

# Other keys of a reported result (besides the metrics above).
TRAIN_LOSS = "train_loss"  # mean training loss since the previous evaluation
TRAIN_SAMPLES_PER_S = "train_samples_per_s"  # training rows per second since the previous evaluation


def classification_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, *, level1_of: np.ndarray
) -> dict[str, float | list[float]]:
    """Level-2 and level-1 scores of level-2 predictions.

    `level1_of[i]` is the level-1 index of level-2 label `i`; its length is the number of level-2
    labels, and macro averages run over all of them (a label absent from both `y_true` and `y_pred`
    counts as F1 0, as in the competition's scorer over the full label set).
    """
    # Imported here: the keys above are also read by light processes (the export CLI, Ray workers
    # of benchmarks) that never compute a metric and should not pay scikit-learn's import.
    from sklearn.metrics import accuracy_score, f1_score

    level1_of = np.asarray(level1_of)
    labels2 = np.arange(len(level1_of))
    labels1 = np.arange(int(level1_of.max()) + 1)
    per_class = f1_score(y_true, y_pred, labels=labels2, average=None, zero_division=0.0)
    return {
        LEVEL2_MACRO_F1: float(per_class.mean()),
        LEVEL1_MACRO_F1: float(
            f1_score(level1_of[y_true], level1_of[y_pred], labels=labels1, average="macro",
                     zero_division=0.0)
        ),
        ACCURACY: float(accuracy_score(y_true, y_pred)),
        WORST5_F1: float(np.sort(per_class)[:5].mean()),
        PER_CLASS_F1: [float(x) for x in per_class],
    }
