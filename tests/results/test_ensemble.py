import json

import numpy as np
import pytest
from sklearn.model_selection import StratifiedKFold

from model.metrics import LEVEL2_MACRO_F1, classification_metrics
from results.ensemble import (
    EnsembleError,
    EnsembleResult,
    build_ensemble,
    combine,
    greedy_selection,
    macro_f1,
    nested_score,
    predict,
    select,
)


def one_hot(labels, c):
    return np.eye(c)[np.asarray(labels)]


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def noisy_member(y, c, rng, *, accuracy=0.6, bump=2.0):
    """A reasonable member: its top label is the true one with probability about `accuracy`."""
    n = len(y)
    target = np.where(rng.random(n) < accuracy, y, (y + rng.integers(1, c, n)) % c)
    z = rng.normal(0.0, 1.0, (n, c))
    z[np.arange(n), target] += bump
    return softmax(z)


def stratified_folds(y, folds, seed):
    fold_of = np.empty(len(y), dtype=np.int64)
    for f, (_, held) in enumerate(StratifiedKFold(folds, shuffle=True, random_state=seed).split(y, y)):
        fold_of[held] = f
    return fold_of


@pytest.fixture(scope="module")
def overfit_case():
    """Three reasonable members plus an "overfitted" one: perfect on fold 0, confident noise elsewhere."""
    n, c = 500, 5
    rng = np.random.default_rng(0)
    y = np.arange(n) % c
    rng.shuffle(y)
    fold_of = stratified_folds(y, 5, seed=0)
    good = [noisy_member(y, c, rng) for _ in range(3)]
    overfit = np.full((n, c), 0.2 / (c - 1))
    overfit[np.arange(n), rng.integers(0, c, n)] = 0.8
    overfit[fold_of == 0] = one_hot(y[fold_of == 0], c)
    return good, overfit, y, fold_of


# ----------------------------------------------------------------------------- scoring and rules


def test_macro_f1_is_the_level2_macro_f1_of_classification_metrics():
    rng = np.random.default_rng(1)
    y, pred = rng.integers(0, 6, 200), rng.integers(0, 5, 200)  # label 5 never predicted
    level1_of = np.array([0, 0, 1, 1, 2, 2, 3])  # 7 labels: label 6 absent from both, counts as 0
    expected = classification_metrics(y, pred, level1_of=level1_of)[LEVEL2_MACRO_F1]
    assert macro_f1(y, pred, num_labels=7) == pytest.approx(expected)
    assert macro_f1(y, y, num_labels=7) == pytest.approx(6 / 7)


def test_probability_average_of_two_known_matrices():
    a = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    b = np.array([[0.1, 0.8, 0.1], [0.2, 0.2, 0.6]])
    np.testing.assert_allclose(combine([a, b], method="prob"), [[0.4, 0.5, 0.1], [0.15, 0.25, 0.6]])
    np.testing.assert_allclose(combine([a, b], [3, 1], method="prob"), [[0.55, 0.35, 0.1], [0.125, 0.275, 0.6]])
    assert predict([a, b], method="prob").tolist() == [1, 2]
    assert predict([a, b], [3, 1], method="prob").tolist() == [0, 2]


def test_rank_average_is_a_borda_count_of_per_row_class_ranks():
    a = np.array([[0.90, 0.08, 0.02], [0.2, 0.5, 0.3], [0.7, 0.2, 0.1]])
    b = np.array([[0.10, 0.45, 0.45], [0.4, 0.1, 0.5], [0.2, 0.7, 0.1]])
    # Ranks within each row, 1 = least likely; ties get the average rank.
    # a: [3, 2, 1], [1, 3, 2], [3, 2, 1]; b: [1, 2.5, 2.5], [2, 1, 3], [2, 3, 1].
    expected = np.array([[2.0, 2.25, 1.75], [1.5, 2.0, 2.5], [2.5, 2.5, 1.0]])
    np.testing.assert_allclose(combine([a, b], method="rank"), expected)
    # Row 0: the confident member a dominates the probability mean (0.50 for label 0), the Borda
    # count picks the label both rank high. Row 2: a 2.5-2.5 tie goes to the lower label index.
    assert predict([a, b], method="rank").tolist() == [1, 2, 0]
    assert predict([a, b], method="prob").tolist() == [0, 2, 0]
    # Weights: (3 * ranks_a + ranks_b) / 4.
    weighted = np.array([[2.5, 2.125, 1.375], [1.25, 2.5, 2.25], [2.75, 2.25, 1.0]])
    np.testing.assert_allclose(combine([a, b], [3, 1], method="rank"), weighted)
    assert predict([a, b], [3, 1], method="rank").tolist() == [0, 1, 0]


