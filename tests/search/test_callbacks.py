from types import SimpleNamespace

from ray.tune.experiment import Trial

from model import metrics as M
from rundir.paths import RunFiles
from rundir.trials import TrialRecord
from search.callbacks import LeaderboardCallback


def trial(trial_id, status, last_result=None):
    return SimpleNamespace(trial_id=trial_id, status=status, last_result=last_result or {}, error_file=None)


def test_sync_aligns_running_records_with_a_restored_experiment(tmp_path):
    board = LeaderboardCallback(RunFiles(tmp_path), max_epochs=2, param_names=[], seed=0, fold=0)
    history = [{M.EPOCH: 1, M.LEVEL2_MACRO_F1: 0.5}]
    for tid in ("live", "done", "cut", "broken", "lost", "old"):
        board.records[tid] = TrialRecord(trial_id=tid, history=list(history))
    board.records["old"].status = "completed"
    trials = [trial("live", Trial.RUNNING), trial("done", Trial.TERMINATED, {M.FINISHED: True}),
              trial("cut", Trial.TERMINATED, {M.FINISHED: False}), trial("broken", Trial.ERROR),
              trial("old", Trial.TERMINATED, {M.FINISHED: True})]
    assert board.sync(trials)
    status = {tid: r.status for tid, r in board.records.items()}
    assert status == {"live": "running", "done": "completed", "cut": "pruned", "broken": "error",
                      "lost": "error", "old": "completed"}
    assert board.records["lost"].error.startswith("lost: the driver was killed")
    assert not board.sync(trials)  # nothing left to change


def test_a_final_record_never_changes_again(tmp_path):
    board = LeaderboardCallback(RunFiles(tmp_path), max_epochs=4, param_names=[], seed=0, fold=0)
    history = [{M.EPOCH: e, M.LEVEL2_MACRO_F1: 0.1 * e} for e in (1, 2, 3, 4)]
    board.records["t"] = TrialRecord(trial_id="t", status="completed", history=list(history))
    # Ray's snapshot predates the end: the trial starts again and re-reports an older checkpoint
    again = trial("t", Trial.RUNNING, {M.EPOCH: 1, M.LEVEL2_MACRO_F1: 0.1, M.FINISHED: False})
    board.on_trial_start(0, [again], again)
    board.on_trial_result(0, [again], again, again.last_result)
    board.on_trial_complete(0, [again], again)
    assert board.records["t"].status == "completed" and board.records["t"].history == history
