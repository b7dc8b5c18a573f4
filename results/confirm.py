"""The confirm stage's results, pure: the ranked table of members (confirm.csv) and out-of-fold assembly.

`confirm` retrains each of the search's top-K configs (the *members*) on every fold of one
stratified F-fold split of the whole training file, for each of S seeds: one *job* per (member,
fold, seed). Its files and their records (`Member`, `JobRecord`) are rundir/confirm.py.

`confirm_table` (job records + members -> DataFrame) ranks the members; `assemble_oof` averages a
member's held-out probabilities over seeds into one out-of-fold matrix. No I/O here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from model import metrics as M
from results.ranking import PARAM_PREFIX, fold_std
from rundir.confirm import NETWORK, RACED_OUT, JobRecord, Member, job_id

OOF_F1 = "oof_level2_macro_f1"  # confirm.csv's column: the pooled level-2 macro-F1 of a member's OOF file
# A member's status in confirm.csv: every job completed; some not (yet); or `confirm --race` stopped it.
COMPLETE, PARTIAL = "complete", "partial"


# ----------------------------------------------------------------------------- the table


def member_complete(jobs: dict[str, JobRecord], member: Member, *, folds: int, seeds: int) -> bool:
    """Every job of the member completed."""
    return all(j in jobs and jobs[j].completed for j in member.jobs(folds=folds, seeds=seeds))


def member_raced_out(jobs: dict[str, JobRecord], member: Member, *, folds: int, seeds: int) -> bool:
    """`confirm --race` stopped the member: some of its jobs will never run."""
    return any(j in jobs and jobs[j].status == RACED_OUT for j in member.jobs(folds=folds, seeds=seeds))


def member_status(jobs: dict[str, JobRecord], member: Member, *, folds: int, seeds: int) -> str:
    if member_complete(jobs, member, folds=folds, seeds=seeds):
        return COMPLETE
    return RACED_OUT if member_raced_out(jobs, member, folds=folds, seeds=seeds) else PARTIAL


def score_grid(jobs: dict[str, JobRecord], member: Member, key: str, *, folds: int, seeds: int) -> np.ndarray:
    """(F, S_member) scores `key` of a member's completed jobs, NaN where a job has none."""
    grid = np.full((folds, member.seeds(seeds)), np.nan)
    for f in range(folds):
        for s in range(grid.shape[1]):
            record = jobs.get(job_id(member.name, f, s))
            if record is not None and record.completed and getattr(record, key) is not None:
                grid[f, s] = float(getattr(record, key))
    return grid


def _at(grid: np.ndarray, f: int, s: int) -> float:
    """The score of (fold f, seed s); a one-seed (seed-independent) member has the same score for every s."""
    return grid[f, s if grid.shape[1] > 1 else 0]


def _mean_std(values: np.ndarray) -> tuple[float, float]:
    values = values[~np.isnan(values)]
    mean = float(values.mean()) if len(values) else math.nan
    return mean, fold_std(values)


def paired_comparison(member: np.ndarray, best: np.ndarray, *, seeds: int) -> dict[str, Any]:
    """Member vs best on the (fold, seed) pairs both have a score for.

    `member` and `best` are (F, S_m) and (F, S_b) score grids (NaN = no score), S_m and S_b each S
    or 1 (a seed-independent member's one score per fold pairs with every seed of the other).
    Returns `paired_diff_vs_best` (mean of member - best over the pairs), `wins_vs_best` ("w/n": of
    the n folds where both have a score, the w where the member's mean over its seeds is higher)
    and `p_value_vs_best` (scipy.stats.ttest_rel over the pairs; NaN below 2 pairs or when every
    difference is equal, which leaves the t statistic undefined).

    The pairs are not independent samples (the folds share training rows, and a seed-independent
    member repeats one score across seeds), so the p-value is optimistic: read it as a ranking
    aid, not as a calibrated test.
    """
    from scipy.stats import ttest_rel

    pairs = [(_at(member, f, s), _at(best, f, s)) for f in range(member.shape[0]) for s in range(seeds)]
    pairs = [(a, b) for a, b in pairs if not (math.isnan(a) or math.isnan(b))]
    folds = [(np.nanmean(member[f]), np.nanmean(best[f])) for f in range(member.shape[0])
             if not (np.isnan(member[f]).all() or np.isnan(best[f]).all())]
    wins = sum(a > b for a, b in folds)
    diff = float(np.mean([a - b for a, b in pairs])) if pairs else math.nan
    p_value = math.nan
    if len(pairs) >= 2 and len({a - b for a, b in pairs}) > 1:
        a, b = np.array(pairs).T
        p_value = float(ttest_rel(a, b).pvalue)
    return {"paired_diff_vs_best": diff, "wins_vs_best": f"{wins}/{len(folds)}", "p_value_vs_best": p_value}


def table_columns(folds: int, param_names: Sequence[str]) -> list[str]:
    return (["rank", "member", "kind", "source_trial", "optuna_number", "level2_mean", "level2_std", "level1_mean",
             "level1_std", OOF_F1] + [f"level2_fold{f}" for f in range(folds)]
            + ["n_scores", "paired_diff_vs_best", "wins_vs_best", "p_value_vs_best", "status"]
            + [PARAM_PREFIX + name for name in param_names])


