"""End to end: `confirm` on local Ray over tiny synthetic data, and a confirm stage killed and resumed.

The confirmed run is a finished search's run directory written without running the search (its
run record by the launch's own `write_run_record`, its trial records by hand): confirm reads only
run.json, space.yaml and trials.json, and the search itself is tested in test_launch.py.
"""

import dataclasses
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from model import metrics as M
from model.data import prepare_data
from model.errors import ConfigError
from model.inference import load_model_dir, probabilities
from model.linear import load_linear
from model.synthetic import synthesize
from results.ensemble import macro_f1
from results.export import write_leaderboard
from results.status import status_text
from rundir import keys as K
from rundir.confirm import ConfirmSpec, JobRecord, RaceRule, read_heldout
from rundir.inputs import load_data
from rundir.io import read_json
from rundir.paths import RunFiles
from rundir.settings import Settings
from rundir.trials import TrialRecord
from search.driver import write_run_record
from search.trainable import confirm_trial
from spaces.space import load_space
from stages.confirm.run import confirm, resume_confirm, stage_finished, stage_pending
from stages.ensemble import run_ensemble
from stages.predict import run_predict
from tests.conftest import E2E_SPACE
from tests.search.test_resume import kill, start, wait_for

pytestmark = pytest.mark.ray

ROWS, MAX_SEQ_LEN, MAX_EPOCHS, FOLDS = 600, 48, 2, 3
# (trial id, optuna number, status, params, level-2 F1 per epoch): top 2 of the completed are 0 and 2;
# trial 1 scored higher but was pruned, so it is no candidate.
TRIALS = [
    ("aaaa0000", 0, "completed", {"lr": 3e-3, "loss": "ce"}, [0.30, 0.40]),
    ("aaaa0001", 1, "pruned", {"lr": 1e-2, "loss": "ce"}, [0.50]),
    ("aaaa0002", 2, "completed", {"lr": 5e-3, "loss": "focal", "focal_gamma": 2.0}, [0.20, 0.35]),
    ("aaaa0003", 3, "completed", {"lr": 1e-5, "loss": "ce"}, [0.10, 0.12]),
]


