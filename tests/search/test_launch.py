"""End to end: a real search on local Ray over tiny synthetic data."""

import html
import io
import json
import re
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
import torch

from model import metrics as M
from results.export import read_leaderboard_csv
from results.ranking import COLUMNS
from results.report import write_report
from results.status import status_text
from rundir.io import read_json
from rundir.settings import Settings
from search.driver import launch
from tests.conftest import E2E_SPACE

pytestmark = pytest.mark.ray

SPACE = E2E_SPACE + """warm_start:
  good: {lr: 3.0e-3, loss: ce}
"""
NUM_SAMPLES, MAX_EPOCHS = 8, 3


@pytest.fixture(scope="module")
def run(tmp_path_factory, local_ray):
    """A finished search, and what a reader of leaderboard.csv saw while it ran."""
    root = tmp_path_factory.mktemp("e2e")
    (root / "space.yaml").write_text(SPACE)
    settings = Settings(space=str(root / "space.yaml"), synthetic_rows=1200, max_seq_len=48, folds=4,
                        num_samples=NUM_SAMPLES, max_epochs=MAX_EPOCHS, grace_period=1, reduction_factor=2,
                        storage_path=str(root / "runs"), name="e2e", seed=0)
    seen, stop = [], threading.Event()

    def watch(path=root / "runs" / "e2e" / "leaderboard.csv"):
        while not stop.is_set():
            if path.exists():
                seen.append(read_leaderboard_csv(path))  # must always parse: writes are atomic
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    lines = []
    try:
        files, frame = launch(settings, argv=["launch", "--name", "e2e"], out=lines.append)
    finally:
        stop.set()
        watcher.join()
    return files, frame, "\n".join(lines), seen


def test_leaderboard_has_one_ranked_row_per_trial(run):
    files, frame, output, _ = run
    board = read_leaderboard_csv(files.leaderboard_csv)
    assert len(board) == NUM_SAMPLES and board["trial_id"].is_unique
    assert list(board.columns) == COLUMNS + ["param.lr", "param.loss", "param.focal_gamma"]
    assert board["command"].str.startswith("python -m search train-one --space ").all()
    assert board["rank"].tolist() == list(range(1, NUM_SAMPLES + 1))
    assert set(board["status"]) <= {"completed", "pruned"} and (board["status"] == "completed").any()
    completed = board[board["status"] == "completed"]
    pruned = board[board["status"] == "pruned"]
    assert (completed["epochs"] == MAX_EPOCHS).all()
    assert len(pruned) >= 1 and (pruned["epochs"] < MAX_EPOCHS).all()  # ASHA stopped some early
    # completed rows first, each section sorted by score
    assert board["status"].tolist() == sorted(board["status"], key=["completed", "pruned"].index)
    for _, section in board.groupby("status"):
        assert section[M.LEVEL2_MACRO_F1].is_monotonic_decreasing
    # conditional parameter only where it applies
    assert (board["param.focal_gamma"].notna() == (board["param.loss"] == "focal")).all()
    # the warm-start point ran first, with exactly its parameters
    warm = board[board["optuna_number"] == 0].iloc[0]
    assert warm["warm_start"] == "good" and warm["param.lr"] == 3e-3 and warm["param.loss"] == "ce"
    assert board["device"].eq("cpu").all() and board["node"].notna().all()
    # the search separated good from bad configurations
    assert board[M.LEVEL2_MACRO_F1].max() > board[M.LEVEL2_MACRO_F1].min() + 0.05
    assert f"RUN_DIR {files.root}" in output and "top 5:" in output


def test_study_agrees_with_leaderboard(run):
    files, frame, _, _ = run
    study = optuna.load_study(study_name="e2e", storage=files.study_url)
    states = {t.number: t.state.name for t in study.trials}
    expected = {"completed": "COMPLETE", "pruned": "PRUNED"}
    assert states == {int(r.optuna_number): expected[r.status] for r in frame.itertuples()}
    assert study.best_trial.number == frame.iloc[0]["optuna_number"]
    assert study.best_value == pytest.approx(frame.iloc[0][M.LEVEL2_MACRO_F1])
    for t in study.trials:
        assert len(t.intermediate_values) == frame.set_index("optuna_number").loc[t.number, "epochs"]


def test_run_dir_is_self_describing(run):
    files, _, _, _ = run
    record = read_json(files.run_json)
    assert record["command"] == "python -m search launch --name e2e"
    assert record["max_epochs"] == MAX_EPOCHS and record["searched"] == ["lr", "loss", "focal_gamma"]
    assert {"torch", "ray", "optuna"} <= set(record["versions"])
    assert files.space_yaml.read_text() == SPACE
    assert len(read_json(files.trials_json)) == NUM_SAMPLES


