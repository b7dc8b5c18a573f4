"""Schedulers whose state survives a driver restart, and a search generator whose budget does.

Ray Tune restores neither on `Tuner.restore`: the scheduler comes back empty (ray issue 30838), so
resumed trials would never be compared with the trials before the restart, and the sample budget
comes back frozen at its old value (ray issue 42221). Both are rebuilt here from what the run
stores: the per-epoch history of every trial (RUN_DIR/trials.json) and run.json's budget. The
rungs, the budget and the limiter's live trials are Ray's private state, reached through
search/internals.py only.

`--scheduler` picks one of SCHEDULER_CLASSES; a new one is a class here with `for_search` (its
arguments from the launch flags), `replay` (rebuild its state from recorded histories) and
`rung_records`, and its name in rundir.settings.SCHEDULERS (SCHEDULER_CLASSES pairs them in order).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable
from typing import Any

import numpy as np
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, MedianStoppingRule
from ray.tune.search import SearchGenerator

from rundir import keys as K
from rundir.settings import SCHEDULERS
from search import internals
from search.deadline import past_deadline

# What every scheduler compares: the trial's level-2 macro-F1 (its best so far), per epoch.
_METRIC = {"time_attr": K.TIME_ATTR, "metric": K.OBJECTIVE, "mode": "max"}


class ResumableASHA(ASHAScheduler):
    """ASHA (Li et al. 2020) whose rungs can be refilled from recorded results: one bracket by
    default, several for ResumableHyperBand, each trial's bracket a function of its id."""

    def __init__(self, *, brackets: int = 1, **kwargs):
        super().__init__(brackets=brackets, **kwargs)
        sizes = np.array(internals.asha_bracket_sizes(self), dtype=float)
        weights = np.exp(sizes - sizes.max())  # Ray's weights: brackets with more rungs more often
        self.bracket_weights = weights / weights.sum()

    @classmethod
    def for_search(cls, *, max_epochs: int, grace_period: int, reduction_factor: float) -> ResumableASHA:
        return cls(max_t=max_epochs, grace_period=grace_period, reduction_factor=reduction_factor, **_METRIC)

    def bracket_of(self, trial_id: str) -> int:
        """The trial's bracket, drawn with Ray's weights from a generator seeded by the trial id (Ray
        draws from numpy's global one), so a resumed run puts every trial back where it was."""
        if len(self.bracket_weights) == 1:
            return 0
        rng = np.random.default_rng(zlib.crc32(trial_id.encode()))
        return int(rng.choice(len(self.bracket_weights), p=self.bracket_weights))

    def on_trial_add(self, tune_controller, trial) -> None:
        super().on_trial_add(tune_controller, trial)  # checks metric and mode, draws a bracket at random
        internals.asha_assign(self, trial.trial_id, self.bracket_of(trial.trial_id))

    def replay(self, histories: dict[str, Iterable[tuple[float, float]]]) -> None:
        """Record each trial's past (time, metric) results in its bracket's rungs; decisions are discarded.

        A rung holds one value per trial, set by the trial's result at its milestone; replaying
        each trial's results in time order therefore rebuilds the rungs of the uninterrupted run,
        whatever the order of the trials.
        """
        for trial_id, history in histories.items():
            bracket = self.bracket_of(trial_id)
            for time, value in sorted(history):
                internals.asha_record(self, trial_id, time, value, bracket)

    def rung_records(self, bracket: int = 0) -> list[tuple[float, dict[str, float]]]:
        """(milestone, {trial_id: signed metric}) per rung of a bracket, lowest milestone first."""
        return list(reversed(internals.asha_rungs(self, bracket)))


def hyperband_brackets(max_t: float, grace_period: float, reduction_factor: float) -> int:
    """Hyperband's s_max + 1: one bracket per grace period grace * factor**s that is <= max_t."""
    return int(math.floor(math.log(max_t / grace_period) / math.log(reduction_factor) + 1e-9)) + 1


class ResumableHyperBand(ResumableASHA):
    """Asynchronous Hyperband (Li et al. 2020; Ray's ASHA with several brackets): bracket s stops
    trials from epoch grace * factor**s on, so some trials are judged late, hedging against an
    early rung that misjudges slow starters. Brackets with more rungs take more trials."""

    @classmethod
    def for_search(cls, *, max_epochs: int, grace_period: int, reduction_factor: float) -> ResumableHyperBand:
        return cls(max_t=max_epochs, grace_period=grace_period, reduction_factor=reduction_factor,
                   brackets=hyperband_brackets(max_epochs, grace_period, reduction_factor), **_METRIC)


