"""Where a run keeps its files, and crash-safe writes.

RUN_DIR = <storage-path>/<name> holds:
    run.json          the run's record: command line, settings, versions, git revision
    space.yaml        a copy of the search space as launched
    study.db          the Optuna study (SQLite)
    trials.json       one record per trial (params, per-epoch metrics, status), kept current
    leaderboard.csv   the ranked table, kept current
    ray/              Ray Tune's experiment directory (its state, trial_<id>/ directories, checkpoints)
    confirm/          the confirm stage (`ConfirmFiles`): the top configs retrained on every fold
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import sqlite3
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model.errors import ConfigError
from model.filemode import file_mode


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

    @property
    def confirm(self) -> ConfirmFiles:
        return ConfirmFiles(self.root / "confirm")


LINEAR_FILE = "linear.joblib"  # the linear member's fold model in its fold directory


@dataclass(frozen=True)
class ConfirmFiles:
    """RUN_DIR/confirm: the confirm stage (`python -m search confirm`), read by `ensemble` and `predict`.

        confirm.json     the stage's plan: K, F, S, split seed, budget, settings, labels, members
        jobs.json        one record per (member, fold, seed) job, kept current
        confirm.csv      one row per member, ranked
        models/<member>/fold<f>-seed<s>/   a network fold model (model.inference.save_model_dir), and
                         heldout.npz: its level-2 probabilities on the fold's held-out rows
        models/linear/fold<f>/             linear.joblib (the LinearMember) and heldout.npz
        oof/<member>.npz the member's out-of-fold probabilities over every training row
        ensemble.json    what `python -m search ensemble` chose
        ray/             Ray Tune's experiment directory of the stage (local storage)
    """

    root: Path  # RUN_DIR/confirm

    @classmethod
    def of(cls, run_dir: str | Path) -> ConfirmFiles:
        return RunFiles(Path(run_dir)).confirm

    @property
    def run_dir(self) -> Path:
        return self.root.parent

    @property
    def confirm_json(self) -> Path:
        return self.root / "confirm.json"

    @property
    def ensemble_json(self) -> Path:
        """What `python -m search ensemble` chose, read by `predict`."""
        return self.root / "ensemble.json"

    @property
    def jobs_json(self) -> Path:
        return self.root / "jobs.json"

    @property
    def confirm_csv(self) -> Path:
        return self.root / "confirm.csv"

    @property
    def ray_dir(self) -> Path:
        return self.root / "ray"

    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    @property
    def oof_dir(self) -> Path:
        return self.root / "oof"

    def model_dir(self, member: str, fold: int, seed: int) -> Path:
        """A network member's fold model directory."""
        return self.models_dir / member / f"fold{fold}-seed{seed}"

    def linear_dir(self, fold: int) -> Path:
        return self.models_dir / "linear" / f"fold{fold}"

    def linear_model(self, fold: int) -> Path:
        return self.linear_dir(fold) / LINEAR_FILE

    @staticmethod
    def heldout(model_dir: Path) -> Path:
        """The fold model's (n_held_out, C) level-2 probabilities and their training-file rows."""
        return model_dir / "heldout.npz"

    def oof(self, member: str) -> Path:
        return self.oof_dir / f"{member}.npz"

    def relative(self, path: Path) -> str:
        """`path` relative to RUN_DIR/confirm, as jobs.json records it."""
        return path.relative_to(self.root).as_posix()


