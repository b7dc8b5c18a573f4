"""ASHA whose rung records survive a driver restart, and a search generator whose budget does.

Ray Tune restores neither on `Tuner.restore`: the scheduler comes back empty (ray issue 30838), so
resumed trials would never be compared with the trials before the restart, and the sample budget
comes back frozen at its old value (ray issue 42221). Both are rebuilt here from what the run
stores: the per-epoch history of every trial (RUN_DIR/trials.json) and run.json's budget. The
rungs, the budget and the limiter's live trials are Ray's private state, reached through
search/internals.py only.
"""

from __future__ import annotations

from collections.abc import Iterable

from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import SearchGenerator

from search import internals


class ResumableASHA(ASHAScheduler):
    """ASHAScheduler with one bracket whose rungs can be refilled from recorded results."""

    def __init__(self, **kwargs):
        super().__init__(brackets=1, **kwargs)

    def replay(self, histories: dict[str, Iterable[tuple[float, float]]]) -> None:
        """Record each trial's past (time, metric) results in the rungs; decisions are discarded.

        A rung holds one value per trial, set by the trial's result at its milestone; replaying
        each trial's results in time order therefore rebuilds the rungs of the uninterrupted run,
        whatever the order of the trials.
        """
        for trial_id, history in histories.items():
            for time, value in sorted(history):
                internals.asha_record(self, trial_id, time, value)

    def rung_records(self) -> list[tuple[float, dict[str, float]]]:
        """(milestone, {trial_id: signed metric}) per rung, lowest milestone first."""
        return list(reversed(internals.asha_rungs(self)))


class ResumableFIFO(FIFOScheduler):
    """No early stopping: every trial trains its full budget. Nothing to rebuild on resume."""

    def replay(self, histories: dict[str, Iterable[tuple[float, float]]]) -> None:
        pass

    def rung_records(self) -> list[tuple[float, dict[str, float]]]:
        return []


# --scheduler (its names: search.settings.SCHEDULERS): `asha` stops the worst trials at each rung
# (grace period, reduction factor); `fifo` trains every trial to the end (ASHA's baseline).
SCHEDULER_CLASSES = {"asha": ResumableASHA, "fifo": ResumableFIFO}


class BudgetSearchGenerator(SearchGenerator):
    """SearchGenerator whose total number of trials is `budget`, also after a restore. `retry`:
    errored trials the restored run resumes; they count as live again in the concurrency limiter
    (`searcher`), which otherwise ignores their completion. `location`: (storage path, name) of
    Ray's experiment where the run is now; the trials it creates after a restore go there, not to
    the launch location its restored state names (a run directory may be moved or copied)."""

    def __init__(self, searcher, *, budget: int, retry: frozenset[str] = frozenset(),
                 location: tuple[str, str] | None = None):
        super().__init__(searcher)
        self.budget, self.retry, self.location = budget, retry, location

    def restore_from_dir(self, dirpath: str) -> None:
        super().restore_from_dir(dirpath)
        internals.count_as_live(self.searcher, self.retry)

    def set_state(self, state: dict) -> None:
        super().set_state(state)
        internals.set_sample_budget(self, self.budget)
        if self.location is not None:
            internals.relocate_experiment(self, *self.location)
