"""results/noise.py and the leaderboard's tie marks: trials that differ by noise are tied with
rank 1, trials that differ by far more are not; `confirm --top auto` takes the tied completed ones."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest

import results.noise
from model.metrics import LEVEL2_MACRO_F1, classification_metrics
from results.export import NoiseCache, run_leaderboard, tied_trials
from results.noise import bootstrap_weights, compare_to_best, resampled_macro_f1
from rundir.paths import RunFiles
from rundir.predictions import write_dev_labels, write_trial_predictions
from rundir.trials import COMPLETED, PRUNED, TrialRecord, save_records
from stages.confirm.plan import plan_members

LABELS, ROWS = 6, 600


def truth(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, LABELS, ROWS)


def nearly(y: np.ndarray, pred: np.ndarray, *, fixed: int, broken: int) -> np.ndarray:
    """`pred` with its first `fixed` errors made right and its first `broken` right rows made wrong:
    a trial better on some rows and worse on others, by noise."""
    other = pred.copy()
    wrong, right = np.flatnonzero(pred != y), np.flatnonzero(pred == y)
    other[wrong[:fixed]] = y[wrong[:fixed]]
    other[right[:broken]] = (y[right[:broken]] + 1) % LABELS
    return other


def with_errors(y: np.ndarray, share: float, seed: int) -> np.ndarray:
    """`y` with `share` of its rows changed to another label (the same rows for the same seed)."""
    rng = np.random.default_rng(seed)
    pred = y.copy()
    wrong = rng.random(ROWS) < share
    pred[wrong] = (y[wrong] + rng.integers(1, LABELS, wrong.sum())) % LABELS
    return pred


def test_resampled_macro_f1_is_the_metric_on_each_resample():
    y, pred = truth(), with_errors(truth(), 0.3, seed=1)
    ones = np.ones((1, ROWS), dtype=np.float32)
    level1_of = np.arange(LABELS)
    assert resampled_macro_f1(y, pred, ones, num_labels=LABELS)[0] == pytest.approx(
        classification_metrics(y, pred, level1_of=level1_of)[LEVEL2_MACRO_F1], abs=1e-6)
    weights = bootstrap_weights(ROWS, resamples=3, seed=4)
    assert weights.sum(axis=1).tolist() == [ROWS] * 3
    rows = np.repeat(np.arange(ROWS), weights[1].astype(int))  # resample 1 written out row by row
    assert resampled_macro_f1(y, pred, weights, num_labels=LABELS)[1] == pytest.approx(
        classification_metrics(y[rows], pred[rows], level1_of=level1_of)[LEVEL2_MACRO_F1], abs=1e-5)
    # a label absent from truth and predictions counts as F1 0, as the competition's scorer does
    assert resampled_macro_f1(y, y, ones, num_labels=LABELS + 2)[0] == pytest.approx(LABELS / (LABELS + 2))


def test_a_trial_that_differs_by_noise_is_tied_and_a_much_worse_one_is_not():
    y = truth()
    best = with_errors(y, 0.30, seed=1)
    close = nearly(y, best, fixed=8, broken=12)  # 20 of 600 rows differ, each way: within the noise
    far = with_errors(y, 0.60, seed=3)  # twice the errors: clearly worse
    noise = compare_to_best(y, {"best": best, "close": close, "far": far}, "best", num_labels=LABELS)
    assert noise["best"].tied_with_best and noise["best"].p_better_best == 0.0
    assert noise["close"].tied_with_best and noise["close"].p_better_best < 0.95
    assert not noise["far"].tied_with_best and noise["far"].p_better_best > 0.95
    for n in noise.values():
        assert n.low < n.high
    assert noise["far"].high < noise["best"].low  # their intervals do not even overlap


def fabricated_run(tmp_path) -> RunFiles:
    """A run directory as a search leaves it, but for Ray's files: four trials with dev predictions."""
    files = RunFiles(tmp_path / "run")
    files.root.mkdir()
    files.run_json.write_text(json.dumps({
        "name": "run", "created": "2026-12-06T00:00:00+00:00", "searched": ["lr"], "max_epochs": 2, "seed": 0,
        "fold": 0, "settings": {"num_samples": 4, "grace_period": 1, "reduction_factor": 2}}))
    y = truth()
    write_dev_labels(files, y, num_labels=LABELS)
    a = with_errors(y, 0.30, seed=0)
    preds = {"a": a, "b": nearly(y, a, fixed=8, broken=12), "c": with_errors(y, 0.60, seed=2),
             "d": nearly(y, a, fixed=5, broken=5)}
    statuses = {"a": COMPLETED, "b": COMPLETED, "c": COMPLETED, "d": PRUNED}
    records = {}
    for number, (trial, pred) in enumerate(preds.items()):
        write_trial_predictions(files, trial, pred)
        score = classification_metrics(y, pred, level1_of=np.arange(LABELS))[LEVEL2_MACRO_F1]
        records[trial] = TrialRecord(trial_id=trial, optuna_number=number, params={"lr": 0.01 * (number + 1)},
                                     status=statuses[trial], history=[{"epoch": 2, LEVEL2_MACRO_F1: score}])
    save_records(files, records)
    return files