def test_rank_average_ignores_each_members_calibration_and_other_rows():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 6, 80)
    a, b = noisy_member(y, 6, rng), noisy_member(y, 6, rng)
    expected = combine([a, b], method="rank")
    # Strictly increasing transforms of one member's scores: a power, a log, a sharper temperature.
    for transformed in (b**3, np.log(b), softmax(np.log(b) / 0.1)):
        np.testing.assert_allclose(combine([a, transformed], method="rank"), expected)
    # Not so for the probability mean, which the sharpened member then dominates.
    assert (predict([a, softmax(np.log(b) / 0.1)], method="prob") != predict([a, b], method="prob")).any()
    # Each row is combined on its own: a subset of rows gets the same scores as in the full set.
    np.testing.assert_allclose(combine([a[::7], b[::7]], method="rank"), expected[::7])
    # Per-class scaling (what column ranks would undo) is not a per-row monotone transform: it counts.
    scaled = b * np.array([1, 1, 1, 1, 1, 50.0])
    assert (predict([a, scaled], method="rank") == 5).sum() > (predict([a, b], method="rank") == 5).sum()


def test_vote_two_two_tie_goes_to_the_earliest_member():
    c = 4
    votes = [[2, 1], [1, 2], [1, 2], [2, 1]]  # member m votes votes[m][row]
    probs = [one_hot(v, c) for v in votes]
    # Row 0: label 2 (members 0, 3) ties label 1 (members 1, 2); member 0 is earliest -> 2.
    # Row 1: the mirror image -> 1.
    assert predict(probs, method="vote").tolist() == [2, 1]
    np.testing.assert_allclose(combine(probs, method="vote")[0], [0, 0.5, 0.5, 0])


def test_vote_later_members_win_with_more_votes():
    c = 4
    probs = [one_hot([0], c), one_hot([3], c), one_hot([3], c), one_hot([1], c)]
    assert predict(probs, method="vote").tolist() == [3]
    # Weights are multiplicities: the first member added twice is a 2-2 tie it wins by rank ...
    assert predict(probs, [2, 1, 1, 0], method="vote").tolist() == [0]
    # ... and added three times outvotes the others.
    assert predict(probs, [3, 1, 1, 1], method="vote").tolist() == [0]
    # A member of weight 0 neither votes nor breaks ties: 3 (member 1) ties 1 (member 3) -> 3.
    assert predict(probs, [5, 1, 0, 1], method="vote").tolist() == [0]
    assert predict(probs, [0, 1, 0, 1], method="vote").tolist() == [3]


# ----------------------------------------------------------------------------- greedy selection


def test_greedy_returns_a_perfect_member():
    n, c = 60, 3
    rng = np.random.default_rng(2)
    y = np.arange(n) % c
    probs = [noisy_member(y, c, rng, accuracy=0.5), one_hot(y, c), noisy_member(y, c, rng, accuracy=0.5)]
    for method in ("prob", "rank", "vote"):
        chosen = greedy_selection(probs, y, max_members=5, method=method)
        assert chosen.weights == (0, 1, 0), method
        assert chosen.score == 1.0
        assert chosen.added[0] == 1 and len(chosen.path) == 5


