"""Pointing a moved or copied run's records at where the run is now.

A run directory can be moved or copied and resumed where it is (`mv`, `cp -a`, another disk or
machine): paths recorded by an earlier driver still name the old location, and a copy must never
write into (or read from) its original.
"""

from __future__ import annotations

from pathlib import Path

from rundir.paths import TRIAL_STATE_FILE, RunFiles
from rundir.trials import TrialRecord


def checkpoint_here(files: RunFiles, trial_id: str, stored: str) -> Path | None:
    """Where the checkpoint a record names (`stored`, an absolute path written by some driver, maybe
    in the run's original location) is in this run: the same `trial_<id>/...` path under this run's
    ray/ directory (`build_tuner`'s trial directories). None when `stored` is not of that form."""
    parts = Path(stored).parts
    for i in range(len(parts) - 1, 0, -1):
        if parts[i] == f"trial_{trial_id}" and parts[i - 1] == files.ray_dir.name:
            return files.ray_dir.resolve().joinpath(*parts[i:])
    return None


def relocate_checkpoints(files: RunFiles, records: dict[str, TrialRecord]) -> bool:
    """Point the records' checkpoint paths into `files.ray_dir`, where the run is now: a run moved
    or copied since a driver recorded them still names the old location. Paths not of the form
    `checkpoint_here` knows are left alone. True if any changed."""
    changed = False
    for record in records.values():
        moved = checkpoint_here(files, record.trial_id, record.checkpoint) if record.checkpoint else None
        if moved is not None:
            changed |= str(moved) != record.checkpoint
            record.checkpoint = str(moved)
    return changed


def trial_checkpoint_dir(files: RunFiles, trial_id: str, stored: str) -> Path:
    """The checkpoint directory of trial `trial_id` in this run, for reading. Never a path outside
    the run: a copy whose own checkpoint was deleted must not silently read its original's."""
    here = checkpoint_here(files, trial_id, stored)
    if here is None:  # a URI storage keeps checkpoints remote; a path of another form: as recorded
        here = Path(stored)
    if not (here / TRIAL_STATE_FILE).is_file():
        raise FileNotFoundError(f"the trial's checkpoint {here / TRIAL_STATE_FILE} does not exist: it was deleted, "
                                "or the run's storage is remote; copy the run directory with its ray/ folder")
    return here
