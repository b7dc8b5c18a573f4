"""Scheduler decisions are the same with and without a save/restore in the middle of the stream."""

import random

import pytest
from ray.tune.schedulers import TrialScheduler

from search import internals
from search.scheduler import ResumableASHA, ResumableHyperBand, ResumableMedian, hyperband_brackets


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


METRIC = {"time_attr": "epoch", "metric": "score", "mode": "max"}
FACTORIES = {
    "asha": lambda: ResumableASHA(max_t=8, grace_period=1, reduction_factor=2, **METRIC),
    "hyperband": lambda: ResumableHyperBand(max_t=8, grace_period=1, reduction_factor=2,
                                            brackets=hyperband_brackets(8, 1, 2), **METRIC),
    "median": lambda: ResumableMedian(grace_period=1, **METRIC),
}


def new_scheduler():
    return FACTORIES["asha"]()


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


@pytest.mark.parametrize("kind", FACTORIES)
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("cut", [0.25, 0.5, 0.8])
def test_restore_mid_stream_gives_the_same_decisions(kind, seed, cut):
    new_scheduler = FACTORIES[kind]
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


@pytest.mark.parametrize("kind", FACTORIES)
def test_a_fresh_scheduler_without_replay_decides_differently(kind):
    def differs(seed):
        new_scheduler = FACTORIES[kind]
        results = stream(seed)
        uninterrupted = run(new_scheduler(), results, set(), {})
        split = len(results) // 2
        stopped, history = set(), {}
        first = run(new_scheduler(), results[:split], stopped, history)
        fresh = new_scheduler()  # what plain Tuner.restore gives: empty rungs
        for trial_id in history:
            fresh.on_trial_add(None, FakeTrial(trial_id))
        return first + run(fresh, results[split:], stopped, history) != uninterrupted

    assert any(differs(seed) for seed in range(3))


def test_replay_fills_each_rung_with_the_result_at_its_milestone():
    scheduler = new_scheduler()
    scheduler.replay({"a": [(2, 0.2), (1, 0.1), (3, 0.3), (4, 0.4)], "b": [(1, 0.5)]})
    rungs = dict(scheduler.rung_records())
    assert rungs == {1: {"a": 0.1, "b": 0.5}, 2: {"a": 0.2}, 4: {"a": 0.4}, 8: {}}


def test_hyperband_spreads_trials_over_brackets_by_their_id_and_judges_them_at_their_own_rungs():
    scheduler = FACTORIES["hyperband"]()
    assert hyperband_brackets(8, 1, 2) == 4 and hyperband_brackets(4, 1, 2) == 3 and hyperband_brackets(4, 4, 2) == 1
    brackets = {f"t{i}": scheduler.bracket_of(f"t{i}") for i in range(200)}
    assert brackets == {t: FACTORIES["hyperband"]().bracket_of(t) for t in brackets}  # a function of the id
    counts = [list(brackets.values()).count(b) for b in range(4)]
    assert counts[0] > counts[1] > counts[2] > counts[3] > 0  # more rungs, more trials (Ray's weights)
    late = next(t for t, b in brackets.items() if b == 2)  # bracket 2: first rung at epoch 4
    scheduler.on_trial_add(None, FakeTrial(late))
    for epoch in (1, 2, 3):
        result = {"epoch": epoch, "score": 0.0}
        assert scheduler.on_trial_result(None, FakeTrial(late), result) == TrialScheduler.CONTINUE
    scheduler.replay({late: [(4, 0.3)]})
    assert dict(scheduler.rung_records(2)) == {4: {late: 0.3}, 8: {}}


def test_the_median_rule_stops_a_trial_below_the_others_running_means_once_three_reached_its_epoch():
    scheduler = FACTORIES["median"]()
    scheduler.replay({"a": [(1, 0.5), (2, 0.6)], "b": [(1, 0.4), (2, 0.5)]})
    low = FakeTrial("low")
    scheduler.on_trial_add(None, low)
    assert scheduler.on_trial_result(None, low, {"epoch": 1, "score": 0.1}) == TrialScheduler.CONTINUE  # 2 others
    scheduler.replay({"c": [(1, 0.45), (2, 0.55)]})
    assert scheduler.on_trial_result(None, low, {"epoch": 2, "score": 0.2}) == TrialScheduler.STOP
    high = FakeTrial("high")
    scheduler.on_trial_add(None, high)
    assert scheduler.on_trial_result(None, high, {"epoch": 1, "score": 0.6}) == TrialScheduler.CONTINUE
    scheduler.on_trial_complete(None, high, {"epoch": 1, "score": 0.6})  # the last result, not counted twice
    scheduler.on_trial_complete(None, FakeTrial("d"), {"epoch": 2, "score": 0.3})
    assert len(internals.median_results(scheduler)["high"]) == 1 and len(internals.median_results(scheduler)["d"]) == 1