def test_greedy_beats_the_best_single_member_with_complementary_members():
    # Member a is confidently right on the first 60% of rows and narrowly wrong on the rest; b the
    # reverse. Each alone is mostly wrong somewhere; their average is right everywhere.
    n, c = 40, 4
    y = np.arange(n) % c
    first = np.arange(n) < 24
    wrong = (y + 1) % c

    def right_on(rows):
        p = np.zeros((n, c))
        p[rows, y[rows]] = 0.9
        p[rows, wrong[rows]] = 0.1
        p[~rows, wrong[~rows]] = 0.4
        p[~rows, y[~rows]] = 0.3
        p[~rows, (y[~rows] + 2) % c] = 0.3
        return p

    weak = one_hot(np.where(np.arange(n) % 3 == 0, y, wrong), c)  # right on a third of the rows
    probs = [weak, right_on(~first), right_on(first)]
    singles = [macro_f1(y, p.argmax(axis=1), num_labels=c) for p in probs]
    assert int(np.argmax(singles)) == 2 and max(singles) < 0.65
    chosen = greedy_selection(probs, y, max_members=6, method="prob")
    assert chosen.added[:2] == (2, 1)  # starts from the single best member, then its complement
    assert chosen.path[0] == pytest.approx(max(singles))
    assert chosen.score == 1.0
    # The best prefix (the shortest on ties) is what comes back, not all six additions.
    assert chosen.weights == (0, 1, 1)


def test_greedy_ties_go_to_the_earlier_member():
    y = np.array([0, 1, 0, 1])
    same = one_hot(y, 2)
    assert greedy_selection([same, same.copy()], y, max_members=3).weights == (1, 0)


# ----------------------------------------------------------------------------- nested scoring


def test_plain_oof_selection_picks_the_overfitted_member_and_is_inflated(overfit_case):
    good, overfit, y, fold_of = overfit_case
    with_it = greedy_selection([*good, overfit], y, max_members=8)
    without = greedy_selection(good, y, max_members=8)
    assert with_it.weights[3] >= 1  # picked: it looks perfect on a fifth of the rows
    assert with_it.score > without.score + 0.02  # measured 0.645 vs 0.615
    nested = nested_score([*good, overfit], y, fold_of, max_members=8)
    assert with_it.score > nested.score + 0.04  # in-sample optimism; measured 0.645 vs 0.589


def test_nested_selection_for_fold_0_never_sees_the_overfitted_member_shine(overfit_case):
    good, overfit, y, fold_of = overfit_case
    nested = nested_score([*good, overfit], y, fold_of, max_members=8)
    baseline = nested_score(good, y, fold_of, max_members=8)
    assert nested.folds == (0, 1, 2, 3, 4)
    assert nested.fold_weights[0][3] == 0  # chosen on folds 1-4, where it is noise
    assert nested.fold_weights[0][:3] == baseline.fold_weights[0]
    assert nested.fold_scores[0] == baseline.fold_scores[0]
    # Its fold-0 perfection does not lift the held-out score (it only hurts where it is chosen).
    assert nested.score <= baseline.score + 0.005


def test_the_selection_for_a_fold_does_not_depend_on_that_fold(overfit_case):
    good, overfit, y, fold_of = overfit_case
    probs = [*good, overfit]
    before = nested_score(probs, y, fold_of, max_members=8)
    # Rewrite fold 2: new labels, noise for every member except member 1, which becomes perfect there.
    rng = np.random.default_rng(3)
    held = fold_of == 2
    y2 = y.copy()
    y2[held] = rng.permutation(y[held])
    perturbed = []
    for p in probs:
        q = p.copy()
        q[held] = softmax(rng.normal(0, 3, (held.sum(), p.shape[1])))
        perturbed.append(q)
    perturbed[1][held] = one_hot(y2[held], 5)
    after = nested_score(perturbed, y2, fold_of, max_members=8)
    assert after.fold_weights[2] == before.fold_weights[2]
    # The perturbation is one a selection that sees fold 2 reacts to: the other folds' selections
    # (which include fold 2's rows) and a selection on all rows change.
    assert after.fold_weights[0] != before.fold_weights[0]
    assert greedy_selection(perturbed, y2, max_members=8).weights != greedy_selection(probs, y, max_members=8).weights
    assert after.fold_scores[2] != before.fold_scores[2]