def make_search_run(root: Path, trials: list = TRIALS, max_epochs: int = MAX_EPOCHS, space_text: str = E2E_SPACE
                    ) -> Path:
    """A finished search's RUN_DIR (see the module docstring)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "space.yaml").write_text(space_text)
    settings = Settings(space=str(root / "space.yaml"), synthetic_rows=ROWS, max_seq_len=MAX_SEQ_LEN,
                        num_samples=len(trials), max_epochs=max_epochs, storage_path=str(root / "runs"), name="s",
                        max_concurrent=2, seed=0)
    space = load_space(settings.space)
    files = RunFiles(root / "runs" / "s")
    write_run_record(files, settings=settings, space=space, space_path=Path(settings.space), data=load_data(settings),
                     max_epochs=max_epochs, argv=["launch"])
    records = {tid: TrialRecord(trial_id=tid, optuna_number=n, status=status, params=params,
                                history=[{M.EPOCH: e, M.LEVEL2_MACRO_F1: s} for e, s in enumerate(scores, 1)])
               for tid, n, status, params, scores in trials}
    write_leaderboard(files, records, max_epochs=max_epochs, param_names=space.searched, seed=0, fold=0)
    return files.root


@pytest.fixture(scope="module")
def search_run(tmp_path_factory) -> Path:
    return make_search_run(tmp_path_factory.mktemp("search"))


@pytest.fixture(scope="module")
def confirmed(search_run, tmp_path_factory, local_ray):
    """A copy of the search run after `confirm --top 2 --folds 3`, and what it printed."""
    run_dir = tmp_path_factory.mktemp("confirmed") / "runs" / "s"
    shutil.copytree(search_run, run_dir)
    lines = []
    outcome = confirm(run_dir, top=2, folds=FOLDS, seeds=1, argv=["confirm", str(run_dir)], out=lines.append)
    return run_dir, outcome, "\n".join(lines)


def fold_data(fold: int):
    return prepare_data(synthesize(ROWS, seed=0)[0], folds=FOLDS, fold=fold, seed=0, max_seq_len=MAX_SEQ_LEN)


def test_confirm_csv_ranks_the_members_with_numbers_from_jobs_json(confirmed):
    run_dir, outcome, output = confirmed
    root = run_dir / "confirm"
    assert outcome.finished and stage_finished(RunFiles(run_dir).confirm)
    spec, jobs = read_json(root / "confirm.json"), read_json(root / "jobs.json")
    assert [m["name"] for m in spec["members"]] == ["trial-0", "trial-2", "linear"]
    assert [m.get("source_trial") for m in spec["members"]] == ["aaaa0000", "aaaa0002", None]
    assert [m.get("leaderboard_rank") for m in spec["members"]] == [1, 2, None]
    assert (spec["top"], spec["folds"], spec["seeds"], spec["split_seed"], spec["max_epochs"], spec["rows"]) == (
        2, FOLDS, 1, 0, MAX_EPOCHS, ROWS)
    assert len(spec["labels"]) == 35 and spec["settings"]["synthetic_rows"] == ROWS
    assert set(jobs) == {f"{m}/fold{f}/seed0" for m in ("trial-0", "trial-2", "linear") for f in range(FOLDS)}
    assert all(list(r) == [f.name for f in dataclasses.fields(JobRecord)] and r["status"] == "completed"
               and r["error"] is None
               for r in jobs.values())
    assert all(r[M.BEST_EPOCH] in (1, 2) for j, r in jobs.items() if not j.startswith("linear"))
    # Every job notes where it trained: here all on the CPU, so no peak GPU memory.
    assert {r[K.DEVICE] for r in jobs.values()} == {"cpu"} and {r[K.GPU_MEM_PEAK_GB] for r in jobs.values()} == {None}

    frame = pd.read_csv(root / "confirm.csv", dtype={"source_trial": str})
    assert sorted(frame["member"]) == ["linear", "trial-0", "trial-2"] and frame["rank"].tolist() == [1, 2, 3]
    assert frame["level2_mean"].is_monotonic_decreasing and set(frame["status"]) == {"complete"}
    assert (frame["n_scores"] == FOLDS).all()
    best = frame.iloc[0]["member"]
    for row in frame.itertuples():
        scores = np.array([jobs[f"{row.member}/fold{f}/seed0"][M.LEVEL2_MACRO_F1] for f in range(FOLDS)])
        level1 = [jobs[f"{row.member}/fold{f}/seed0"][M.LEVEL1_MACRO_F1] for f in range(FOLDS)]
        best_scores = np.array([jobs[f"{best}/fold{f}/seed0"][M.LEVEL2_MACRO_F1] for f in range(FOLDS)])
        assert row.level2_mean == pytest.approx(scores.mean()) and row.level2_std == pytest.approx(scores.std(ddof=1))
        assert row.level1_mean == pytest.approx(np.mean(level1))
        assert [getattr(row, f"level2_fold{f}") for f in range(FOLDS)] == pytest.approx(scores)
        assert row.paired_diff_vs_best == pytest.approx((scores - best_scores).mean())
        assert row.wins_vs_best == f"{(scores > best_scores).sum()}/{FOLDS}"
    trial0 = frame.set_index("member").loc["trial-0"]
    assert (trial0["kind"], trial0["source_trial"], trial0["optuna_number"], trial0["param.lr"]) == (
        "network", "aaaa0000", 0, 3e-3)
    assert frame.set_index("member").loc["linear", "kind"] == "linear"
    assert "linear fold 2: level-2 F1" in output and f"confirm.csv: {root / 'confirm.csv'}" in output
    assert "rank  member" in output  # the final table


def test_oof_files_hold_every_training_row_once_per_member(confirmed):
    run_dir, _, _ = confirmed
    root = run_dir / "confirm"
    frame = synthesize(ROWS, seed=0)[0]
    jobs = read_json(root / "jobs.json")
    table = pd.read_csv(root / "confirm.csv").set_index("member")
    for member in ("trial-0", "trial-2", "linear"):
        with np.load(root / "oof" / f"{member}.npz", allow_pickle=False) as oof:
            probs, fold_of, y, ids = oof["probs"], oof["fold_of"], oof["y"], oof["ids"]
        assert probs.dtype == np.float16 and probs.shape == (ROWS, 35)
        assert fold_of.dtype == np.int16 and y.dtype == np.int64 and ids.dtype.kind == "U"
        assert ids.tolist() == frame["id"].astype(str).tolist()
        assert np.allclose(probs.astype(np.float64).sum(axis=1), 1.0, atol=0.02)
        for fold in range(FOLDS):
            data = fold_data(fold)
            rows = np.flatnonzero(fold_of == fold)
            assert len(rows) == len(data.dev)  # each fold holds out exactly its dev rows ...
            assert (y[rows] == data.dev.labels).all()
            job = jobs[f"{member}/fold{fold}/seed0"]
            held_rows, held = read_heldout(root / job["model_dir"] / "heldout.npz")
            assert held_rows.tolist() == rows.tolist()  # ... in dev order, so the OOF is those rows' probs
            np.testing.assert_allclose(probs[rows], held, atol=1e-3)
            assert macro_f1(y[rows], held.argmax(axis=1), num_labels=35) == pytest.approx(job[M.LEVEL2_MACRO_F1])
        assert np.bincount(fold_of).sum() == ROWS  # every row once
        assert table.loc[member, "oof_level2_macro_f1"] == pytest.approx(
            macro_f1(y, probs.argmax(axis=1), num_labels=35))


def test_fold_models_reproduce_their_jobs_dev_scores(confirmed):
    run_dir, _, _ = confirmed
    root = run_dir / "confirm"
    jobs = read_json(root / "jobs.json")
    for job_id, job in jobs.items():
        data = fold_data(job["fold"])
        if job["member"] == "linear":
            assert job["model_dir"] == f"models/linear/fold{job['fold']}"
            member = load_linear(root / job["model_dir"] / "linear.npz")
            texts = synthesize(ROWS, seed=0)[0]["text"].to_numpy()
            probs = member.predict_proba(texts[read_heldout(root / job["model_dir"] / "heldout.npz")[0]])
        else:
            assert job["model_dir"] == f"models/{job['member']}/fold{job['fold']}-seed0"
            model, info = load_model_dir(root / job["model_dir"])
            assert info.vocab == data.vocab and info.max_seq_len == MAX_SEQ_LEN  # the fold's own vocabulary
            # members train with distinct seeds, none the search's own (0): run seed 0 + 1000 x (the
            # member's place in confirm.json + 1)
            seed = {"trial-0": 1000, "trial-2": 2000}[job["member"]]
            assert (info.config.max_epochs, info.config.seed) == (MAX_EPOCHS, seed)
            probs = probabilities(model, data.dev, batch_size=64, device=torch.device("cpu"))
        # the best evaluation's weights: its held-out probabilities and scores again
        np.testing.assert_allclose(probs, read_heldout(root / job["model_dir"] / "heldout.npz")[1], atol=1e-5)
        scores = M.classification_metrics(data.dev.labels, probs.argmax(axis=1), level1_of=data.labels.level1_of)
        assert scores[M.LEVEL2_MACRO_F1] == job[M.LEVEL2_MACRO_F1], job_id
        assert scores[M.LEVEL1_MACRO_F1] == pytest.approx(job[M.LEVEL1_MACRO_F1]), job_id


def test_confirm_again_reports_the_finished_stage_or_refuses_an_unfinished_one(confirmed, tmp_path):
    run_dir, _, _ = confirmed
    lines = []
    again = confirm(run_dir, top=3, out=lines.append)  # a finished stage: said so, nothing run
    assert again.already and again.finished and "already finished" in lines[0] and "--force" in lines[0]
    copy = tmp_path / "runs" / "s"
    shutil.copytree(run_dir, copy)
    jobs = read_json(copy / "confirm" / "jobs.json")
    jobs["trial-2/fold1/seed0"]["status"] = "running"
    (copy / "confirm" / "jobs.json").write_text(json.dumps(jobs))
    assert stage_pending(copy)
    with pytest.raises(ConfigError, match=r"unfinished confirm stage: continue it with `python -m search resume"):
        confirm(copy, out=lines.append)


def all_pruned_copy(search_run: Path, tmp_path: Path) -> Path:
    """A copy of the search run in which no trial completed (every one pruned)."""
    run_dir = tmp_path / "runs" / "s"
    shutil.copytree(search_run, run_dir)
    trials = read_json(run_dir / "trials.json")
    (run_dir / "trials.json").write_text(json.dumps([{**t, "status": "pruned"} for t in trials]))
    return run_dir


def test_confirm_refuses_bad_flags_and_runs_without_completed_trials(search_run, tmp_path):
    with pytest.raises(ConfigError, match=r"--folds is 1, but must be >= 2"):
        confirm(search_run, folds=1, out=print)
    with pytest.raises(ConfigError, match=r"--race-min-folds is 6, but must be from 2 to --folds \(5\)"):
        confirm(search_run, race=RaceRule(min_folds=6), out=print)
    with pytest.raises(ConfigError, match=r"--race-alpha is 0.9, but must be above 0 and at most 0.5"):
        confirm(search_run, race=RaceRule(alpha=0.9), out=print)
    assert not (search_run / "confirm").exists()
    run_dir = all_pruned_copy(search_run, tmp_path)
    with pytest.raises(ConfigError, match=r"no completed trial to confirm \(statuses: 4 pruned\)"):
        confirm(run_dir, out=print)
    assert not (run_dir / "confirm").exists()


def test_top_0_confirms_the_linear_member_alone_which_ensemble_and_predict_take(search_run, tmp_path):
    """A search that completed no trial still leads to a submission: the linear member (no Ray job)."""
    run_dir = all_pruned_copy(search_run, tmp_path)
    with pytest.raises(ConfigError, match=r"or pass --top 0 to confirm the linear member alone"):
        confirm(run_dir, out=print)
    with pytest.raises(ConfigError, match=r"--top 0 confirms the linear member alone, which --no-linear leaves"):
        confirm(run_dir, top=0, linear=False, out=print)
    lines = []
    outcome = confirm(run_dir, top=0, folds=FOLDS, argv=["confirm", str(run_dir), "--top", "0"], out=lines.append)
    assert outcome.finished and list(outcome.table["member"]) == ["linear"]
    assert not (run_dir / "confirm" / "ray").exists()  # no network job, so no Ray experiment
    spec = read_json(run_dir / "confirm" / "confirm.json")
    assert spec["top"] == 0 and [m["name"] for m in spec["members"]] == ["linear"]
    assert ConfirmSpec.load(run_dir / "confirm" / "confirm.json").top == 0  # read back as written, not as 1
    assert "0 config(s) x 3 folds x 1 seed(s) at 2 epochs, and the linear member" in "\n".join(lines)
    linear_oof = np.load(run_dir / "confirm" / "oof" / "linear.npz")["probs"]
    chosen = run_ensemble(run_dir, out=lines.append)
    assert chosen.members == ("linear",) and chosen.weights[0] > 0
    test = tmp_path / "test.csv"
    frame = synthesize(ROWS, seed=0)[0]
    frame[["id", "text"]].head(50).to_csv(test, index=False)
    run_predict(run_dir, data=test, out_path=tmp_path / "sub.csv", batch_size=16, progress=False, out=lines.append)
    submitted = pd.read_csv(tmp_path / "sub.csv", dtype=str)
    assert list(submitted["id"]) == list(frame["id"].head(50).astype(str))
    assert submitted["label"].isin(spec["labels"]).all()
    assert linear_oof.shape == (ROWS, len(spec["labels"]))


def progress(trial_dir: Path) -> list:
    path = trial_dir / "progress.csv"
    return pd.read_csv(path)[M.EPOCH].tolist() if path.exists() and path.stat().st_size else []


def test_a_killed_confirm_resumes_without_training_any_job_twice(search_run, tmp_path):
    run_dir, log = tmp_path / "runs" / "s", tmp_path / "driver.log"
    shutil.copytree(search_run, run_dir)
    jobs_json, ray_dir = run_dir / "confirm" / "jobs.json", run_dir / "confirm" / "ray"

    def jobs():
        try:
            return json.loads(jobs_json.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    proc = start(["confirm", str(run_dir), "--top", "1", "--folds", str(FOLDS)], log)
    # The driver records a job in jobs.json before it prints the job's end: wait for both.
    wait_for(lambda: any(r["status"] == "completed" and r["member"] != "linear" for r in jobs().values())
             and "[1/3 jobs done]" in log.read_text(), proc)
    kill(proc)
    printed = log.read_text()
    # jobs run two at a time, so whichever fold ends first is the one printed
    assert re.search(r"trial-0 fold \d seed 0 epoch 1/2  level-2 F1", printed) and "[1/3 jobs done]" in printed
    before = jobs()
    done = {j: r for j, r in before.items() if r["status"] == "completed" and r["member"] != "linear"}
    assert done and len(done) < FOLDS, "the kill came too late to interrupt anything"
    progress_before = {d.name: progress(d) for d in ray_dir.glob("trial-*")}

    proc = subprocess.run([sys.executable, "-m", "search", "resume", str(run_dir)], capture_output=True, text=True,
                          timeout=400)
    assert proc.returncode == 0, log.read_text()[-2000:] + proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "resuming the confirm stage" in proc.stdout
    after = jobs()
    assert set(after) == {f"{m}/fold{f}/seed0" for m in ("trial-0", "linear") for f in range(FOLDS)}
    assert all(r["status"] == "completed" for r in after.values())
    assert {j: after[j] for j in before if before[j]["status"] == "completed"} == {
        j: r for j, r in before.items() if r["status"] == "completed"}  # completed jobs untouched
    for trial_dir in ray_dir.glob("trial-*"):
        epochs = progress(trial_dir)
        assert epochs == list(range(1, len(epochs) + 1)), trial_dir.name  # no evaluation reported twice
        if trial_dir.name.startswith(tuple(j.replace("/", "_") for j in done)):
            assert epochs == progress_before[trial_dir.name], trial_dir.name  # a completed job never trained again
    for job_id in after:
        if job_id.startswith("trial-0"):
            trained = [d for d in ray_dir.glob(job_id.replace("/", "_") + "_*") if progress(d)]
            assert len(trained) == 1 and progress(trained[0])[-1] == MAX_EPOCHS, job_id  # one trial trained it
    frame = pd.read_csv(run_dir / "confirm" / "confirm.csv")
    assert sorted(frame["member"]) == ["linear", "trial-0"] and set(frame["status"]) == {"complete"}
    assert (run_dir / "confirm" / "oof" / "trial-0.npz").exists() and not stage_pending(run_dir)


FLAKY_JOB = "trial-0/fold1/seed0"


def fails_once(marker: Path):
    """`confirm_trial`, except that FLAKY_JOB fails the first time it starts (a marker file, since
    every attempt runs in a Ray worker)."""
    def trial(config, **kwargs):
        if config[K.JOB] == FLAKY_JOB and not marker.exists():
            marker.touch()
            raise RuntimeError("injected failure")
        return confirm_trial(config, **kwargs)
    return trial


def test_an_errored_job_is_skipped_on_resume_and_retrained_with_retry_errored(search_run, tmp_path, local_ray):
    run_dir = tmp_path / "runs" / "s"
    shutil.copytree(search_run, run_dir)
    jobs_json = run_dir / "confirm" / "jobs.json"
    lines = []
    outcome = confirm(run_dir, top=1, folds=FOLDS, max_failures=0, out=lines.append,
                      trial_fn=fails_once(tmp_path / "failed"))
    jobs = read_json(jobs_json)
    assert jobs[FLAKY_JOB]["status"] == "error" and "injected failure" in jobs[FLAKY_JOB]["error"]
    others = {j: r for j, r in jobs.items() if j != FLAKY_JOB}
    assert all(r["status"] == "completed" for r in others.values()) and len(others) == 2 * FOLDS - 1
    assert not outcome.finished and (tmp_path / "failed").exists()
    assert any("1 job(s) ended as errors" in line and "--retry-errored" in line for line in lines)
    assert outcome.table.set_index("member").loc["trial-0", "status"] != "complete"

    lines.clear()  # a plain resume leaves the errored job alone
    outcome = resume_confirm(run_dir, out=lines.append)
    assert read_json(jobs_json) == jobs and not outcome.finished
    assert any("--retry-errored" in line for line in lines)

    outcome = resume_confirm(run_dir, retry_errored=True, out=lambda line: None)
    after = read_json(jobs_json)
    assert after[FLAKY_JOB]["status"] == "completed" and outcome.finished
    assert {j: after[j] for j in others} == others  # the completed jobs were not trained again
    frame = pd.read_csv(run_dir / "confirm" / "confirm.csv")
    assert sorted(frame["member"]) == ["linear", "trial-0"] and set(frame["status"]) == {"complete"}
    assert not stage_pending(run_dir)


def test_status_shows_the_confirm_stage_progress(confirmed, tmp_path):
    run_dir, _, _ = confirmed
    jobs = read_json(run_dir / "confirm" / "jobs.json")
    text = status_text(run_dir)
    assert f"confirm: 3 members x {FOLDS} folds x 1 seeds = {3 * FOLDS} jobs; {3 * FOLDS} completed, 0 running" in text
    linear = [jobs[f"linear/fold{f}/seed0"][M.LEVEL2_MACRO_F1] for f in range(FOLDS)]
    assert (f"  linear: {FOLDS}/{FOLDS} jobs completed, level-2 macro-F1 {np.mean(linear):.4f} "
            f"+- {np.std(linear, ddof=1):.4f} so far, on cpu") in text  # the std confirm.csv reports
    assert "confirm finished: " in text

    copy = tmp_path / "runs" / "s"
    shutil.copytree(run_dir, copy)
    jobs["trial-2/fold1/seed0"]["status"] = "running"
    jobs["trial-2/fold1/seed0"][K.DEVICE] = "cuda:0"
    del jobs["trial-2/fold2/seed0"]
    jobs["trial-0/fold0/seed0"].pop(K.DEVICE)  # a record from before jobs noted their device
    (copy / "confirm" / "jobs.json").write_text(json.dumps(jobs))
    text = status_text(copy)
    assert f"{3 * FOLDS - 2} completed, 1 running, 0 failed, 1 not started" in text
    one = jobs["trial-2/fold0/seed0"][M.LEVEL2_MACRO_F1]
    # No std of one score; the devices of every job that noted one, the running job's included.
    assert f"  trial-2: 1/{FOLDS} jobs completed, level-2 macro-F1 {one:.4f} so far, on cpu, cuda:0" in text
    assert f"the confirm stage stopped before it finished: `python -m search resume {copy}`" in text


# Eight epochs on the synthetic rows: lr 1e-2 reaches about 0.24 level-2 macro-F1 on each of three
# folds, lr 1e-5 stays below 0.03 (measured 2026-12-06).
RACE_TRIALS = [
    ("bbbb0000", 0, "completed", {"lr": 1e-2, "loss": "ce"}, [0.30]),
    ("bbbb0001", 1, "completed", {"lr": 1e-2, "loss": "focal", "focal_gamma": 2.0}, [0.29]),
    ("bbbb0002", 2, "completed", {"lr": 1e-5, "loss": "ce"}, [0.28]),
]


def test_racing_stops_a_config_far_below_the_best_before_its_last_fold(tmp_path, local_ray):
    """trial-2 (lr 1e-5) learns next to nothing: after two folds it is below both others on each,
    and its third fold's job is stopped at its announcement, before it trains."""
    run_dir = make_search_run(tmp_path, RACE_TRIALS, max_epochs=8)
    lines = []
    outcome = confirm(run_dir, top=3, folds=FOLDS, race=RaceRule(min_folds=2, alpha=0.05), linear=False,
                      out=lines.append)
    jobs = read_json(run_dir / "confirm" / "jobs.json")
    assert [jobs[f"trial-2/fold{f}/seed0"]["status"] for f in range(FOLDS)] == ["completed", "completed", "raced_out"]
    assert not (run_dir / "confirm" / "models" / "trial-2" / "fold2-seed0").exists()
    table = outcome.table.set_index("member")
    assert table.loc["trial-2", "status"] == "raced_out" and table.loc["trial-2", "n_scores"] == 2
    assert table.iloc[0]["status"] == "complete" and outcome.finished and not stage_pending(run_dir)
    assert any(line.startswith("trial-2 raced out after 2 folds") for line in lines), lines
    assert any(line.startswith("racing: fold by fold") for line in lines)
    (trial_dir,) = (run_dir / "confirm" / "ray").glob("trial-2_fold2_seed0_*")
    reported = pd.read_csv(trial_dir / "progress.csv")  # its announcement only: it never reported an epoch
    assert len(reported) == 1 and M.EPOCH not in reported.columns
    status = status_text(run_dir)
    assert "8 completed, 0 running, 0 failed, 1 raced out, 0 not started" in status
    assert re.search(r"trial-2: 2/3 jobs completed, .*; raced out after 2 folds", status)
    assert "confirm finished" in status


