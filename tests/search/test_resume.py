"""Kill -9 the driver at random moments, resume each time, and check that nothing was lost or done twice."""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest

from model.errors import ConfigError
from results.export import read_leaderboard_csv
from rundir.paths import RunFiles
from rundir.relocation import relocate_checkpoints
from rundir.trials import TrialRecord
from search.driver import resume
from tests.conftest import E2E_SPACE

pytestmark = pytest.mark.ray

SPACE = E2E_SPACE
NUM_SAMPLES, MAX_EPOCHS = 6, 4
FINAL = {"completed", "pruned", "error"}


def records(run_dir: Path) -> dict[str, dict]:
    try:
        return {r["trial_id"]: r for r in json.loads((run_dir / "trials.json").read_text())}
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def evaluations(run_dir: Path) -> int:
    return sum(len(r["history"]) for r in records(run_dir).values())


def start(args: list[str], log: Path) -> subprocess.Popen:
    # A session of its own, so the kill takes the driver and the Ray processes it started.
    return subprocess.Popen([sys.executable, "-m", "search", *args], stdout=log.open("a"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def wait_for(condition, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, "the driver ended before the moment to kill it"
        assert time.monotonic() < deadline, "timed out waiting for the driver"
        time.sleep(0.1)


def kill(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def tree(root: Path) -> dict[str, tuple[int, int]]:
    """{path: (size, mtime)} of every file under root: changes when anything writes there."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory):
    """The run after its kills and resumes (expensive, so shared by the module): tests only read it;
    a test that changes a run works on its own copy (`run_copy`, `raised_budget`)."""
    root = tmp_path_factory.mktemp("resume")
    (root / "space.yaml").write_text(SPACE)
    run_dir, log = root / "runs" / "k", root / "driver.log"
    rng = random.Random(7)
    snapshots = []  # (records, leaderboard) at each kill

    def snapshot():
        board = read_leaderboard_csv(run_dir / "leaderboard.csv")  # a kill at any moment leaves it parseable
        snapshots.append((records(run_dir), board))

    # 1. Kill the launch while a trial is mid-run: it reported an epoch and is training the next.
    proc = start(["launch", "--space", str(root / "space.yaml"), "--synthetic-rows", "3000", "--max-seq-len",
                  "64", "--num-samples", str(NUM_SAMPLES), "--max-epochs", str(MAX_EPOCHS),
                  "--storage-path", str(root / "runs"), "--name", "k"], log)
    wait_for(lambda: any(r["status"] == "running" and r["history"] for r in records(run_dir).values()), proc)
    time.sleep(rng.uniform(0.1, 0.5))
    snapshot()
    kill(proc)

    # 2. Resume and kill again once it made progress.
    proc = start(["resume", str(run_dir)], log)
    progress = evaluations(run_dir)
    wait_for(lambda: evaluations(run_dir) >= progress + 2, proc)
    time.sleep(rng.uniform(0.0, 1.0))
    snapshot()
    kill(proc)

    # 3. Resume and kill at a random moment (maybe while it starts up).
    proc = start(["resume", str(run_dir)], log)
    time.sleep(rng.uniform(3, 10))
    snapshot()
    kill(proc)

    # 4. Resume until the search finishes.
    proc = start(["resume", str(run_dir)], log)
    assert proc.wait(timeout=400) == 0, log.read_text()[-3000:]
    return run_dir, snapshots, log.read_text()


@pytest.fixture
def run_copy(killed_and_resumed, tmp_path):
    """A copy of the module's run for one test to change. Same name: the study is named after it."""
    run_dir, _, _ = killed_and_resumed
    copy = tmp_path / "runs" / run_dir.name
    shutil.copytree(run_dir, copy, symlinks=True)
    return copy


def test_every_trial_ends_exactly_once(killed_and_resumed):
    run_dir, snapshots, _ = killed_and_resumed
    final = records(run_dir)
    lost = {tid for tid, r in final.items() if r["status"] == "error" and r["error"].startswith("lost:")}
    assert len(final) - len(lost) == NUM_SAMPLES
    assert all(r["status"] in FINAL for r in final.values())
    board = read_leaderboard_csv(run_dir / "leaderboard.csv")
    assert board["trial_id"].is_unique and set(board["trial_id"]) == set(final)
    # A trial that had ended at a kill is untouched afterwards: never trained or ended again.
    for recorded, _ in snapshots:
        for tid, record in recorded.items():
            if record["status"] in FINAL:
                assert final[tid] == record


def test_interrupted_trial_continued_from_its_checkpoint(killed_and_resumed):
    run_dir, snapshots, _ = killed_and_resumed
    recorded, _ = snapshots[0]
    midway = [r for r in recorded.values() if r["status"] == "running" and r["history"]]
    assert midway
    for record in midway:
        done = len(record["history"])
        progress = pd.read_csv(run_dir / "ray" / f"trial_{record['trial_id']}" / "progress.csv")
        epochs = progress["epoch"].tolist()
        # each epoch reported once, in order, past the kill: a restart would report epoch 1 again
        assert epochs == list(range(1, len(epochs) + 1)) and len(epochs) > done
        assert epochs[:done] == [h["epoch"] for h in record["history"]]


def test_study_has_no_zombies_and_agrees_with_the_leaderboard(killed_and_resumed):
    run_dir, _, _ = killed_and_resumed
    study = optuna.load_study(study_name="k", storage=f"sqlite:///{run_dir / 'study.db'}")
    assert not [t.number for t in study.trials if t.state.name in ("RUNNING", "WAITING")]
    expected = {"completed": "COMPLETE", "pruned": "PRUNED", "error": "FAIL"}
    for record in records(run_dir).values():
        trial = study.trials[record["optuna_number"]]
        assert trial.state.name == expected[record["status"]]
        if record["status"] == "completed":
            assert trial.value == max(h["level2_macro_f1"] for h in record["history"])
    board = read_leaderboard_csv(run_dir / "leaderboard.csv")
    assert study.best_trial.number == board.iloc[0]["optuna_number"]


@pytest.fixture(scope="module")
def raised_budget(killed_and_resumed, tmp_path_factory):
    """A copy of the finished run resumed with 2 more trials; the shared run's files before and after."""
    shared, _, _ = killed_and_resumed
    run_dir = tmp_path_factory.mktemp("raised") / "runs" / shared.name
    shutil.copytree(shared, run_dir, symlinks=True)
    before, shared_before = records(run_dir), tree(shared)
    proc = subprocess.run([sys.executable, "-m", "search", "resume", str(run_dir), "--num-samples",
                           str(len(before) + 2)], capture_output=True, text=True, timeout=400)
    return run_dir, before, proc, (shared_before, tree(shared))


def test_resume_raises_the_budget_of_a_finished_run(killed_and_resumed, raised_budget):
    shared, _, _ = killed_and_resumed
    run_dir, before, proc, _ = raised_budget
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    after = records(run_dir)
    assert len(after) == len(before) + 2
    # The old trials did not change, but for their checkpoints, now named inside the copy.
    relocated = {tid: {**r, "checkpoint": r["checkpoint"] and r["checkpoint"].replace(str(shared), str(run_dir), 1)}
                 for tid, r in before.items()}
    assert {tid: after[tid] for tid in before} == relocated
    assert all(r["status"] in FINAL for r in after.values())
    assert json.loads((run_dir / "run.json").read_text())["settings"]["num_samples"] == len(before) + 2


def test_resuming_a_copied_run_writes_only_into_the_copy(raised_budget):
    run_dir, _, proc, (shared_before, shared_after) = raised_budget
    assert proc.returncode == 0
    study = optuna.load_study(study_name=run_dir.name, storage=f"sqlite:///{run_dir / 'study.db'}")
    assert len(study.trials) == len(records(run_dir))
    assert all(r["checkpoint"].startswith(str(run_dir)) for r in records(run_dir).values() if r["checkpoint"])
    assert shared_after == shared_before


def test_a_moved_run_resumes_where_it_is_now(killed_and_resumed, tmp_path):
    """`mv runs/a elsewhere/a`: the launch location is gone; resume works and never recreates it."""
    shared, _, _ = killed_and_resumed
    launched = tmp_path / "launched" / "runs" / shared.name
    shutil.copytree(shared, launched, symlinks=True)
    moved = tmp_path / "elsewhere" / shared.name
    moved.parent.mkdir()
    launched.rename(moved)
    before = records(moved)
    proc = subprocess.run([sys.executable, "-m", "search", "resume", str(moved), "--num-samples",
                           str(len(before) + 1)], capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    after = records(moved)
    assert len(after) == len(before) + 1 and all(r["status"] in FINAL for r in after.values())
    assert all(r["checkpoint"].startswith(str(moved)) for r in after.values() if r["checkpoint"])
    study = optuna.load_study(study_name=moved.name, storage=f"sqlite:///{moved / 'study.db'}")
    assert len(study.trials) == len(after)
    board = read_leaderboard_csv(moved / "leaderboard.csv")
    assert all(f"--space {moved.resolve() / 'space.yaml'} " in command for command in board["command"])
    assert not launched.exists()


def test_relocate_checkpoints_points_records_into_the_run_where_it_is_now(tmp_path):
    files = RunFiles(tmp_path / "runs" / "b")
    old = "/elsewhere/runs/a/ray/trial_x1/checkpoint_000003"
    recs = {"x1": TrialRecord("x1", checkpoint=old), "x2": TrialRecord("x2"),
            "x3": TrialRecord("x3", checkpoint="/somewhere/else/ckpt")}
    assert relocate_checkpoints(files, recs)
    assert recs["x1"].checkpoint == str(files.ray_dir.resolve() / "trial_x1" / "checkpoint_000003")
    assert recs["x2"].checkpoint is None and recs["x3"].checkpoint == "/somewhere/else/ckpt"
    assert not relocate_checkpoints(files, recs)  # already there: nothing changes


# The keys of run.json every command reads (rundir/record.py RUN_KEYS), and no more.
MINIMAL_RUN = {"name": "r", "created": "2026-01-01T00:00:00+00:00", "searched": [], "max_epochs": 2, "seed": 0,
               "fold": 0, "settings": {"num_samples": 2, "grace_period": 1, "reduction_factor": 2}}


@pytest.mark.parametrize(
    "prepare, kwargs, message",
    [
        (lambda d: None, {}, r"is not a run directory \(no run.json\)"),
        (lambda d: (d / "run.json").write_text("{}"), {}, r"run.json is damaged \(no `name`\)"),
        (lambda d: (d / "run.json").write_text(json.dumps(MINIMAL_RUN)), {}, r"has no Ray experiment state"),
    ],
)
def test_resume_refuses_what_it_cannot_resume(tmp_path, prepare, kwargs, message):
    prepare(tmp_path)
    with pytest.raises((ConfigError, FileNotFoundError), match=message):
        resume(tmp_path, out=lambda _: None, **kwargs)


def test_resume_refuses_a_lower_budget_and_a_space_the_code_rejects(run_copy):
    with pytest.raises(ConfigError, match=r"--num-samples 2 is below the \d+ trials the run already has"):
        resume(run_copy, num_samples=2, out=lambda _: None)
    (run_copy / "space.yaml").write_text(SPACE.replace("focal_gamma:", "focal_gama:"))
    with pytest.raises(ConfigError, match=r"no longer fits this version of the code.*'focal_gama'"):
        resume(run_copy, out=lambda _: None)
