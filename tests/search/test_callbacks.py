from types import SimpleNamespace

from ray.tune.experiment import Trial

from model import metrics as M
from results.files import RunFiles
from results.records import TrialRecord
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