def test_jobs_a_time_budget_stopped_are_continued_by_resume(search_run, tmp_path, local_ray):
    """Ray's time budget stops the running jobs without a trial end of theirs reaching the stage: they
    stay unfinished in jobs.json, and `resume` continues them (and those never started)."""
    run_dir = tmp_path / "runs" / "s"
    shutil.copytree(search_run, run_dir)
    outcome = confirm(run_dir, top=2, folds=FOLDS, linear=False, time_budget_s=2.0, out=lambda line: None)
    jobs = read_json(run_dir / "confirm" / "jobs.json")
    assert not outcome.finished and stage_pending(run_dir)
    assert not any(job["status"] == "error" for job in jobs.values()), jobs
    before = {j: r for j, r in jobs.items() if r["status"] == "completed"}
    assert len(before) < 2 * FOLDS

    outcome = resume_confirm(run_dir, out=lambda line: None)
    after = read_json(run_dir / "confirm" / "jobs.json")
    assert outcome.finished and not stage_pending(run_dir)
    assert all(job["status"] == "completed" for job in after.values()) and len(after) == 2 * FOLDS
    assert {j: after[j] for j in before} == before  # the completed jobs were not trained again


# E2E_SPACE's parameters on a small TextCNN at random init (the token view)
WORDVEC_SPACE = E2E_SPACE.replace(
    "fixed: {hidden_size: 32, num_layers: 1, num_heads: 2, intermediate_size: 64, pooler: mean, batch_size: 16}",
    'fixed: {encoder: textcnn, embedding_dim: 16, cnn_filters: 8, cnn_kernels: "1,2", pooler: max, batch_size: 16}')


