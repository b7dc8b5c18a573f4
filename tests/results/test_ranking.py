import io
import json
import math

import numpy as np
import pandas as pd
import pytest

from model import metrics as M
from results.export import read_leaderboard_csv, render, run_leaderboard, select, write_leaderboard
from results.ranking import COLUMNS, fold_std, leaderboard
from results.timeline import busy_fraction
from rundir.io import atomic_write_json
from rundir.paths import RunFiles
from rundir.trials import COMPLETED, ERROR, PRUNED, RUNNING, TrialRecord, load_records, save_records


def rec(trial_id, status, scores, number=None, **kw):
    history = [{M.EPOCH: e, M.LEVEL2_MACRO_F1: s, M.LEVEL1_MACRO_F1: s + 0.1, M.ACCURACY: 0.5,
                M.DEV_LOSS: 1.0, M.WORST5_F1: 0.0} for e, s in enumerate(scores, start=1)]
    return TrialRecord(trial_id=trial_id, status=status, history=history, optuna_number=number, **kw)


def test_full_budget_before_partial_before_running_before_errors():
    records = [
        rec("lucky", PRUNED, [0.9], 0),  # a great epoch-1 score, but pruned
        rec("done", COMPLETED, [0.3, 0.5, 0.4], 1),
        rec("err", ERROR, [], 2, error="ValueError: boom"),
        rec("live", RUNNING, [0.95, 0.97], 3),
        rec("done2", COMPLETED, [0.6, 0.2, 0.1], 4),
        rec("half", PRUNED, [0.1, 0.2], 5),
    ]
    board = leaderboard(records, max_epochs=3, param_names=[])
    assert board["trial_id"].tolist() == ["done2", "done", "lucky", "half", "live", "err"]
    assert board["rank"].tolist() == [1, 2, 3, 4, 5, 6]
    first = board.iloc[0]
    # scores at the best epoch, not the last
    assert first[M.LEVEL2_MACRO_F1] == 0.6 and first[M.BEST_EPOCH] == 1 and first["epochs"] == 3
    assert first[M.LEVEL1_MACRO_F1] == pytest.approx(0.7)
    assert board.set_index("trial_id").loc["half", "budget"] == pytest.approx(2 / 3)
    assert board.set_index("trial_id").loc["lucky", "budget"] == pytest.approx(1 / 3)
    error_row = board.iloc[-1]
    assert error_row["error"] == "ValueError: boom" and math.isnan(error_row[M.LEVEL2_MACRO_F1])


def test_ties_rank_more_epochs_then_earlier_trial_first():
    records = [rec("b", PRUNED, [0.5], 7), rec("a", PRUNED, [0.5], 3), rec("c", PRUNED, [0.1, 0.5], 9)]
    board = leaderboard(records, max_epochs=4, param_names=[])
    assert board["trial_id"].tolist() == ["c", "a", "b"]


def test_best_epoch_on_ties_is_the_earliest():
    board = leaderboard([rec("a", COMPLETED, [0.4, 0.6, 0.6])], max_epochs=3, param_names=[])
    assert board.iloc[0][M.BEST_EPOCH] == 2


def test_sparse_conditional_parameters_are_empty_cells():
    records = [rec("a", COMPLETED, [0.5], 0, params={"loss": "focal", "focal_gamma": 2.0}),
               rec("b", COMPLETED, [0.4], 1, params={"loss": "ce"})]
    board = leaderboard(records, max_epochs=1, param_names=["loss", "focal_gamma"])
    assert list(board.columns) == COLUMNS + ["param.loss", "param.focal_gamma"]
    assert board["param.focal_gamma"].iloc[0] == 2.0 and pd.isna(board["param.focal_gamma"].iloc[1])


def test_records_and_leaderboard_round_trip_through_files(tmp_path):
    files = RunFiles(tmp_path)
    records = {r.trial_id: r for r in [rec("a", COMPLETED, [0.5, 0.7], 0, params={"lr": 0.01}),
                                        rec("b", PRUNED, [0.2], 1, params={"lr": 0.1})]}
    save_records(files, records)
    assert load_records(files) == records
    atomic_write_json(files.run_json, {"name": "r", "created": "2026-01-01T00:00:00+00:00", "max_epochs": 2,
                                       "searched": ["lr"], "seed": 3, "fold": 1,
                                       "settings": {"num_samples": 2, "grace_period": 1, "reduction_factor": 2}})
    written = write_leaderboard(files, records, max_epochs=2, param_names=["lr"], seed=3, fold=1)
    from_csv = read_leaderboard_csv(files.leaderboard_csv)
    assert from_csv["trial_id"].tolist() == ["a", "b"]
    assert from_csv[M.LEVEL2_MACRO_F1].tolist() == written[M.LEVEL2_MACRO_F1].tolist()
    rebuilt = run_leaderboard(tmp_path)
    pd.testing.assert_frame_equal(rebuilt, written)
    assert not list(tmp_path.glob(".*.tmp"))  # no temp files left behind


