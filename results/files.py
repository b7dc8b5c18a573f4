"""Where a run keeps its files, and crash-safe writes.

RUN_DIR = <storage-path>/<name> holds:
    run.json          the run's record: command line, settings, versions, git revision
    space.yaml        a copy of the search space as launched
    study.db          the Optuna study (SQLite)
    trials.json       one record per trial (params, per-epoch metrics, status), kept current
    leaderboard.csv   the ranked table, kept current
    ray/              Ray Tune's experiment directory (its state, trial_<id>/ directories, checkpoints)
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class RunFiles:
    root: Path

    @property
    def run_json(self) -> Path:
        return self.root / "run.json"

    @property
    def space_yaml(self) -> Path:
        return self.root / "space.yaml"

    @property
    def study_db(self) -> Path:
        return self.root / "study.db"

    @property
    def study_url(self) -> str:
        return f"sqlite:///{self.study_db.resolve()}"

    @property
    def trials_json(self) -> Path:
        return self.root / "trials.json"

    @property
    def leaderboard_csv(self) -> Path:
        return self.root / "leaderboard.csv"

    @property
    def ray_dir(self) -> Path:
        """Ray Tune's experiment directory, when the storage is local (see search/driver.py)."""
        return self.root / "ray"

    @property
    def driver_lock(self) -> Path:
        return self.root / ".driver.lock"

    @property
    def report_dir(self) -> Path:
        return self.root / "report"


def driver_pid(files: RunFiles) -> int | None:
    """The pid of the driver holding the run's lock, or None when no driver is running on it."""
    if not files.driver_lock.exists():
        return None
    with open(files.driver_lock) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = handle.read().strip()
            return int(text) if text.isdigit() else -1
        fcntl.flock(handle, fcntl.LOCK_UN)
        return None


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` so that a reader (or a crash) only ever sees the old or the new file."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that a reader (or a crash) only ever sees the old or the new file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, value: Any) -> None:
    atomic_write_text(path, json.dumps(value, indent=1, sort_keys=False, default=str) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))