def test_nested_score_pools_held_out_predictions(overfit_case):
    good, _, y, fold_of = overfit_case
    nested = nested_score(good, y, fold_of, method="rank", selection="greedy", max_members=4)
    assert nested.score == pytest.approx(macro_f1(y, nested.predictions, num_labels=5))
    for f, score in zip(nested.folds, nested.fold_scores, strict=True):
        rows = fold_of == f
        assert score == pytest.approx(macro_f1(y[rows], nested.predictions[rows], num_labels=5))
        # Every rule is row-wise: the held-out rows alone give the same predictions
        expected = predict([p[rows] for p in good], nested.fold_weights[f], method="rank")
        np.testing.assert_array_equal(nested.predictions[rows], expected)
    assert nested.fold_mean == pytest.approx(np.mean(nested.fold_scores))
    # the spread as confirm.csv and status report it: sample std over the folds
    assert nested.fold_std == pytest.approx(np.std(nested.fold_scores, ddof=1))


@pytest.mark.parametrize("method", ["prob", "rank", "vote"])
def test_equal_weights_need_no_selection(overfit_case, method):
    good, _, y, fold_of = overfit_case
    nested = nested_score(good, y, fold_of, method=method, selection="all")
    assert all(w == (1, 1, 1) for w in nested.fold_weights)
    # Row-wise rules and equal weights: the nested score is just the OOF score.
    assert nested.score == pytest.approx(macro_f1(y, predict(good, method=method), num_labels=5))
    np.testing.assert_array_equal(nested.predictions, predict(good, method=method))
    assert select(good, y, method=method, selection="all").weights == (1, 1, 1)


def test_build_ensemble_result_round_trips_through_json(overfit_case):
    good, overfit, y, fold_of = overfit_case
    result = build_ensemble([*good, overfit], y, fold_of, members=["a", "b", "c", "overfit"], max_members=8)
    assert result.weights == greedy_selection([*good, overfit], y, max_members=8).weights
    assert result.oof_score > result.nested_score
    again = EnsembleResult.from_dict(json.loads(json.dumps(result.to_dict())))
    assert again == result
    # per label, the nested predictions' F1: their mean is the nested (macro) score
    assert len(result.label_f1) == good[0].shape[1] and np.mean(result.label_f1) == pytest.approx(result.nested_score)
    older = {k: v for k, v in result.to_dict().items() if k != "label_f1"}  # a file from before label_f1
    assert EnsembleResult.from_dict(older).label_f1 == ()
    assert again.nested_fold_mean == pytest.approx(np.mean(result.fold_scores))


# ----------------------------------------------------------------------------- errors


def test_errors_say_what_to_fix():
    p = np.full((4, 3), 1 / 3)
    y = np.array([0, 1, 2, 0])
    with pytest.raises(EnsembleError, match="must be one of prob, rank, vote"):
        combine([p], method="mean")
    with pytest.raises(EnsembleError, match=r"probs\[1\] has shape \(3, 3\)"):
        predict([p, p[:3]])
    with pytest.raises(EnsembleError, match="outside 0..2"):
        greedy_selection([p], np.array([0, 1, 3, 0]), max_members=2)
    with pytest.raises(EnsembleError, match="one weight per member"):
        combine([p, p], [1.0])
    with pytest.raises(EnsembleError, match="needs max_members"):
        nested_score([p], y, np.array([0, 0, 1, 1]))
    with pytest.raises(EnsembleError, match="needs >= 2"):
        nested_score([p], y, np.zeros(4, dtype=int), selection="all")
    with pytest.raises(EnsembleError, match="must be one of greedy, all"):
        select([p], y, selection="best")