def check_output_file(path: str | Path, run_dir: str | Path, *, flag: str = "--out") -> None:
    """Refuse an output file of a command on RUN_DIR that would destroy something: a path inside
    RUN_DIR (the run's records, study and checkpoints live there, and a reader of trials.json or
    leaderboard.csv would then find a table of another shape), or a directory. A new or existing
    plain file elsewhere is fine."""
    from model.errors import ConfigError

    out, root = Path(path), Path(run_dir).resolve()
    if out.is_dir():
        raise ConfigError(f"{flag} {path} is a directory; pass a file name, e.g. {flag} {out / 'leaderboard.csv'}")
    target = out.resolve()  # follows links, so a link into RUN_DIR is caught too
    if target == root or root in target.parents:
        raise ConfigError(f"{flag} {path} is inside the run directory {run_dir}, whose files are the run's own; "
                          f"write it elsewhere, e.g. {flag} {out.name}")
    existing = next(p for p in target.parents if p.exists())
    if not existing.is_dir():
        raise ConfigError(f"{flag} {path}: {existing} is a file, not a directory; pass a path in a directory")


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
    """Write `data` to `path` so that a reader (or a crash) only ever sees the old or the new file:
    a temporary sibling, flushed to disk, renamed over `path`. The file gets the mode `open()` would
    give it (0644 under a umask of 022)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, file_mode())  # mkstemp's 0600 would hide the file from the group and web servers
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


# How to get each run file back, for the error a damaged one gives (`damaged`). Nothing rebuilds
# run.json or the study from the other files: their content exists nowhere else.
RECOVERY = {
    "run.json": "restore it from a backup or another copy of the run: no other file holds the run's settings "
                "(trials.json and leaderboard.csv still hold every trial's scores)",
    "trials.json": "restore it from a backup or another copy of the run: it is the leaderboard's source (Ray's "
                   "per-trial results, RUN_DIR/ray/trial_*/result.json, hold the same evaluations)",
    "leaderboard.csv": "`python -m search export RUN_DIR --out leaderboard.csv` rewrites it from trials.json",
    "study.db": "restore it from a backup or another copy of the run: resume and report need the Optuna study "
                "(status and export do not)",
    "space.yaml": "restore it from a backup or another copy of the run: it is the space as launched (run.json's "
                  "`space` names the file it was copied from, which may have changed since)",
    "ray": "restore RUN_DIR/ray from a backup or another copy of the run: resume needs Ray's experiment state, "
           "`predict --use trial:ID` a trial's checkpoint (status, export, report and confirm need neither)",
    "confirm.json": "start the confirm stage over with `python -m search confirm RUN_DIR --force`",
    "jobs.json": "start the confirm stage over with `python -m search confirm RUN_DIR --force`",
    "confirm.csv": "start the confirm stage over with `python -m search confirm RUN_DIR --force`",
    "ensemble.json": "choose the ensemble again with `python -m search ensemble RUN_DIR`",
}


def damaged(path: Path, problem: str) -> ConfigError:
    """The error for a damaged run file: which file, what is wrong, and how to get it back."""
    key = path.name if path.name in RECOVERY else next((p.name for p in path.parents if p.name in RECOVERY), "")
    recovery = RECOVERY.get(key, "restore it from a backup or another copy of the run")
    return ConfigError(f"{path} is damaged ({problem}); nothing was changed. To recover: {recovery}")


def read_json(path: Path, expect: type | None = None) -> Any:
    """The JSON value in `path`; a file that cannot be read, is not JSON, or (`expect`: dict or
    list) holds another kind of value is `damaged`."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise damaged(path, err.strerror or str(err)) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise damaged(path, f"not valid JSON: {err}") from None
    if expect is not None and not isinstance(value, expect):
        kinds = {dict: "an object", list: "a list"}
        raise damaged(path, f"a JSON {type(value).__name__} where {kinds.get(expect, expect.__name__)} belongs")
    return value


# run.json's keys the commands read, and their types (`data`, read by report only, is checked there).
RUN_KEYS = {"name": str, "created": str, "settings": dict, "searched": list, "max_epochs": int, "seed": int,
            "fold": int}
SETTINGS_KEYS = ("num_samples", "grace_period", "reduction_factor")  # of run.json's `settings`, read by status


def read_run(files: RunFiles) -> dict[str, Any]:
    """run.json, checked for the keys every command reads (a missing run.json: not a run directory)."""
    if not files.run_json.exists():
        raise FileNotFoundError(
            f"{files.root} is not a run directory (no run.json): pass the RUN_DIR that `python -m search "
            "launch` printed, e.g. runs/<name>")
    run = read_json(files.run_json, dict)
    for key, kind in RUN_KEYS.items():
        if key not in run:
            raise damaged(files.run_json, f"no `{key}`")
        if not isinstance(run[key], kind) or (kind is int and isinstance(run[key], bool)):
            raise damaged(files.run_json, f"`{key}` is {run[key]!r}, not a JSON {kind.__name__}")
    for key in SETTINGS_KEYS:
        if not isinstance(run["settings"].get(key), int | float):
            raise damaged(files.run_json, f"`settings.{key}` is {run['settings'].get(key)!r}, not a number")
    try:
        dt.datetime.fromisoformat(run["created"])
    except ValueError:
        raise damaged(files.run_json, f"`created` is {run['created']!r}, not a date") from None
    return run


def check_study(files: RunFiles, name: str) -> None:
    """Refuse a missing or damaged study.db, opened read-only: Optuna's RDBStorage would create
    an empty study where the file is missing, and fail deep inside on a damaged one."""
    path = files.study_db
    if not path.is_file():
        raise damaged(path, "missing" if not path.exists() else "not a file")
    try:
        with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as db:
            (check,) = db.execute("PRAGMA quick_check").fetchone()
            if check != "ok":
                raise sqlite3.DatabaseError(check)
            found = db.execute("SELECT 1 FROM studies WHERE study_name = ?", (name,)).fetchone()
    except sqlite3.Error as err:
        raise damaged(path, f"not a readable Optuna study: {err}") from None
    if not found:
        raise damaged(path, f"it holds no study named {name!r}")
