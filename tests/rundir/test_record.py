"""rundir/record.py: the study check survives a driver killed inside a write to study.db."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap

import optuna
import pytest

from model.errors import DamagedFile
from rundir.paths import RunFiles
from rundir.record import check_study

# A writer that dies inside its transaction, as a driver killed with SIGKILL does: a cache of one page
# makes SQLite write the journal and change the database file before the commit that never comes.
KILLED_WRITER = textwrap.dedent("""
    import os, signal, sqlite3, sys
    db = sqlite3.connect(sys.argv[1], isolation_level=None)
    db.execute("PRAGMA cache_size=1")
    db.execute("BEGIN IMMEDIATE")
    db.executemany("INSERT INTO trial_user_attributes (trial_id, key, value_json) VALUES (?, ?, ?)",
                   [(1, f"uncommitted-{i}", "x" * 500) for i in range(2000)])
    os.kill(os.getpid(), signal.SIGKILL)
""")


def committed_study(path) -> None:
    study = optuna.create_study(storage=f"sqlite:///{path}", study_name="s")
    study.enqueue_trial({"x": 1.0})
    study.optimize(lambda trial: trial.suggest_float("x", 0, 2), n_trials=2)


def test_a_write_killed_mid_transaction_is_rolled_back_and_the_committed_trials_kept(tmp_path):
    files = RunFiles(tmp_path)
    committed_study(files.study_db)
    killed = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(files.study_db)])
    journal = tmp_path / "study.db-journal"
    assert killed.returncode == -9 and journal.stat().st_size > 0  # the hot journal a kill leaves
    with pytest.raises(sqlite3.OperationalError, match="readonly"):  # what a read-only open alone meets
        sqlite3.connect(f"{files.study_db.as_uri()}?mode=ro", uri=True).execute("SELECT 1 FROM studies").fetchone()

    check_study(files, "s")

    assert not journal.exists() or journal.stat().st_size == 0
    study = optuna.load_study(storage=f"sqlite:///{files.study_db}", study_name="s")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2  # the committed trials
    assert study.trials[0].params == {"x": 1.0}
    with sqlite3.connect(files.study_db) as db:  # and none of the killed write
        uncommitted = "SELECT count(*) FROM trial_user_attributes WHERE key LIKE 'uncommitted-%'"
        assert db.execute(uncommitted).fetchone() == (0,)


def test_a_study_whose_interrupted_write_cannot_be_rolled_back_is_refused_saying_why(tmp_path, monkeypatch):
    files = RunFiles(tmp_path)
    committed_study(files.study_db)
    subprocess.run([sys.executable, "-c", KILLED_WRITER, str(files.study_db)])
    real_connect = sqlite3.connect

    def read_only(database, *args, **kwargs):  # a run directory this user may not write
        if not kwargs.get("uri"):
            raise sqlite3.OperationalError("unable to open database file")
        return real_connect(database, *args, **kwargs)

    monkeypatch.setattr(sqlite3, "connect", read_only)
    with pytest.raises(DamagedFile, match="study.db-journal holds a write that was interrupted"):
        check_study(files, "s")
