"""A copied or moved run with an unfinished confirm stage resumes into its own directory only.

The stage is stopped by a time budget while jobs train (`confirm(..., time_budget_s=...)`: the
jobs in flight stop unfinished and the rest are never created), so Ray's restore brings back both
kinds: trials to continue from their checkpoints, and a grid generator that still has to create
trials. The original must stay byte for byte as it was, and nothing outside the copy be written.
"""

import hashlib
import os
import shutil
import stat
from pathlib import Path

import pytest

from rundir.io import read_json
from rundir.paths import RunFiles
from stages.confirm.run import confirm, resume_confirm, stage_finished, stage_pending
from tests.stages.test_confirm import FOLDS, make_search_run

pytestmark = pytest.mark.ray

JOBS = 2 * FOLDS  # --top 2, no linear member


def snapshot(root: Path) -> dict[str, tuple]:
    """{path: (kind, mode, content hash or link target)} of everything under `root`, itself included."""
    found = {}
    for where, dirs, files in os.walk(root):
        for name in [".", *dirs, *files]:
            path = Path(where, name) if name != "." else Path(where)
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                content = os.readlink(path)
            elif stat.S_ISREG(info.st_mode):
                content = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                content = None
            found[str(path.relative_to(root))] = (stat.S_IFMT(info.st_mode), stat.S_IMODE(info.st_mode), content)
    return found


def outside(tree: dict[str, tuple], run: str) -> dict[str, tuple]:
    """The entries of a `snapshot` that are not under the directory `run` (relative to its root)."""
    return {path: entry for path, entry in tree.items() if path != run and not path.startswith(run + os.sep)}


@pytest.fixture(scope="module")
def stopped(tmp_path_factory, local_ray) -> Path:
    """A run whose confirm stage a time budget stopped: some jobs unfinished, some never started."""
    root = tmp_path_factory.mktemp("stopped")
    run_dir = make_search_run(root)
    outcome = confirm(run_dir, top=2, folds=FOLDS, linear=False, time_budget_s=2.0, out=lambda line: None)
    jobs = read_json(run_dir / "confirm" / "jobs.json")
    assert not outcome.finished and stage_pending(run_dir)
    assert sum(job["status"] == "completed" for job in jobs.values()) < JOBS
    trials = list((run_dir / "confirm" / "ray").glob("trial-*"))
    assert trials and len(trials) < JOBS, "the budget left no job for the restored generator to create"
    return run_dir


def resumed_finished(run_dir: Path) -> None:
    outcome = resume_confirm(run_dir, out=lambda line: None)
    jobs = read_json(run_dir / "confirm" / "jobs.json")
    assert outcome.finished and stage_finished(RunFiles(run_dir).confirm) and not stage_pending(run_dir)
    assert len(jobs) == JOBS and all(job["status"] == "completed" for job in jobs.values()), jobs
    assert {p.name for p in (run_dir / "confirm" / "oof").iterdir()} == {"trial-0.npz", "trial-2.npz"}


def test_a_copy_of_a_stopped_confirm_stage_resumes_into_the_copy_only(stopped, tmp_path):
    copy = tmp_path / "elsewhere" / "s"
    shutil.copytree(stopped, copy, symlinks=True)
    original, around = snapshot(stopped), outside(snapshot(tmp_path), "elsewhere")
    resumed_finished(copy)
    assert snapshot(stopped) == original  # the original byte for byte, modes, no new files
    assert outside(snapshot(tmp_path), "elsewhere") == around
    assert all(str(copy) in str(trial.resolve()) for trial in (copy / "confirm" / "ray").glob("trial-*"))
    assert len(list((copy / "confirm" / "ray").glob("trial-*"))) >= JOBS
    assert len(list((stopped / "confirm" / "ray").glob("trial-*"))) < JOBS


def test_a_moved_run_resumes_its_confirm_stage_where_it_is_now(stopped, tmp_path):
    launched = tmp_path / "launched" / "runs" / "s"
    shutil.copytree(stopped, launched, symlinks=True)
    launched_trials = {p.name for p in (launched / "confirm" / "ray").glob("trial-*")}
    moved = tmp_path / "moved" / "s"
    moved.parent.mkdir()
    launched.rename(moved)
    resumed_finished(moved)
    assert not launched.exists()
    trials = {p.name for p in (moved / "confirm" / "ray").glob("trial-*")}
    assert launched_trials < trials


def test_a_copy_of_a_finished_confirm_stage_resumes_into_the_copy_only(stopped, tmp_path):
    first = tmp_path / "first" / "s"
    shutil.copytree(stopped, first, symlinks=True)
    resumed_finished(first)
    second = tmp_path / "second" / "s"
    shutil.copytree(first, second, symlinks=True)
    (second / "confirm" / "confirm.csv").unlink()  # something for the resume to write
    before = snapshot(first)
    resumed_finished(second)
    assert snapshot(first) == before


def test_two_copies_resumed_in_one_ray_session_each_restore_their_own_state(stopped, tmp_path):
    """A restored experiment keeps its launch's driver staging directory in the Ray session, where
    the first copy's resume leaves a newer state of the job grid (a finished one): the second copy
    must restore its own (search/internals.py item 17)."""
    for name in ("a", "b"):
        copy = tmp_path / name / "s"
        shutil.copytree(stopped, copy, symlinks=True)
        resumed_finished(copy)
