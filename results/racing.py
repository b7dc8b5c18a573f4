"""`confirm --race`: which network members to stop confirming, from the folds scored so far. Pure.

In the spirit of racing (irace's F-race, Optuna's WilcoxonPruner): the stage runs its jobs fold by
fold, and after each job compares every member still racing with the *leader*, the member with the
highest mean level-2 macro-F1 over its scored folds (among those with at least `min_folds`). A member
is raced out when, on at least `min_folds` folds both have scored, a one-sided paired t-test says it
is below the leader at level `alpha`. Why a t-test and not Wilcoxon's signed-rank test: with five
folds the smallest one-sided p-value Wilcoxon can give is 1/32, and with three folds 1/8, so it could
never stop a member after the first three folds; the t-test can, when the member is below on every
fold by far more than the folds' spread.

A fold's score is the mean over its seeds, once every seed of that fold has completed. The test is
repeated after every job and over several members, with no correction, and the folds share
training rows: read `alpha` as a knob (smaller: fewer and later stops), not a calibrated error rate.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from model import metrics as M
from results.confirm import score_grid
from rundir.confirm import JobRecord, Member, RaceRule


@dataclass(frozen=True)
class Verdict:
    """A member raced out: below `leader` by `diff` on average over `folds` shared folds."""

    member: str
    leader: str
    folds: int
    diff: float
    p_value: float

    def note(self) -> str:
        return (f"raced out after {self.folds} folds: {self.diff:+.4f} level-2 macro-F1 against {self.leader} "
                f"(one-sided paired t-test p={self.p_value:.2g})")


def fold_scores(jobs: Mapping[str, JobRecord], member: Member, *, folds: int, seeds: int) -> np.ndarray:
    """(F,) a member's level-2 macro-F1 per fold, the mean over its seeds; NaN until every seed of
    the fold has completed."""
    grid = score_grid(jobs, member, M.LEVEL2_MACRO_F1, folds=folds, seeds=seeds)
    scores = np.full(folds, np.nan)
    every_seed = ~np.isnan(grid).any(axis=1)
    scores[every_seed] = grid[every_seed].mean(axis=1)
    return scores


def p_below(member: np.ndarray, leader: np.ndarray) -> float:
    """One-sided paired t-test p-value of `member` < `leader` (equal-length score vectors)."""
    from scipy.stats import ttest_rel

    diffs = member - leader
    if np.ptp(diffs) == 0:  # every fold the same difference: t is undefined; below on all of them or not
        return 0.0 if diffs[0] < 0 else 1.0
    return float(ttest_rel(member, leader, alternative="less").pvalue)


def verdicts(scores: Mapping[str, np.ndarray], racing: Iterable[str], rule: RaceRule) -> list[Verdict]:
    """The members of `racing` to race out, given every network member's fold scores (NaN: not scored)."""
    scored = {name: s for name, s in scores.items() if int((~np.isnan(s)).sum()) >= rule.min_folds}
    if not scored:
        return []
    leader = max(scored, key=lambda name: float(np.nanmean(scored[name])))
    out = []
    for name in racing:
        if name == leader or name not in scores:
            continue
        shared = ~np.isnan(scores[name]) & ~np.isnan(scores[leader])
        if shared.sum() < rule.min_folds:
            continue
        mine, best = scores[name][shared], scores[leader][shared]
        diff = float(np.mean(mine - best))
        p_value = p_below(mine, best) if diff < 0 else 1.0
        if p_value < rule.alpha and not math.isnan(p_value):
            out.append(Verdict(member=name, leader=leader, folds=int(shared.sum()), diff=diff, p_value=p_value))
    return out
