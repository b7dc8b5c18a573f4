"""Pointing a moved or copied run's records at where the run is now.

A run directory can be moved or copied and resumed where it is (`mv`, `cp -a`, another disk or
machine): paths recorded by an earlier driver still name the old location, and a copy must never
write into (or read from) its original.
"""

from __future__ import annotations

from pathlib import Path

from rundir.paths import RunFiles
from rundir.trials import TrialRecord


def relocate_checkpoints(files: RunFiles, records: dict[str, TrialRecord]) -> bool:
    """Point the records' checkpoint paths into `files.ray_dir`, where the run is now: a run moved
    or copied since a driver recorded them still names the old location. A checkpoint of trial
    <id> lives in `.../<ray dir>/trial_<id>/...` (`build_tuner`'s trial directories); paths not of
    that form are left alone. True if any changed."""
    ray_dir = files.ray_dir.resolve()
    changed = False
    for record in records.values():
        if not record.checkpoint:
            continue
        parts = Path(record.checkpoint).parts
        for i in range(len(parts) - 1, 0, -1):
            if parts[i] == f"trial_{record.trial_id}" and parts[i - 1] == files.ray_dir.name:
                moved = str(ray_dir.joinpath(*parts[i:]))
                changed |= moved != record.checkpoint
                record.checkpoint = moved
                break
    return changed
