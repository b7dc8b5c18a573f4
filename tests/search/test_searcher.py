"""The searcher's bookkeeping, driven directly (no Ray cluster needed)."""

import optuna
from optuna.trial import TrialState
from ray.tune.search import Searcher

from model import metrics as M
from rundir import keys as K
from search.searcher import FidelityAwareOptunaSearch
from spaces.space import parse_space

SPACE = parse_space("""
params:
  lr: {float: [1.0e-4, 1.0e-2], log: true}
  loss: {choice: [ce, focal]}
  focal_gamma: {float: [0.5, 3.0], when: {loss: focal}}
warm_start:
  first: {lr: 1.0e-3, loss: ce}
""")


def result(epoch, score, best, finished=False):
    return {M.EPOCH: epoch, M.LEVEL2_MACRO_F1: score, M.BEST_LEVEL2_MACRO_F1: best, M.FINISHED: finished}


def make(tmp_path):
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'study.db'}")
    return FidelityAwareOptunaSearch(SPACE, storage=storage, study_name="t", seed=0), storage


def test_warm_start_first_and_suggestion_carries_number(tmp_path):
    searcher, _ = make(tmp_path)
    first = searcher.suggest("t0")
    assert first == {"params": {"lr": 1e-3, "loss": "ce"}, "optuna_number": 0, "warm_start": "first"}
    second = searcher.suggest("t1")
    assert second["optuna_number"] == 1 and second["warm_start"] is None
    assert ("focal_gamma" in second["params"]) == (second["params"]["loss"] == "focal")


def test_states_agree_with_what_happened(tmp_path):
    searcher, storage = make(tmp_path)
    for tid in ("done", "pruned", "failed"):
        searcher.suggest(tid)
    # completed: 3 epochs, best at epoch 2; the last result reaches on_trial_complete only
    searcher.on_trial_result("done", result(1, 0.3, 0.3))
    searcher.on_trial_result("done", result(2, 0.6, 0.6))
    searcher.on_trial_complete("done", result(3, 0.5, 0.6, finished=True))
    # stopped by ASHA after epoch 1 with a high score
    searcher.on_trial_complete("pruned", result(1, 0.7, 0.7))
    searcher.on_trial_result("failed", result(1, 0.1, 0.1))
    searcher.on_trial_complete("failed", None, error=True)

    study = optuna.load_study(study_name="t", storage=storage)
    trials = {t.number: t for t in study.trials}
    done, pruned, failed = trials[0], trials[1], trials[2]
    assert done.state == TrialState.COMPLETE and done.value == 0.6  # best, not last
    assert done.intermediate_values == {1: 0.3, 2: 0.6, 3: 0.5}
    assert pruned.state == TrialState.PRUNED and pruned.intermediate_values == {1: 0.7}
    assert failed.state == TrialState.FAIL and failed.intermediate_values == {1: 0.1}
    # the study's best is the completed trial, not the pruned one with a higher epoch-1 score
    assert study.best_trial.number == 0


def test_duplicate_reports_and_completions_are_harmless(tmp_path):
    searcher, storage = make(tmp_path)
    searcher.suggest("a")
    searcher.on_trial_result("a", result(1, 0.2, 0.2))
    searcher.on_trial_result("a", result(1, 0.2, 0.2))  # a retried trial re-reports its epoch
    searcher.on_trial_complete("a", result(2, 0.4, 0.4, finished=True))
    searcher.on_trial_complete("a", result(2, 0.4, 0.4, finished=True))
    trial = optuna.load_study(study_name="t", storage=storage).trials[0]
    assert trial.state == TrialState.COMPLETE and trial.intermediate_values == {1: 0.2, 2: 0.4}


def test_restore_fails_trials_asked_after_the_snapshot_and_final_sweep(tmp_path):
    searcher, storage = make(tmp_path)
    searcher.suggest("t0")
    searcher.save(str(tmp_path / "searcher.pkl"))  # Ray's experiment snapshot
    searcher.suggest("t1")  # asked after the snapshot; then the driver is killed
    restored = FidelityAwareOptunaSearch(SPACE, storage=storage, study_name="t", seed=0, warm_start=False)
    restored.restore(str(tmp_path / "searcher.pkl"))
    states = {t.number: t.state for t in restored.study.trials}
    assert states == {0: TrialState.RUNNING, 1: TrialState.FAIL}  # t0 lives on in a restored Ray trial
    assert restored.reconcile(final=True) == [0]
    assert {t.state for t in restored.study.trials} == {TrialState.FAIL}
    assert not restored.study.get_trials(states=(TrialState.WAITING,))  # warm start not queued again


DISCRETE = parse_space("""
params:
  loss: {choice: [ce, focal]}
  pooler: {choice: [cls, mean]}
""")


def discrete(tmp_path, sampler="random"):
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'study.db'}")
    return FidelityAwareOptunaSearch(DISCRETE, storage=storage, study_name="d", seed=0, sampler=sampler)


def test_a_repeated_proposal_reuses_the_completed_result_and_is_not_trained(tmp_path):
    searcher = discrete(tmp_path)
    seen = []
    for i in range(4):  # 4 configurations in the space: 4 distinct suggestions, whatever the sampler repeats
        suggestion = searcher.suggest(f"t{i}")
        seen.append(tuple(sorted(suggestion["params"].items())))
        searcher.on_trial_complete(f"t{i}", result(2, 0.1 * (i + 1), 0.1 * (i + 1), finished=True))
    assert len(set(seen)) == 4
    trials = searcher.study.trials
    duplicates = [t for t in trials if K.DUPLICATE_OF in t.user_attrs]
    assert duplicates, "a random sampler over 4 configurations repeats one within 4 distinct draws (seed 0)"
    for t in duplicates:
        earlier = trials[t.user_attrs[K.DUPLICATE_OF]]
        assert t.params == earlier.params and t.state == TrialState.COMPLETE and t.value == earlier.value
        assert K.DUPLICATE_OF not in earlier.user_attrs
    # The space is exhausted: the search ends instead of training a configuration again.
    assert searcher.suggest("t4") == Searcher.FINISHED and searcher.exhausted


def test_a_proposal_equal_to_a_trial_in_flight_is_failed_not_trained(tmp_path):
    searcher = discrete(tmp_path)
    running = [searcher.suggest(f"r{i}")["params"] for i in range(4)]  # none completed yet
    assert len({tuple(sorted(p.items())) for p in running}) == 4
    failed = [t for t in searcher.study.trials if t.state == TrialState.FAIL]
    assert failed and all(K.DUPLICATE_OF in t.user_attrs for t in failed)
    # A pruned configuration stopped below the full budget: it may be proposed and trained again.
    searcher.on_trial_complete("r0", result(1, 0.1, 0.1, finished=False))
    again = searcher.suggest("r5")
    assert again["params"] == running[0]
