"""results/confirm.py: the confirm table and OOF assembly, on constructed job records (no Ray)."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from results import confirm as C
from rundir.confirm import LINEAR, NETWORK, JobRecord, Member, job_id, network_name
from rundir.trials import COMPLETED, ERROR, RUNNING

FOLDS, SEEDS = 3, 2
# level-2 scores [fold][seed]; level-1 = level-2 + 0.2
A = [[0.50, 0.60], [0.55, 0.65], [0.70, 0.60]]  # mean 0.6
B = [[0.40, 0.50], [0.60, 0.60], [0.50, 0.50]]  # mean 0.51667
LIN = [0.45, 0.62, 0.55]  # seed-independent; mean 0.54

MEMBERS = [
    Member(name="trial-4", kind=NETWORK, source_trial="bbbb", optuna_number=4, leaderboard_rank=1,
           params={"lr": 0.01, "loss": "ce"}),
    Member(name="trial-7", kind=NETWORK, source_trial="aaaa", optuna_number=7, leaderboard_rank=2,
           params={"lr": 0.002, "loss": "focal", "focal_gamma": 2.0}),
    Member(name="linear", kind=LINEAR, params={"C": 0.5}),
]


def job(member, fold, seed, score, status=COMPLETED):
    return JobRecord(member=member, fold=fold, seed=seed, status=status, level2_macro_f1=score,
                     level1_macro_f1=score + 0.2, accuracy=0.5)


def jobs_of(scores_a=A, scores_b=B, lin=LIN):
    jobs = {}
    for name, grid in (("trial-4", scores_b), ("trial-7", scores_a)):  # trial-7 is the better one
        for f in range(FOLDS):
            for s in range(SEEDS):
                jobs[job_id(name, f, s)] = job(name, f, s, grid[f][s])
    for f in range(FOLDS):
        jobs[job_id("linear", f, 0)] = job("linear", f, 0, lin[f])
    return jobs


def table(jobs, **kw):
    return C.confirm_table(jobs, MEMBERS, folds=FOLDS, seeds=SEEDS, param_names=["lr", "loss", "focal_gamma"], **kw)


def ttest_rel_by_formula(a, b):
    """The paired t-test written out: t = mean(d) / (sd(d) / sqrt(n)), two-sided, n - 1 degrees of freedom."""
    d = np.asarray(a) - np.asarray(b)
    t = d.mean() / (d.std(ddof=1) / math.sqrt(len(d)))
    return 2 * stats.t.sf(abs(t), df=len(d) - 1)


def test_ranked_by_mean_with_the_documented_columns():
    frame = table(jobs_of(), oof_f1={"trial-7": 0.61, "linear": 0.5})
    assert list(frame.columns) == [
        "rank", "member", "kind", "source_trial", "optuna_number", "level2_mean", "level2_std", "level1_mean",
        "level1_std", "oof_level2_macro_f1", "level2_fold0", "level2_fold1", "level2_fold2", "n_scores",
        "paired_diff_vs_best", "wins_vs_best", "p_value_vs_best", "status", "param.lr", "param.loss",
        "param.focal_gamma"]
    assert frame["member"].tolist() == ["trial-7", "linear", "trial-4"]
    assert frame["rank"].tolist() == [1, 2, 3]
    best = frame.iloc[0]
    assert best["level2_mean"] == pytest.approx(0.6)
    assert best["level2_std"] == pytest.approx(np.std(np.ravel(A), ddof=1))
    assert best["level1_mean"] == pytest.approx(0.8)
    assert [best[f"level2_fold{f}"] for f in range(FOLDS)] == pytest.approx([0.55, 0.6, 0.65])
    assert best["n_scores"] == 6 and best["status"] == C.COMPLETE
    assert best["oof_level2_macro_f1"] == 0.61 and math.isnan(frame.iloc[2]["oof_level2_macro_f1"])
    assert (best["source_trial"], best["optuna_number"], best["kind"]) == ("aaaa", 7, NETWORK)
    assert (best["param.loss"], best["param.focal_gamma"]) == ("focal", 2.0)
    lin = frame.iloc[1]
    assert lin["kind"] == LINEAR and lin["n_scores"] == 3 and lin["level2_mean"] == pytest.approx(0.54)
    assert pd.isna(lin["optuna_number"]) and pd.isna(lin["param.lr"]) and pd.isna(lin["source_trial"])
    assert lin["level2_std"] == pytest.approx(np.std(LIN, ddof=1))


def test_paired_comparison_against_the_best_member():
    frame = table(jobs_of()).set_index("member")
    best = frame.loc["trial-7"]
    assert best["paired_diff_vs_best"] == 0 and best["wins_vs_best"] == "0/3" and math.isnan(best["p_value_vs_best"])
    # network vs network: the 6 (fold, seed) pairs
    other = frame.loc["trial-4"]
    a, b = np.ravel(A), np.ravel(B)
    assert other["paired_diff_vs_best"] == pytest.approx(-0.5 / 6)
    assert other["wins_vs_best"] == "0/3"  # fold means 0.45/0.55, 0.60/0.60 (a tie is no win), 0.50/0.65
    assert other["p_value_vs_best"] == pytest.approx(ttest_rel_by_formula(b, a))
    # the seed-independent linear member: its fold score pairs with each seed of the best
    lin = frame.loc["linear"]
    repeated = np.repeat(LIN, SEEDS)
    assert lin["paired_diff_vs_best"] == pytest.approx(-0.36 / 6)
    assert lin["wins_vs_best"] == "1/3"  # 0.62 > 0.60 on fold 1
    assert lin["p_value_vs_best"] == pytest.approx(ttest_rel_by_formula(repeated, a))


def test_partial_members_rank_after_complete_ones_and_count_completed_jobs_only():
    jobs = jobs_of(scores_a=[[0.5, 0.6], [0.55, 0.65], [0.7, 0.6]], scores_b=[[0.9, 0.9], [0.9, 0.9], [0.9, 0.9]])
    jobs[job_id("trial-4", 2, 1)].status = ERROR  # the otherwise best member lost a job
    jobs[job_id("trial-4", 2, 0)].status = RUNNING  # a running job's best so far is no score yet
    frame = table(jobs)
    assert frame["member"].tolist() == ["trial-7", "linear", "trial-4"]
    partial = frame.iloc[2]
    assert partial["status"] == C.PARTIAL and partial["n_scores"] == 4
    assert math.isnan(partial["level2_fold2"]) and partial["level2_mean"] == pytest.approx(0.9)
    assert partial["wins_vs_best"] == "2/2"  # folds without a score are not compared
    assert partial["paired_diff_vs_best"] == pytest.approx(np.mean([0.4, 0.3, 0.35, 0.25]))


def test_a_single_pair_has_no_p_value_and_a_missing_member_ranks_last():
    jobs = {job_id("trial-7", 0, 0): job("trial-7", 0, 0, 0.5), job_id("trial-4", 0, 0): job("trial-4", 0, 0, 0.4)}
    frame = C.confirm_table(jobs, MEMBERS, folds=2, seeds=1, param_names=[])
    assert frame["member"].tolist() == ["trial-7", "trial-4", "linear"]
    assert set(frame["status"]) == {C.PARTIAL}
    second = frame.iloc[1]
    assert second["paired_diff_vs_best"] == pytest.approx(-0.1) and math.isnan(second["p_value_vs_best"])
    assert frame.iloc[2]["n_scores"] == 0 and math.isnan(frame.iloc[2]["level2_mean"])
    assert frame.iloc[2]["wins_vs_best"] == "0/0"


def test_member_jobs_and_ids():
    assert MEMBERS[0].jobs(folds=2, seeds=2) == [
        "trial-4/fold0/seed0", "trial-4/fold0/seed1", "trial-4/fold1/seed0", "trial-4/fold1/seed1"]
    assert MEMBERS[2].jobs(folds=2, seeds=3) == ["linear/fold0/seed0", "linear/fold1/seed0"]
    assert network_name(12) == "trial-12"


def test_assemble_oof_averages_seeds_and_places_rows():
    rows = 5
    fold0, fold1 = np.array([0, 3]), np.array([1, 2, 4])
    p = lambda *values: np.array(values, dtype=np.float64)  # noqa: E731
    parts = [
        (0, fold0, p([1.0, 0.0], [0.0, 1.0])),
        (0, fold0, p([0.5, 0.5], [0.0, 1.0])),  # seed 1 of fold 0
        (1, fold1, p([0.2, 0.8], [0.4, 0.6], [1.0, 0.0])),
    ]
    probs, fold_of = C.assemble_oof(parts, rows=rows)
    np.testing.assert_allclose(probs, [[0.75, 0.25], [0.2, 0.8], [0.4, 0.6], [0.0, 1.0], [1.0, 0.0]])
    assert fold_of.tolist() == [0, 1, 1, 0, 1]
    with pytest.raises(ValueError, match="held out by no fold"):
        C.assemble_oof(parts[:2], rows=rows)
    with pytest.raises(ValueError, match="already held out"):
        C.assemble_oof(parts + [(2, np.array([4]), p([1.0, 0.0]))], rows=rows)
    with pytest.raises(ValueError, match="different rows"):
        C.assemble_oof([parts[0], (0, np.array([0, 4]), p([1.0, 0.0], [1.0, 0.0]))], rows=rows)