class ResumableMedian(MedianStoppingRule):
    """The median stopping rule (Golovin et al. 2017): from the grace period on, stop a trial whose
    best result so far is below the median of the other trials' running means at the same epoch
    (once at least `min_samples_required` trials reached it). Results are kept by trial id, so a
    resume can replay them; a trial is never paused to wait for comparisons (paused trials would
    be restored from checkpoints) and the final result is not counted twice."""

    def __init__(self, *, time_attr: str, metric: str, mode: str, grace_period: float, min_samples_required: int = 3):
        super().__init__(time_attr=time_attr, metric=metric, mode=mode, grace_period=grace_period,
                         min_samples_required=min_samples_required, min_time_slice=float("inf"), hard_stop=True)
        self.time_key, self.metric_key = time_attr, metric

    @classmethod
    def for_search(cls, *, max_epochs: int, grace_period: int, reduction_factor: float) -> ResumableMedian:
        return cls(grace_period=grace_period, **_METRIC)

    def on_trial_result(self, tune_controller, trial, result: dict[str, Any]) -> str:
        return super().on_trial_result(tune_controller, internals.trial_ref(trial.trial_id), result)

    def on_trial_complete(self, tune_controller, trial, result: dict[str, Any]) -> None:
        seen = internals.median_results(self).get(trial.trial_id)
        if result and self.time_key in result and (not seen or result[self.time_key] > seen[-1][self.time_key]):
            internals.median_record(self, trial.trial_id, result)

    def replay(self, histories: dict[str, Iterable[tuple[float, float]]]) -> None:
        """Give each trial its past (time, metric) results, as the uninterrupted run had them."""
        for trial_id, history in histories.items():
            for time, value in sorted(history):
                internals.median_record(self, trial_id, {self.time_key: time, self.metric_key: value})

    def rung_records(self) -> list[tuple[float, dict[str, float]]]:
        return []


class ResumableFIFO(FIFOScheduler):
    """No early stopping: every trial trains its full budget. Nothing to rebuild on resume."""

    @classmethod
    def for_search(cls, *, max_epochs: int, grace_period: int, reduction_factor: float) -> ResumableFIFO:
        return cls()

    def replay(self, histories: dict[str, Iterable[tuple[float, float]]]) -> None:
        pass

    def rung_records(self) -> list[tuple[float, dict[str, float]]]:
        return []


# --scheduler (its names: rundir.settings.SCHEDULERS): `asha` stops the worst trials at each rung
# (grace period, reduction factor); `hyperband` is ASHA over several brackets of grace periods;
# `median` stops trials below the median of the others; `fifo` trains every trial to the end.
# The names are SCHEDULERS' (one place, free of Ray, for the command line); the classes are in their order.
SCHEDULER_CLASSES = dict(zip(SCHEDULERS, (ResumableASHA, ResumableHyperBand, ResumableMedian, ResumableFIFO),
                             strict=True))
SearchScheduler = ResumableASHA | ResumableMedian | ResumableFIFO


class BudgetSearchGenerator(SearchGenerator):
    """SearchGenerator whose total number of trials is `budget`, also after a restore, and that
    creates none after the driver's deadline (search/deadline.py). `retry`:
    errored trials the restored run resumes; they count as live again in the concurrency limiter
    (`searcher`), which otherwise ignores their completion. `location`: (storage path, name) of
    Ray's experiment where the run is now; the trials it creates after a restore go there, not to
    the launch location its restored state names (a run directory may be moved or copied)."""

    def __init__(self, searcher, *, budget: int, retry: frozenset[str] = frozenset(),
                 location: tuple[str, str] | None = None):
        super().__init__(searcher)
        self.budget, self.retry, self.location = budget, retry, location

    def next_trial(self):
        return None if past_deadline() else super().next_trial()

    def is_finished(self) -> bool:
        return past_deadline() or super().is_finished()

    def restore_from_dir(self, dirpath: str) -> None:
        if self.location is not None:
            internals.drop_foreign_state(dirpath, *self.location)
        super().restore_from_dir(dirpath)
        internals.count_as_live(self.searcher, self.retry)

    def set_state(self, state: dict) -> None:
        super().set_state(state)
        internals.set_sample_budget(self, self.budget)
        if self.location is not None:
            internals.relocate_experiment(self, *self.location)