def test_export_cli_writes_the_same_table(run, tmp_path):
    files, _, _, _ = run
    out = tmp_path / "board.csv"
    out.write_text("an older export\n")  # an existing plain file outside RUN_DIR is overwritten
    proc = subprocess.run([sys.executable, "-m", "search", "export", str(files.root), "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    pd.testing.assert_frame_equal(read_leaderboard_csv(out), read_leaderboard_csv(files.leaderboard_csv))


def test_rows_point_to_their_best_checkpoint_and_per_class_scores(run):
    files, frame, _, _ = run
    records = {r["trial_id"]: r for r in read_json(files.trials_json)}
    for row in frame.itertuples():
        state = torch.load(Path(row.checkpoint) / "state.pt", weights_only=True)
        assert state["epoch"] == row.best_epoch and state["report"][M.LEVEL2_MACRO_F1] == row.level2_macro_f1
        per_class = records[row.trial_id]["best_per_class_f1"]
        assert len(per_class) == 35 and sum(per_class) / 35 == pytest.approx(row.level2_macro_f1)


def test_reproduction_command_retrains_the_best_row(run):
    _, frame, _, _ = run
    best = frame.iloc[0]
    args = shlex.split(best["command"])
    assert args[:4] == ["python", "-m", "search", "train-one"] and "--threads" in args
    proc = subprocess.run([sys.executable, *args[1:], "--no-progress"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    reported = re.search(r"best: epoch (\d+), level-2 macro-F1 ([\d.]+)", proc.stdout)
    assert int(reported.group(1)) == best[M.BEST_EPOCH]
    assert float(reported.group(2)) == round(best[M.LEVEL2_MACRO_F1], 4)


def test_leaderboard_is_readable_while_the_search_runs(run):
    files, frame, _, seen = run
    during = [board for board in seen if (board["status"] == "running").any()]
    assert during, "no read caught a running trial"
    assert any(len(board) >= 2 for board in during)
    # rows only ever get added: every trial seen while running is in the final table
    assert set().union(*(set(board["trial_id"]) for board in seen)) == set(frame["trial_id"])


def test_export_formats_and_filters(run):
    files, frame, _, _ = run

    def export(*args):
        proc = subprocess.run([sys.executable, "-m", "search", "export", str(files.root), *args],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    rows = json.loads(export("--format", "json"))
    assert [r["trial_id"] for r in rows] == frame["trial_id"].tolist()
    assert [r[M.LEVEL2_MACRO_F1] for r in rows] == frame[M.LEVEL2_MACRO_F1].tolist()
    pruned = read_leaderboard_csv(io.StringIO(export("--status", "pruned", "--top", "2")))
    assert len(pruned) == min(2, (frame["status"] == "pruned").sum()) and set(pruned["status"]) == {"pruned"}
    md = export("--format", "md", "--top", "3").splitlines()
    assert len(md) == 2 + 3 and md[0].startswith("| ") and "level2_macro_f1" in md[0]


def test_status_and_report(run):
    files, frame, _, _ = run
    text = status_text(files.root)
    assert "no driver is running" in text
    assert f"trials: {NUM_SAMPLES} of {NUM_SAMPLES} started" in text
    assert f"best completed: level-2 macro-F1 {frame.iloc[0][M.LEVEL2_MACRO_F1]:.4f}" in text
    page = write_report(files.root)
    content = page.read_text()
    for name in ("progress", "importance", "parallel", "intermediate", "rungs", "per_class"):
        figure = page.parent / "figures" / f"{name}.png"
        assert f'src="figures/{name}.png"' in content
        assert figure.stat().st_size > 10_000 and figure.read_bytes()[:4] == b"\x89PNG"
    assert frame.iloc[0]["command"] in html.unescape(content)


def test_a_launch_into_its_callers_run_dir_clears_what_a_killed_launch_left(tmp_path, local_ray):
    """A pipeline killed after its search wrote run.json but before Ray's first snapshot: the launch
    that resumes it starts over, keeping the caller's own files (`keep`) byte for byte."""
    (tmp_path / "space.yaml").write_text(SPACE)
    root = tmp_path / "runs" / "p"
    (root / "vectors").mkdir(parents=True)
    (root / "pipeline.json").write_text('{"mine": true}')
    (root / "vectors" / "vectors.npy").write_bytes(b"kept")
    (root / "run.json").write_text("{}")  # what the killed launch left
    (root / "predictions").mkdir()
    settings = Settings(space=str(tmp_path / "space.yaml"), synthetic_rows=600, max_seq_len=32, folds=4,
                        num_samples=1, max_epochs=1, grace_period=1, storage_path=str(tmp_path / "runs"), name="p")
    with pytest.raises(Exception, match="already exists but holds no started search"):
        launch(settings, out=lambda line: None)  # without `keep`, not its RUN_DIR to clear
    files, frame = launch(settings, keep=frozenset({"pipeline.json", "vectors"}), out=lambda line: None)
    assert len(frame) == 1 and read_json(files.run_json)["name"] == "p"
    assert (root / "pipeline.json").read_text() == '{"mine": true}'
    assert (root / "vectors" / "vectors.npy").read_bytes() == b"kept"


def test_a_time_budgeted_search_ends_its_trials_and_a_resume_goes_on(tmp_path, local_ray):
    """`--time-budget`: every trial ends (none left running in the records or the study), and a
    resume with a new budget runs more trials (Ray's own time budget, restored, would stop it at once)."""
    from rundir.settings import UNTIL_TIME_BUDGET
    from search.driver import is_finished, resume

    (tmp_path / "space.yaml").write_text(SPACE)
    settings = Settings(space=str(tmp_path / "space.yaml"), synthetic_rows=600, max_seq_len=32, folds=4,
                        num_samples=UNTIL_TIME_BUDGET, max_epochs=3, grace_period=1, reduction_factor=2,
                        storage_path=str(tmp_path / "runs"), name="t", time_budget_s=12.0)
    lines = []
    files, frame = launch(settings, out=lines.append)
    assert len(frame) >= 1 and not (frame["status"] == "running").any() and is_finished(frame, UNTIL_TIME_BUDGET)
    assert any(line.startswith("the time budget (0.2 min) ended the search") for line in lines), lines
    study = optuna.load_study(study_name="t", storage=files.study_url)
    assert not [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]

    _, again = resume(files.root, time_budget_s=12.0, out=lines.append)
    assert len(again) > len(frame) and not (again["status"] == "running").any()