def confirm_table(jobs: dict[str, JobRecord], members: Sequence[Member], *, folds: int, seeds: int,
                  param_names: Sequence[str], oof_f1: dict[str, float] | None = None) -> pd.DataFrame:
    """One row per member of confirm.json's `members`, ranked: complete members (every job completed)
    before partial and raced-out ones, each by mean level-2 macro-F1 descending (no score last), ties in members
    order (the search's leaderboard rank, linear last).

    Scores are the jobs' best evaluations: `level2_mean`/`level2_std` (and level-1) over all the
    member's completed (fold, seed) jobs (`n_scores` of them; std with ddof=1), `level2_fold<f>` the
    mean over seeds on fold f. The comparison columns (`paired_comparison`) are against the first
    row, the best member (against itself: 0, "0/F" and empty). `oof_f1`: the pooled level-2
    macro-F1 of each member's OOF file, where one exists.
    """
    oof_f1 = oof_f1 or {}
    grids = {m.name: score_grid(jobs, m, M.LEVEL2_MACRO_F1, folds=folds, seeds=seeds) for m in members}
    rows = []
    for member in members:
        name = member.name
        level2 = grids[name]
        level2_mean, level2_std = _mean_std(level2.ravel())
        level1_mean, level1_std = _mean_std(
            score_grid(jobs, member, M.LEVEL1_MACRO_F1, folds=folds, seeds=seeds).ravel())
        params = member.params if member.kind == NETWORK else {}
        with np.errstate(all="ignore"):
            per_fold = [float(np.nanmean(level2[f])) if not np.isnan(level2[f]).all() else math.nan
                        for f in range(folds)]
        rows.append({
            "member": name, "kind": member.kind, "source_trial": member.source_trial,
            "optuna_number": member.optuna_number,
            "level2_mean": level2_mean, "level2_std": level2_std, "level1_mean": level1_mean, "level1_std": level1_std,
            OOF_F1: oof_f1.get(name, math.nan),
            **{f"level2_fold{f}": per_fold[f] for f in range(folds)},
            "n_scores": int((~np.isnan(level2)).sum()),
            "status": member_status(jobs, member, folds=folds, seeds=seeds),
            **{PARAM_PREFIX + p: params.get(p) for p in param_names},
        })
    order = sorted(range(len(rows)), key=lambda i: (rows[i]["status"] != COMPLETE,
                                                    -rows[i]["level2_mean"] if rows[i]["n_scores"] else math.inf, i))
    rows = [rows[i] for i in order]
    for row in rows:  # the best against itself: 0, "0/F", NaN
        row.update(paired_comparison(grids[row["member"]], grids[rows[0]["member"]], seeds=seeds))
    for rank, row in enumerate(rows, start=1):
        row["rank"] = rank
    frame = pd.DataFrame(rows, columns=table_columns(folds, param_names))
    frame["optuna_number"] = frame["optuna_number"].astype("Int64")
    return frame


def top_rows(frame: pd.DataFrame, top: int = 10) -> str:
    """The first rows as an aligned text table (tabulate): rank, member, scores, comparison, status."""
    from tabulate import tabulate

    shown = ["rank", "member", "level2_mean", "level2_std", OOF_F1, "paired_diff_vs_best", "wins_vs_best",
             "p_value_vs_best", "n_scores", "status"]
    head = frame[shown].head(top).astype(object).where(frame[shown].head(top).notna(), None)
    return tabulate(head.values.tolist(), headers=["rank", "member", "level-2 mean", "std", "OOF F1", "diff vs best",
                                                   "wins", "p", "n", "status"],
                    floatfmt=".4f", missingval="-", tablefmt="simple")


# ----------------------------------------------------------------------------- out-of-fold probabilities


def assemble_oof(parts: Iterable[tuple[int, np.ndarray, np.ndarray]], *, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """A member's (N, C) out-of-fold probabilities and (N,) fold of each row, from its jobs' held-out
    predictions `(fold, row indices (n,), probabilities (n, C))`: the mean over the seeds of a fold.

    Raises ValueError unless the folds' rows partition 0..rows-1 (every row held out exactly once)
    and the seeds of a fold cover the same rows.
    """
    by_fold: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
    for fold, idx, probs in parts:
        by_fold.setdefault(int(fold), []).append((np.asarray(idx), np.asarray(probs, dtype=np.float64)))
    if not by_fold:
        raise ValueError("no held-out predictions to assemble")
    width = next(iter(by_fold.values()))[0][1].shape[1]
    total = np.zeros((rows, width))
    fold_of = np.full(rows, -1, dtype=np.int64)
    for fold, seeds in sorted(by_fold.items()):
        idx = seeds[0][0]
        if any(not np.array_equal(other, idx) for other, _ in seeds):
            raise ValueError(f"the seeds of fold {fold} hold out different rows")
        if (fold_of[idx] != -1).any():
            raise ValueError(f"fold {fold} holds out rows another fold already held out")
        fold_of[idx] = fold
        total[idx] = np.mean([probs for _, probs in seeds], axis=0)
    if (fold_of == -1).any():
        raise ValueError(f"{int((fold_of == -1).sum())} rows are held out by no fold")
    return total, fold_of
