"""run.json, the run's record, and the Optuna study it names: reading them back, checked.

`launch` writes run.json (search/driver.py `write_run_record`): the command line, the `Settings`,
the space's searched parameters, the budget, the search method, versions and git revision. Every
other command reads it through `read_run`, which checks the keys they rely on, and `run_settings`
rebuilds the `Settings` a resume or a confirm stage continues with.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import sqlite3
from pathlib import Path
from typing import Any

from model.errors import ConfigError
from rundir.io import damaged, read_json
from rundir.paths import RunFiles, is_uri
from rundir.settings import Settings

# run.json's keys the commands read, and their types (`data`, read by report only, is checked there).
RUN_KEYS = {"name": str, "created": str, "settings": dict, "searched": list, "max_epochs": int, "seed": int,
            "fold": int}


SETTINGS_KEYS = ("num_samples", "grace_period", "reduction_factor")  # of run.json's `settings`, read by status


def require_directory(run_dir: str | Path) -> Path:
    """RUN_DIR of a command that reads only its stage files (ensemble, predict): a directory."""
    if not Path(run_dir).is_dir():
        raise ConfigError(f"{run_dir} is not a directory: pass the RUN_DIR that `python -m search launch` printed")
    return Path(run_dir)


def require_run_dir(run_dir: str | Path) -> RunFiles:
    """A run directory: one with a run.json (FileNotFoundError, naming the fix, otherwise)."""
    files = RunFiles(Path(run_dir))
    if not files.run_json.exists():
        raise FileNotFoundError(
            f"{files.root} is not a run directory (no run.json): pass the RUN_DIR that `python -m search "
            "launch` printed, e.g. runs/<name>")
    return files


def read_run(files: RunFiles) -> dict[str, Any]:
    """run.json, checked for the keys every command reads (a missing run.json: not a run directory)."""
    require_run_dir(files.root)
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
    """Refuse a missing or damaged study.db, opened read-only (after rolling back a write a kill
    interrupted: `roll_back_interrupted_write`): Optuna's RDBStorage would create an empty study
    where the file is missing, and fail deep inside on a damaged one."""
    path = files.study_db
    if not path.is_file():
        raise damaged(path, "missing" if not path.exists() else "not a file")
    journal = roll_back_interrupted_write(path)
    try:
        with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as db:
            (check,) = db.execute("PRAGMA quick_check").fetchone()
            if check != "ok":
                raise sqlite3.DatabaseError(check)
            found = db.execute("SELECT 1 FROM studies WHERE study_name = ?", (name,)).fetchone()
    except sqlite3.Error as err:
        hint = (f"; {journal.name} holds a write that was interrupted, which SQLite rolls back on the next open "
                "with write access: run the command as a user who may write the run directory") if journal else ""
        raise damaged(path, f"not a readable Optuna study: {err}{hint}") from None
    if not found:
        raise damaged(path, f"it holds no study named {name!r}")


def roll_back_interrupted_write(path: Path) -> Path | None:
    """A process killed inside a write to study.db (a driver's kill -9, a power cut) leaves its
    rollback journal, study.db-journal, beside it. SQLite rolls such a journal back on the next
    connection that may write, which gives the study as it was before that write, with every
    committed trial. A read-only connection cannot, and fails with "attempt to write a readonly
    database". So, where there is one, open the file read-write once first. Returns the journal
    when it is still there (the rollback failed: the run directory is not writable, say)."""
    journal = path.with_name(path.name + "-journal")
    if not (journal.is_file() and journal.stat().st_size):
        return None
    with contextlib.suppress(sqlite3.Error), contextlib.closing(sqlite3.connect(path, timeout=30)) as db:
        db.execute("PRAGMA schema_version").fetchone()  # a read: SQLite replays a hot journal first
    return journal if journal.is_file() and journal.stat().st_size else None


def run_settings(files: RunFiles) -> tuple[dict[str, Any], Settings]:
    """The run record of `files.root` and the settings it was launched with; the storage path is
    where the run directory is now (it may have moved since the launch)."""
    run = read_run(files)
    try:
        settings = dataclasses.replace(Settings(**run["settings"]), max_epochs=run["max_epochs"],
                                       name=files.root.name)
    except (KeyError, TypeError) as err:
        raise damaged(files.run_json, f"its settings are not ones this version can resume ({err}): written by "
                      "another version of this project, or edited by hand") from None
    if not is_uri(settings.storage_path):
        settings = dataclasses.replace(settings, storage_path=str(files.root.parent))
    return run, settings


# Runs launched before the sampler and scheduler were choices: TPE with Optuna's 10 startup trials.
LEGACY_METHOD = {"sampler": "tpe", "startup_trials": 10, "scheduler": "asha"}


def run_method(run: dict[str, Any]) -> dict[str, Any]:
    """The search method run.json records: sampler (`auto` resolved), startup trials, scheduler."""
    return run.get("method", LEGACY_METHOD)


def describe_method(method: dict[str, Any], settings: dict[str, Any]) -> str:
    """One line for the launch output, `status` and the report, e.g. `tpe (2 startup trials) + asha
    (grace 1, reduction 2)`."""
    sampler = method["sampler"]
    if sampler in ("tpe", "gp", "cmaes"):
        sampler += f" ({method['startup_trials']} startup trials)"
    scheduler = method["scheduler"]
    if scheduler in ("asha", "hyperband"):
        scheduler += f" (grace {settings['grace_period']}, reduction {settings['reduction_factor']:g})"
    elif scheduler == "median":
        scheduler += f" (grace {settings['grace_period']})"
    return f"{sampler} + {scheduler}"
