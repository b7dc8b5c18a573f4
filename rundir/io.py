"""Crash-safe writes and checked reads of run files.

Every file the project writes into a run (or as a command's --out) goes through `atomic_write_*`:
a reader, or a crash, only ever sees the old or the new file. A run file that cannot be read is
reported by `damaged`: which file, what is wrong, and the command (or backup) that gets it back.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from model.errors import ConfigError, DamagedFile, read_json_file
from model.filemode import file_mode


def check_output_file(path: str | Path, run_dir: str | Path, *, flag: str = "--out") -> None:
    """Refuse an output file of a command on RUN_DIR that would destroy something: a path inside
    RUN_DIR (the run's records, study and checkpoints live there, and a reader of trials.json or
    leaderboard.csv would then find a table of another shape), or a directory. A new or existing
    plain file elsewhere is fine."""
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
    check_writable(target.parent, f"{flag} {path}")


def _probe(directory: Path) -> None:
    """Create and delete a file in `directory`: the only sure test of writability (root passes
    os.access on a read-only mount, and a full disk fails only on a write)."""
    with tempfile.NamedTemporaryFile(dir=directory, prefix=".write-check.", suffix=".tmp") as handle:
        handle.write(b"x")
        handle.flush()


def check_writable(path: str | Path, what: str) -> None:
    """Refuse, before any work, a directory `what` writes to (or the nearest existing one above it)
    that this process cannot write: a read-only copy of a run, a read-only mount, a full disk."""
    path = Path(path)
    existing = next(p for p in (path, *path.absolute().parents) if p.exists())
    if not existing.is_dir():
        raise ConfigError(f"{what}: {existing} is a file, not a directory")
    try:
        _probe(existing)
    except OSError as err:
        raise ConfigError(f"{existing} is not writable ({err.strerror or err}), and {what} writes there; nothing "
                          f"was changed. Make it writable (e.g. chmod -R u+w {existing}), free disk space, or copy "
                          "the run to a place you can write") from None


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
    "leaderboard.csv": "`python -m search export RUN_DIR --out RUN_DIR/leaderboard.csv` rebuilds it from trials.json",
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
    "pipeline.json": "restore it from a backup or another copy of the run, or move it aside (`mv "
                     "RUN_DIR/pipeline.json RUN_DIR/pipeline.json.damaged`) and go on by hand: `python -m search "
                     "resume RUN_DIR` (the search or confirm stage), then `ensemble` and `predict`",
    "models": "start the confirm stage over with `python -m search confirm RUN_DIR --force`",
    "oof": "start the confirm stage over with `python -m search confirm RUN_DIR --force`",
}


def damaged(path: Path, problem: str) -> DamagedFile:
    """The error for a damaged run file: which file, what is wrong, and how to get it back."""
    path = Path(path)
    key = path.name if path.name in RECOVERY else next((p.name for p in path.parents if p.name in RECOVERY), "")
    return DamagedFile(path, problem, RECOVERY.get(key, "restore it from a backup or another copy of the run"))


def in_run(err: DamagedFile) -> DamagedFile:
    """A damaged file a lower layer found (a fold model, say), with the run's way to get it back."""
    return damaged(Path(err.path), err.problem)


def read_json(path: Path, expect: type | None = None) -> Any:
    """The JSON value in `path`; a file that cannot be read, is not JSON, or (`expect`: dict or
    list) holds another kind of value is `damaged`."""
    return read_json_file(path, expect=expect, damaged=damaged)
