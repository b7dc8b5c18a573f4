import numpy as np
import pytest

import model.linear as linear
from model.data import LabelSet, fold_indices
from model.errors import DataError
from model.linear import fit_linear, make_vectorizer
from model.synthetic import synthesize
from results.ensemble import macro_f1

ABSENT = 5  # a label index left out of the training rows


@pytest.fixture(scope="module")
def split():
    frame = synthesize(1500, seed=0)[0]
    labels = LabelSet.from_labels(frame["label"])
    y = labels.encode(frame["label"])
    texts = frame["text"].to_numpy()
    train, held = fold_indices(frame["label"].tolist(), folds=5, fold=0, seed=0)
    return texts, y, train, held, len(labels.level2)


@pytest.fixture(scope="module")
def member(split):
    texts, y, train, _, num_labels = split
    return fit_linear(texts[train], y[train], num_labels=num_labels, seed=0)


def test_probabilities_cover_all_labels_and_sum_to_one(split):
    texts, y, train, held, num_labels = split
    keep = train[y[train] != ABSENT]
    fitted = fit_linear(texts[keep], y[keep], num_labels=num_labels, seed=0)
    proba = fitted.predict_proba(texts[held])
    assert proba.shape == (len(held), num_labels)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert (proba[:, ABSENT] == 0).all()
    assert ABSENT not in fitted.pipeline.classes_
    np.testing.assert_array_equal(proba[:, fitted.pipeline.classes_], fitted.pipeline.predict_proba(texts[held]))
    # Columns are label indices: on its own training rows the member is mostly right, which a shift
    # of the columns after the absent label would break.
    assert np.mean(fitted.predict(texts[keep]) == y[keep]) > 0.8


def test_held_out_macro_f1_well_above_chance(split, member):
    texts, y, _, held, num_labels = split
    score = macro_f1(y[held], member.predict(texts[held]), num_labels=num_labels)
    assert score > 0.50  # measured 0.567 (chance: about 1/35 = 0.03)
    assert member.params["C"] in linear.DEFAULT_GRID
    assert set(member.cv_scores) == set(linear.DEFAULT_GRID)
    assert member.params["C"] == max(member.cv_scores, key=member.cv_scores.get)


def test_inner_cv_and_vectorizer_see_the_training_rows_only(split, monkeypatch):
    texts, y, train, _, num_labels = split
    calls = []
    real = linear.select_c

    def spy(features, labels, **kw):
        calls.append((features.shape[0], labels.copy()))
        return real(features, labels, **kw)

    monkeypatch.setattr(linear, "select_c", spy)
    fitted = fit_linear(texts[train], y[train], num_labels=num_labels, seed=0)
    assert len(calls) == 1
    rows, labels = calls[0]
    assert rows == len(train)
    np.testing.assert_array_equal(labels, y[train])
    vocabulary = make_vectorizer().fit(texts[train]).vocabulary_
    assert fitted.pipeline.named_steps["tfidf"].vocabulary_ == vocabulary
    assert vocabulary != make_vectorizer().fit(texts).vocabulary_  # the held-out rows would change it


def test_deterministic_for_a_seed(split, member):
    texts, y, train, held, num_labels = split
    again = fit_linear(texts[train], y[train], num_labels=num_labels, seed=0)
    assert again.params == member.params and again.cv_scores == member.cv_scores
    np.testing.assert_array_equal(again.predict_proba(texts[held]), member.predict_proba(texts[held]))


def test_errors_say_what_to_fix(split):
    texts, y, train, _, num_labels = split
    few = train[y[train] != 0].tolist() + train[y[train] == 0][:2].tolist()  # label 0: 2 rows
    with pytest.raises(DataError, match=r"label 0 \(2 rows\).*inner_folds=3.*Lower inner_folds"):
        fit_linear(texts[few], y[few], num_labels=num_labels, seed=0)
    with pytest.raises(DataError, match="one level-2 label index per text"):
        fit_linear(texts[train], y[train][:-1], num_labels=num_labels)
    with pytest.raises(DataError, match="integers in 0..3"):
        fit_linear(texts[train], y[train], num_labels=4)
