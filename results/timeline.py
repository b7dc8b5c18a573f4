"""When trials ran: pure functions over the records' start and end times."""

from __future__ import annotations

from collections.abc import Iterable

from rundir.trials import TrialRecord


def busy_fraction(records: Iterable[TrialRecord], slots: int, *, now: float | None = None) -> float | None:
    """Fraction of the search's span (first start to last end) during which `slots` trials ran at
    once. Trials still running count until `now` (default: their last start). None if no trial ran."""
    intervals = [(r.started_at, r.ended_at if r.ended_at is not None else (now or r.started_at))
                 for r in records if r.started_at is not None]
    if not intervals:
        return None
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    span = events[-1][0] - events[0][0]
    if span <= 0:
        return None
    busy, running, last = 0.0, 0, events[0][0]
    for time, step in events:
        if running >= slots:
            busy += time - last
        running, last = running + step, time
    return busy / span