def test_bigrams_confirms_the_first_configs_again_in_the_bigram_view(tmp_path, local_ray):
    from model.wordvec import WordVecConfig, train_vectors

    run_dir = make_search_run(tmp_path / "search", space_text=WORDVEC_SPACE)
    synthesize(ROWS, seed=0)[0].to_csv(tmp_path / "train.csv", index=False)  # the run's training text
    for view in ("tokens", "bigrams"):
        train_vectors(WordVecConfig(dim=16, epochs=1, min_count=2, view=view), [tmp_path / "train.csv"],
                      tmp_path / view, progress=None)
    with pytest.raises(ConfigError, match=r"--bigrams: trial-0-bigrams \(trial aaaa0000 in the bigram view\) cannot "
                                          r"run: .*it holds vectors of tokens and `view` is 'bigrams'"):
        confirm(run_dir, top=2, bigrams=tmp_path / "tokens", out=print)
    with pytest.raises(ConfigError, match=r"--bigrams confirms the first --bigram-top configs again in the bigram "
                                          r"view, but --top 0 confirms none"):
        confirm(run_dir, top=0, bigrams=tmp_path / "bigrams", out=print)
    assert not (run_dir / "confirm").exists()

    lines = []
    outcome = confirm(run_dir, top=2, folds=FOLDS, bigrams=tmp_path / "bigrams", bigram_top=1, out=lines.append)
    assert outcome.finished
    assert sorted(outcome.table["member"]) == ["linear", "trial-0", "trial-0-bigrams", "trial-2"]
    spec = read_json(run_dir / "confirm" / "confirm.json")
    assert spec["top"] == 2 and [m["name"] for m in spec["members"]] == ["trial-0", "trial-2", "trial-0-bigrams",
                                                                        "linear"]
    twin = spec["members"][2]
    assert twin["params"] == {**spec["members"][0]["params"], "view": "bigrams",
                              "checkpoint": str((tmp_path / "bigrams").resolve()), "embedding_dim": 0}
    assert twin["source_trial"] == "aaaa0000" and twin["optuna_number"] == 0
    assert "3 config(s) x 3 folds" in "\n".join(lines)

    # Its fold models read pairs, and still load when the vectors have gone; ensemble and predict take it.
    (tmp_path / "bigrams").rename(tmp_path / "moved")
    model, info = load_model_dir(run_dir / "confirm" / "models" / "trial-0-bigrams" / "fold0-seed0")
    assert info.config.view == "bigrams" and len(model.encoder.bigrams.keys) > 0
    tokens_model, _ = load_model_dir(run_dir / "confirm" / "models" / "trial-0" / "fold0-seed0")
    assert tokens_model.encoder.bigrams is None
    assert (run_dir / "confirm" / "oof" / "trial-0-bigrams.npz").is_file()
    run_ensemble(run_dir, method="prob", out=lines.append)
    assert "trial-0-bigrams" in read_json(run_dir / "confirm" / "ensemble.json")["members"]
    test = tmp_path / "test.csv"
    synthesize(ROWS, seed=0)[0][["id", "text"]].head(40).to_csv(test, index=False)
    for use in ("confirmed:trial-0-bigrams", "ensemble"):
        run_predict(run_dir, data=test, out_path=tmp_path / "sub.csv", use=use, batch_size=16, progress=False,
                    out=lines.append)
        assert len(pd.read_csv(tmp_path / "sub.csv")) == 40
