"""A wall-time budget for a Tune experiment (the search's `--time-budget`, the pipeline's stage
shares) that a resume can extend.

Why not Ray's own `time_budget_s`: its `TimeoutStopper` ends the experiment through
`stop_all`, which also marks the search algorithm finished and stops the running trials without
a trial end reaching the callbacks; and Ray saves that stopper and that flag in the experiment's
state and brings both back on a restore. A resumed experiment then stopped at once (its restored
budget long spent), created no new trial (its restored generator finished), and its stopped
confirm jobs could never be continued.

Here instead: each trial ends at its first result after the deadline (`DeadlineStopper`, a
per-trial stop, so every callback sees the trial end), and the search algorithms create no trial
after it (`past_deadline()` in their `next_trial`/`is_finished`), without setting any flag that a
restore would bring back. The deadline itself lives in this driver process (`until`), not in the
stopper: the stopper Ray restores from an earlier driver's state reads this driver's deadline.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

from ray import tune
from ray.tune.search.basic_variant import BasicVariantGenerator

_DEADLINE: list[float] = []  # this driver's deadline (time.monotonic), while an `until` block runs


@contextlib.contextmanager
def until(budget_s: float | None) -> Iterator[None]:
    """Trials end, and no trial starts, once `budget_s` seconds have passed (None: no deadline)."""
    if budget_s is None:
        yield
        return
    _DEADLINE.append(time.monotonic() + budget_s)
    try:
        yield
    finally:
        _DEADLINE.pop()


def past_deadline() -> bool:
    return bool(_DEADLINE) and time.monotonic() >= _DEADLINE[-1]


class DeadlineStopper(tune.Stopper):
    """Stops each trial at its first result after this driver's deadline; never the whole experiment."""

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return past_deadline()

    def stop_all(self) -> bool:
        return False


class DeadlineVariantGenerator(BasicVariantGenerator):
    """Tune's grid generator (the confirm stage's jobs), creating no trial after the deadline."""

    def next_trial(self):
        return None if past_deadline() else super().next_trial()

    def is_finished(self) -> bool:
        return past_deadline() or super().is_finished()
