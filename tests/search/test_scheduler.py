"""ASHA decisions are the same with and without a save/restore in the middle of the stream."""

import random

import pytest
from ray.tune.schedulers import TrialScheduler

from search.scheduler import ResumableASHA


class FakeTrial:
    def __init__(self, trial_id):
        self.trial_id = trial_id


def stream(seed=0, trials=12, max_t=8):
    """Interleaved (trial_id, epoch, score) results, as concurrent trials would report them."""
    rng = random.Random(seed)
    quality = {f"t{i}": rng.random() for i in range(trials)}
    progress = {t: 0 for t in quality}
    out = []
    while any(e < max_t for e in progress.values()):
        t = rng.choice([t for t, e in progress.items() if e < max_t])
        progress[t] += 1
        out.append((t, progress[t], quality[t] * progress[t] / max_t + rng.gauss(0, 0.02)))
    return out


def new_scheduler():
    return ResumableASHA(time_attr="epoch", metric="score", mode="max", max_t=8, grace_period=1,
                         reduction_factor=2)


def run(scheduler, results, stopped, history):
    decisions = []
    for trial_id, epoch, score in results:
        if trial_id in stopped:
            continue
        if trial_id not in history:
            scheduler.on_trial_add(None, FakeTrial(trial_id))
            history[trial_id] = []
        history[trial_id].append((epoch, score))
        action = scheduler.on_trial_result(None, FakeTrial(trial_id), {"epoch": epoch, "score": score})
        decisions.append((trial_id, epoch, action))
        if action == TrialScheduler.STOP:
            stopped.add(trial_id)
    return decisions


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("cut", [0.25, 0.5, 0.8])
def test_restore_mid_stream_gives_the_same_decisions(seed, cut):
    results = stream(seed)
    uninterrupted = run(new_scheduler(), results, set(), {})
    assert any(action == TrialScheduler.STOP for *_, action in uninterrupted)

    split = int(len(results) * cut)
    stopped, history = set(), {}
    first = run(new_scheduler(), results[:split], stopped, history)
    restored = new_scheduler()
    restored.replay(history)  # what RUN_DIR/trials.json holds at the kill
    for trial_id in history:
        if trial_id not in stopped:
            restored.on_trial_add(None, FakeTrial(trial_id))
    second = run(restored, results[split:], stopped, history)
    assert first + second == uninterrupted


def test_a_fresh_scheduler_without_replay_decides_differently():
    results = stream(0)
    uninterrupted = run(new_scheduler(), results, set(), {})
    split = len(results) // 2
    stopped, history = set(), {}
    first = run(new_scheduler(), results[:split], stopped, history)
    fresh = new_scheduler()  # what plain Tuner.restore gives: empty rungs
    for trial_id in history:
        fresh.on_trial_add(None, FakeTrial(trial_id))
    assert first + run(fresh, results[split:], stopped, history) != uninterrupted


def test_replay_fills_each_rung_with_the_result_at_its_milestone():
    scheduler = new_scheduler()
    scheduler.replay({"a": [(2, 0.2), (1, 0.1), (3, 0.3), (4, 0.4)], "b": [(1, 0.5)]})
    rungs = dict(scheduler.rung_records())
    assert rungs == {1: {"a": 0.1, "b": 0.5}, 2: {"a": 0.2}, 4: {"a": 0.4}, 8: {}}