def test_add_evaluation_replaces_a_re_reported_epoch():
    record = rec("a", RUNNING, [0.1, 0.2, 0.3])
    record.add_evaluation({M.EPOCH: 2, M.LEVEL2_MACRO_F1: 0.25, "other": 1})
    assert [h[M.EPOCH] for h in record.history] == [1, 2]
    assert record.history[-1][M.LEVEL2_MACRO_F1] == 0.25 and "other" not in record.history[-1]


def test_not_a_run_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a run directory"):
        run_leaderboard(tmp_path)


def sample_board():
    records = [rec("a", COMPLETED, [0.5, 0.7], 0, params={"lr": 0.01, "loss": "focal", "focal_gamma": 2.0}),
               rec("b", PRUNED, [0.2], 1, params={"lr": 0.1, "loss": "ce"}),
               rec("c", ERROR, [], 2, params={"lr": 0.05, "loss": "ce"}, error="ValueError: x")]
    return leaderboard(records, max_epochs=2, param_names=["lr", "loss", "focal_gamma"], seed=0, fold=0,
                       command_prefix="python -m search train-one --seed 0")


def test_select_by_status_and_top_keeps_ranks():
    board = sample_board()
    assert select(board, statuses=["pruned", "error"])["rank"].tolist() == [2, 3]
    assert select(board, top=1)["trial_id"].tolist() == ["a"]
    assert select(board, statuses=["error"], top=5)["trial_id"].tolist() == ["c"]
    with pytest.raises(ValueError, match=r"--status done is not a status; statuses are: completed"):
        select(board, statuses=["done"])


def test_render_formats():
    board = sample_board()
    csv = read_leaderboard_csv(io.StringIO(render(board, "csv")))
    assert csv["level2_macro_f1"].tolist()[:2] == board["level2_macro_f1"].tolist()[:2]
    rows = json.loads(render(board, "json"))
    assert rows[0]["level2_macro_f1"] == board["level2_macro_f1"].iloc[0]  # full precision
    assert rows[1]["param.focal_gamma"] is None and rows[2]["best_epoch"] is None
    md = render(board, "md").splitlines()
    assert md[0].startswith("|") and "focal_gamma" in md[0] and "command" not in md[0]
    assert "nan" not in render(board, "md")
    assert board["command"].iloc[0] == ("python -m search train-one --seed 0 --set lr=0.01 --set loss=focal "
                                        "--set focal_gamma=2.0")


def test_numeric_looking_trial_ids_survive_the_csv():
    board = leaderboard([rec("8e123456", COMPLETED, [0.5], 0), rec("01234567", PRUNED, [0.1], 1)], max_epochs=1,
                        param_names=[])
    back = read_leaderboard_csv(io.StringIO(render(board.head(1), "csv")))
    assert back["trial_id"].tolist() == ["8e123456"]
    assert read_leaderboard_csv(io.StringIO(render(board, "csv")))["trial_id"].tolist() == ["8e123456", "01234567"]


def test_busy_fraction():
    def timed(start, end):
        return TrialRecord(trial_id=f"{start}", started_at=start, ended_at=end)

    # two slots: both busy from 0 to 10, then one trial alone until 20
    records = [timed(0, 10), timed(0, 5), timed(5, 10), timed(10, 20)]
    assert busy_fraction(records, 2) == pytest.approx(0.5)
    assert busy_fraction(records, 1) == pytest.approx(1.0)
    assert busy_fraction([timed(0, 10), timed(20, 30)], 1) == pytest.approx(20 / 30)
    assert busy_fraction([], 2) is None


def test_fold_std_is_the_sample_std_of_the_finite_scores():
    assert fold_std([0.516, 0.528, 0.513, 0.504, 0.532]) == pytest.approx(0.011393, abs=1e-6)
    assert fold_std([0.5, float("nan"), 0.7]) == pytest.approx(np.std([0.5, 0.7], ddof=1))
    assert math.isnan(fold_std([0.5])) and math.isnan(fold_std([]))
