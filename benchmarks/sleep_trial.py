"""A trial that sleeps instead of training, kept in its own light module: Ray workers import the
module of the function they run, and this one must not pull in torch."""

from __future__ import annotations

import time

from ray import tune

from model import metrics as M
from rundir import keys as K


def sleep_trial(config: dict, *, duration: float, epochs: int) -> None:
    """Sleeps `duration` seconds in `epochs` equal parts, reporting after each like a real trial."""
    best = 0.0
    for epoch in range(1, epochs + 1):
        time.sleep(duration / epochs)
        score = config[K.PARAMS]["lr"] * 100 * epoch / epochs
        best = max(best, score)
        tune.report({M.EPOCH: epoch, M.LEVEL2_MACRO_F1: score, M.BEST_LEVEL2_MACRO_F1: best,
                     M.FINISHED: epoch == epochs})
