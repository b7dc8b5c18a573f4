"""`confirm --race`'s decision, on hand-made fold scores where the answer is known."""

import math

import numpy as np
import pytest
from scipy.stats import ttest_rel

from results.racing import fold_scores, p_below, verdicts
from rundir.confirm import NETWORK, JobRecord, Member, RaceRule, job_id
from rundir.trials import COMPLETED, RUNNING

NAN = math.nan
RULE = RaceRule(min_folds=3, alpha=0.05)
BEST = np.array([0.55, 0.53, 0.56, 0.54, 0.55])
TIED = BEST + np.array([0.004, -0.006, 0.002, 0.003, -0.004])  # differs from the best by noise only
WORSE = BEST - np.array([0.030, 0.025, 0.035, 0.028, 0.032])  # below it on every fold, by far more


def upto(scores: np.ndarray, folds: int) -> np.ndarray:
    """The scores of the first `folds` folds, NaN after (a stage running fold by fold)."""
    return np.where(np.arange(len(scores)) < folds, scores, NAN)


def test_a_clearly_worse_member_is_raced_out_after_the_first_min_folds():
    for done in (1, 2):
        assert verdicts({"a": upto(BEST, done), "b": upto(WORSE, done)}, ["a", "b"], RULE) == []
    (verdict,) = verdicts({"a": upto(BEST, 3), "b": upto(WORSE, 3)}, ["a", "b"], RULE)
    assert (verdict.member, verdict.leader, verdict.folds) == ("b", "a", 3)
    assert verdict.diff == pytest.approx(-0.03)
    assert verdict.p_value == pytest.approx(ttest_rel(WORSE[:3], BEST[:3], alternative="less").pvalue)
    assert "raced out after 3 folds: -0.0300 level-2 macro-F1 against a" in verdict.note()


def test_a_member_tied_with_the_best_is_never_raced_out_at_any_fold():
    for done in range(1, 6):
        assert verdicts({"a": upto(BEST, done), "b": upto(TIED, done)}, ["a", "b"], RULE) == []
        # whichever of the two leads, and however many members race beside them
        scores = {"a": upto(BEST, done), "b": upto(TIED, done), "c": upto(WORSE, done)}
        assert {v.member for v in verdicts(scores, ["a", "b", "c"], RULE)} <= {"c"}


def test_only_members_still_racing_are_judged_and_the_leader_needs_min_folds():
    scores = {"a": upto(BEST, 3), "b": upto(WORSE, 3)}
    assert verdicts(scores, ["a"], RULE) == []  # b is complete (or already out): not judged again
    # a leader with one lucky fold is no leader: the members with min_folds compare among themselves
    scores = {"lucky": upto(BEST + 0.2, 1), "a": upto(BEST, 3), "b": upto(WORSE, 3)}
    assert [(v.member, v.leader) for v in verdicts(scores, ["lucky", "a", "b"], RULE)] == [("b", "a")]


def test_folds_are_paired_and_a_smaller_alpha_or_more_min_folds_stop_later():
    # b scored folds 0, 1, 3; the leader 0-2: they share two, too few for min_folds 3
    b = np.array([WORSE[0], WORSE[1], NAN, WORSE[3], NAN])
    assert verdicts({"a": upto(BEST, 3), "b": b}, ["b"], RULE) == []
    assert verdicts({"a": upto(BEST, 3), "b": upto(WORSE, 3)}, ["b"], RaceRule(min_folds=4, alpha=0.05)) == []
    p_value = ttest_rel(WORSE[:3], BEST[:3], alternative="less").pvalue
    assert verdicts({"a": upto(BEST, 3), "b": upto(WORSE, 3)}, ["b"], RaceRule(3, p_value / 2)) == []


def test_a_constant_difference_is_below_on_every_fold_or_not_at_all():
    assert p_below(BEST - 0.01, BEST) == 0.0
    assert p_below(BEST, BEST) == 1.0
    assert p_below(BEST + 0.01, BEST) == 1.0


def test_a_fold_scores_once_every_seed_of_it_completed():
    member = Member(name="trial-1", kind=NETWORK, params={})
    jobs = {job_id("trial-1", 0, 0): JobRecord("trial-1", 0, 0, COMPLETED, level2_macro_f1=0.5),
            job_id("trial-1", 0, 1): JobRecord("trial-1", 0, 1, COMPLETED, level2_macro_f1=0.6),
            job_id("trial-1", 1, 0): JobRecord("trial-1", 1, 0, COMPLETED, level2_macro_f1=0.7),
            job_id("trial-1", 1, 1): JobRecord("trial-1", 1, 1, RUNNING, level2_macro_f1=0.9)}
    scores = fold_scores(jobs, member, folds=3, seeds=2)
    assert scores[0] == pytest.approx(0.55) and np.isnan(scores[1:]).all()