def test_the_leaderboard_marks_the_trials_tied_with_rank_1_and_confirm_auto_takes_the_completed_ones(tmp_path):
    files = fabricated_run(tmp_path)
    board = run_leaderboard(files.root).set_index("trial_id")
    assert board.loc["c", "tied_with_best"] == False  # noqa: E712 (a pandas boolean)
    assert board.loc["a", "tied_with_best"] and board.loc["b", "tied_with_best"]
    assert (board["level2_ci_low"] < board["level2_macro_f1"]).all()
    assert (board["level2_macro_f1"] < board["level2_ci_high"]).all()
    frame = run_leaderboard(files.root)
    assert set(tied_trials(frame, status=COMPLETED)["trial_id"]) == {"a", "b"}
    members = plan_members(files.root, top="auto", linear=False, split_seed=0)
    assert [m.name for m in members] == [f"trial-{frame.set_index('trial_id').loc[t, 'optuna_number']}"
                                        for t in tied_trials(frame, status=COMPLETED)["trial_id"]]


def test_export_rebuilds_a_missing_or_damaged_leaderboard_in_place(tmp_path, capsys):
    from cli.main import main
    from results.export import read_leaderboard_csv

    files = fabricated_run(tmp_path)
    files.leaderboard_csv.write_text("garbage,\n")
    main(["export", str(files.root), "--out", str(files.leaderboard_csv)])
    assert "rebuilt from trials.json" in capsys.readouterr().out
    rebuilt = read_leaderboard_csv(files.leaderboard_csv)
    assert rebuilt["trial_id"].tolist() == run_leaderboard(files.root)["trial_id"].tolist()
    files.leaderboard_csv.unlink()
    main(["export", str(files.root), "--out", str(files.leaderboard_csv)])
    assert files.leaderboard_csv.exists()


def test_the_live_leaderboard_computes_a_trial_again_only_when_its_predictions_change(tmp_path, monkeypatch):
    files = RunFiles(tmp_path)
    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, 300)
    write_dev_labels(files, y, num_labels=5)
    preds = {t: np.where(rng.random(300) < share, y, rng.integers(0, 5, 300)) for t, share in
             (("a", 0.8), ("b", 0.7), ("c", 0.5))}
    for trial, pred in preds.items():
        write_trial_predictions(files, trial, pred)
    calls = []
    real = results.noise.resampled_macro_f1
    monkeypatch.setattr(results.noise, "resampled_macro_f1", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    cache, frame = NoiseCache(), pd.DataFrame({"trial_id": ["a", "b", "c"]})
    first = cache.noise(files, frame)
    assert len(calls) == 3
    assert cache.noise(files, frame) == first and len(calls) == 3  # nothing changed: nothing computed
    preds["c"] = y.copy()  # trial c improved
    write_trial_predictions(files, "c", preds["c"])
    path = files.predictions_dir / "c.npy"
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000))
    again = cache.noise(files, frame)
    assert len(calls) == 4  # c alone
    assert again == compare_to_best(y, preds, "a", num_labels=5)
