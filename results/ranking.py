"""Ranking: pure functions from trial records to the leaderboard table.

Order: trials that completed (full budget, or stopped by their own patience) first, then pruned
trials (stopped early by the scheduler; `budget` shows the fraction of epochs they got), then
running trials, then errors. Within a section: best level-2 macro-F1 (at the trial's best epoch)
descending, then more epochs, then the earlier trial. A one-epoch score thus never outranks a
full run, however lucky it was.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Iterable

import numpy as np
import pandas as pd

from model import metrics as M
from rundir.trials import STATUSES, TrialRecord

PARAM_PREFIX = "param."
COLUMNS = [
    "rank", "trial_id", "optuna_number", "warm_start", "status", "epochs", "max_epochs", "budget",
    M.BEST_EPOCH, M.LEVEL2_MACRO_F1, "level2_ci_low", "level2_ci_high", "tied_with_best", M.LEVEL1_MACRO_F1,
    M.ACCURACY, M.DEV_LOSS, M.WORST5_F1,
    "time_s", "node", "device", "seed", "fold", "checkpoint", "error", "command",
]


def _sort_key(record: TrialRecord) -> tuple:
    best = record.best
    score = best[M.LEVEL2_MACRO_F1] if best else -math.inf
    number = record.optuna_number if record.optuna_number is not None else math.inf
    return (STATUSES.index(record.status), -score, -record.epochs, number, record.trial_id)


def rank_records(records: Iterable[TrialRecord]) -> list[TrialRecord]:
    return sorted(records, key=_sort_key)


def reproduce_command(prefix: str, params: dict) -> str:
    """`prefix` (a `python -m search train-one ...` call fixing data, fold, seed and budget) plus
    one `--set name=value` per parameter of the trial."""
    sets = [f"--set {shlex.quote(f'{name}={value}')}" for name, value in params.items()]
    return " ".join([prefix, *sets])


def leaderboard(records: Iterable[TrialRecord], *, max_epochs: int, param_names: list[str],
                seed: int | None = None, fold: int | None = None, command_prefix: str | None = None
                ) -> pd.DataFrame:
    """One row per trial in rank order, with the columns of COLUMNS then `param.<name>` per searched
    parameter (empty where a conditional parameter did not apply). `command` retrains the row's
    configuration when `command_prefix` is given."""
    rows = []
    for rank, record in enumerate(rank_records(records), start=1):
        best = record.best or {}
        row = {
            "rank": rank,
            "trial_id": record.trial_id,
            "optuna_number": record.optuna_number,
            "warm_start": record.warm_start,
            "status": record.status,
            "epochs": record.epochs,
            "max_epochs": max_epochs,
            "budget": record.epochs / max_epochs,
            M.BEST_EPOCH: best.get(M.EPOCH),
            **{key: best.get(key) for key in (M.LEVEL2_MACRO_F1, M.LEVEL1_MACRO_F1, M.ACCURACY,
                                              M.DEV_LOSS, M.WORST5_F1)},
            "time_s": round(record.time_s, 2),
            "node": record.node,
            "device": record.device,
            "seed": seed,
            "fold": fold,
            "checkpoint": record.checkpoint,
            "error": record.error,
            "command": reproduce_command(command_prefix, record.params) if command_prefix else None,
        }
        row.update({PARAM_PREFIX + name: record.params.get(name) for name in param_names})
        rows.append(row)
    frame = pd.DataFrame(rows, columns=COLUMNS + [PARAM_PREFIX + n for n in param_names])
    for column in ("optuna_number", M.BEST_EPOCH):
        frame[column] = frame[column].astype("Int64")
    return frame


def fold_std(scores: Iterable[float]) -> float:
    """The fold-to-fold spread every table of this project reports (confirm.csv, status, the
    ensemble table): the sample standard deviation (ddof=1) of the finite scores, nan under two."""
    values = np.asarray([v for v in scores if not math.isnan(v)], dtype=float)
    return float(values.std(ddof=1)) if len(values) >= 2 else math.nan
