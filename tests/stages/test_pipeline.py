"""`python -m search pipeline`: the budget rule, the stage machinery (a finished stage never runs
again), refusals before any work, and (Ray) a real pipeline killed in its search and resumed."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from cli.main import main
from model import metrics as M
from model.errors import ConfigError
from model.synthetic import write_synthetic
from rundir.paths import RunFiles
from rundir.pipeline import DONE, SKIPPED, STAGES, PipelineRecord
from rundir.settings import Settings
from rundir.trials import COMPLETED, PRUNED, TrialRecord, load_records, save_records
from spaces.space import load_space
from stages import pipeline as P

ROOT = Path(__file__).resolve().parents[2]


def record(budget_s: float = 7200.0, **spent: float) -> PipelineRecord:
    rec = PipelineRecord(budget_s=budget_s, test="t.csv", out="s.csv", folds=5, max_top=10)
    for name, seconds in spent.items():
        rec.stage(name).spent_s = seconds
    return rec


def test_the_search_gets_its_share_of_what_is_left_and_confirm_the_rest_but_the_reserve():
    rec = record(vectors=60.0)
    reserve = P.end_reserve(7200.0)
    assert reserve == 360.0  # 5% of 2h (at least a minute)
    assert P.search_share(rec) == pytest.approx(0.4 * (7200 - 60 - 360))
    rec.stage("search").spent_s = 2500.0  # the search ended early: confirm gets its time
    assert P.confirm_share(rec) == pytest.approx(7200 - 60 - 2500 - 360)
    assert P.end_reserve(600.0) == 60.0  # the floor


def save_four_trials(run_dir: Path) -> None:
    files = RunFiles(run_dir)
    # (seconds, level-2 F1) of the completed trials; confirm takes them best first: t2, t0, t3, t1
    trials = {"t0": (100.0, 0.5), "t1": (120.0, 0.3), "t2": (200.0, 0.6), "t3": (300.0, 0.4)}
    records = {tid: TrialRecord(trial_id=tid, status=COMPLETED, time_s=seconds, optuna_number=int(tid[1]),
                                history=[{M.EPOCH: 1, M.LEVEL2_MACRO_F1: score}])
               for tid, (seconds, score) in trials.items()}
    records["p"] = TrialRecord(trial_id="p", status=PRUNED, time_s=5.0, optuna_number=9,  # pruned: no candidate
                               history=[{M.EPOCH: 1, M.LEVEL2_MACRO_F1: 0.9}])
    save_records(files, records)


def test_confirm_is_sized_from_the_times_of_the_trials_it_will_take(tmp_path):
    save_four_trials(tmp_path)
    # 5 folds: t2 costs 1000 slot-seconds, t0 500, t3 1500, t1 600; 2 slots x 1000 s x 0.85 hold 1700
    size = P.confirm_size(tmp_path, share_s=1000.0, folds=5, slots=2, max_top=10)
    assert (size.top, size.job_s, size.fits) == (2, 150.0, int(1700 // 150.0))  # t2 + t0; t3 would overrun
    assert P.confirm_size(tmp_path, share_s=3600.0, folds=5, slots=2, max_top=10).top == 4  # every completed one
    assert P.confirm_size(tmp_path, share_s=3600.0, folds=5, slots=2, max_top=3).top == 3
    assert P.confirm_size(tmp_path, share_s=100.0, folds=5, slots=2, max_top=10).top == 1  # never none


def test_bigram_twins_are_planned_first_at_their_cost_then_the_other_configs(tmp_path):
    save_four_trials(tmp_path)
    assert P.BIGRAM_COST == 2.3
    # 2 slots x 2500 s x 0.85 = 4250: the twins of t2 and t0 with their configs cost 3.3 x 1500 = 4950,
    # t2's alone 3.3 x 1000 = 3300; then t0 (500) fits and t3 (1500) does not
    size = P.confirm_size(tmp_path, share_s=2500.0, folds=5, slots=2, max_top=10, bigram_top=2)
    assert (size.top, size.bigram_top, size.job_s) == (2, 1, 150.0)
    line = P.confirm_plan_line(size, folds=5, left_s=3000.0)
    assert "top 2 x 5 folds, and the first 1 again in the bigram view in 50m" in line
    size = P.confirm_size(tmp_path, share_s=10_000.0, folds=5, slots=2, max_top=10, bigram_top=2)
    assert (size.top, size.bigram_top) == (4, 2)  # 4950 + 1500 + 600 = 7050 <= 17000
    size = P.confirm_size(tmp_path, share_s=100.0, folds=5, slots=2, max_top=10, bigram_top=2)
    assert (size.top, size.bigram_top) == (1, 0)  # no twin fits: the best config alone, as without them
    assert P.confirm_size(tmp_path, share_s=10_000.0, folds=5, slots=2, max_top=10).bigram_top == 0


def test_bigrams_is_refused_for_a_space_of_other_encoders(tmp_path):
    test = tmp_path / "test.csv"
    test.write_text("id,text\n1,5 6 7\n")
    settings = Settings(space="demo", storage_path=str(tmp_path / "runs"))
    with pytest.raises(ConfigError, match=r"--bigrams confirms configs again reading token pairs, which only the "
                                          r"word-vector encoders .* do, but demo can draw others; pass --space cpu"):
        P.check_request(settings, test=test, out_path=tmp_path / "s.csv", budget_s=3600.0, folds=5, max_top=10,
                        bigrams=True)
    P.check_request(dataclasses.replace(settings, space="cpu"), test=test, out_path=tmp_path / "s.csv",
                    budget_s=3600.0, folds=5, max_top=10, bigrams=True)


def test_a_search_without_a_completed_trial_leaves_the_linear_member_alone_saying_why(tmp_path):
    save_records(RunFiles(tmp_path), {"p": TrialRecord(trial_id="p", status=PRUNED, time_s=5.0)})
    size = P.confirm_size(tmp_path, share_s=600.0, folds=5, slots=2, max_top=10)
    assert size.top == 0 and size.fits == 0
    line = P.confirm_plan_line(size, folds=5, left_s=600.0)
    assert "completed no trial within its share, so the submission comes from the linear member alone" in line
    assert "a longer --budget" in line


def test_bigram_twins_are_on_by_default_for_a_space_of_word_vector_encoders_only():
    assert P.default_bigrams(P.with_default_space(Settings())) is True  # the cpu space
    assert P.default_bigrams(Settings(space="demo")) is False
    assert P.default_bigrams(Settings(space="cpu", sets=("encoder=tiny",))) is False
    assert P.default_bigrams(Settings(space="/no/such/space.yaml")) is False  # check_request says why


@pytest.mark.parametrize("space, sets, expected", [
    ("cpu", {}, True), ("cpu", {"checkpoint": "/some/vectors"}, False), ("demo", {}, False),
])
def test_vectors_are_trained_for_a_word_vector_space_that_names_none(space, sets, expected):
    assert P.needs_vectors(load_space(space, sets=sets), Settings()) is expected


def test_a_pipeline_searches_the_cpu_space_unless_given_another():
    assert P.with_default_space(Settings()).space == "cpu"
    assert P.with_default_space(Settings(space="demo")).space == "demo"
    assert P.with_default_space(Settings(space="my/space.yaml")).space == "my/space.yaml"


class Stubbed(P.Pipeline):
    """The stage machinery with stand-in stages that count their calls; `fail` interrupts one once."""

    calls: list[str]
    fail: str | None = None

    def _stage(self, name: str) -> None:
        stage = self.record.stage(name)
        with self.clock.running(stage, planned_s=10.0):
            self.calls.append(name)
            if self.fail == name:
                self.fail = None
                raise KeyboardInterrupt  # what a kill leaves: the stage running, not done
        self.clock.done(stage, f"{name} ran")

    def run_vectors(self):
        self._stage("vectors")

    def run_search(self):
        self._stage("search")

    def run_confirm(self):
        self._stage("confirm")

    def run_ensemble(self):
        self._stage("ensemble")

    def run_predict(self):
        self._stage("predict")


@pytest.mark.parametrize("interrupted", STAGES)
def test_an_interrupted_stage_is_run_again_and_a_finished_one_never(tmp_path, interrupted):
    files = RunFiles(tmp_path)
    rec = record(600.0)
    rec.save(files.pipeline_json)
    calls: list[str] = []

    def pipeline() -> Stubbed:
        loaded = PipelineRecord.load(files.pipeline_json)
        stub = Stubbed(Settings(), files, loaded, P.Clock(loaded, files.pipeline_json, lambda line: None),
                       lambda line: None)
        stub.calls = calls
        return stub

    first = pipeline()
    first.fail = interrupted
    with pytest.raises(KeyboardInterrupt):
        first.run()
    saved = PipelineRecord.load(files.pipeline_json)
    assert saved.current().name == interrupted and saved.stage(interrupted).status == "running"
    pipeline().run()  # what `resume RUN_DIR` does
    done = PipelineRecord.load(files.pipeline_json)
    assert done.finished and all(s.status == DONE for s in done.stages)
    assert calls == [*STAGES[:STAGES.index(interrupted) + 1], *STAGES[STAGES.index(interrupted):]]


@pytest.mark.parametrize("flags, message", [
    (["--budget", "2m"], "--budget is 120 s, but a pipeline needs at least 5 minutes"),
    (["--budget", "2h", "--test", "/nonexistent/test.csv"], "file not found"),
    (["--budget", "soon"], "is not a duration"),
])
def test_bad_requests_are_refused_before_any_work(tmp_path, capsys, flags, message):
    test = tmp_path / "test.csv"
    test.write_text("id,text\n1,2 3\n")
    argv = ["pipeline", "--test", str(test), "--out", str(tmp_path / "s.csv"), "--storage-path",
            str(tmp_path / "runs"), "--name", "p", *flags]
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


# A pipeline run in a child process, its minimum budget lowered so that a whole one takes about two
# minutes on 2 CPUs: the search gets about 40 s, confirm about a minute.
CHILD = """
import sys
from stages import pipeline
pipeline.MIN_BUDGET_S = 60
from cli.main import main
main(sys.argv[1:])
"""


def _child(argv: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CHILD, *argv], cwd=ROOT, stdout=log.open("w"),
                            stderr=subprocess.STDOUT, start_new_session=True)


@pytest.mark.ray
def test_a_pipeline_killed_in_its_search_resumes_and_writes_a_submission_within_its_budget(tmp_path):
    train, test = write_synthetic(tmp_path / "data", rows=800, seed=3)
    run_dir = tmp_path / "runs" / "p"
    budget = 150.0
    argv = ["pipeline", "--data", str(train), "--test", str(test), "--out", str(tmp_path / "submission.csv"),
            "--budget", f"{budget:.0f}s", "--storage-path", str(tmp_path / "runs"), "--name", "p",
            "--max-epochs", "2", "--max-seq-len", "48", "--max-top", "2"]
    child = _child(argv, tmp_path / "first.log")
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and child.poll() is None:  # kill it once the search has a trial
        trials = run_dir / "trials.json"
        if trials.exists() and any(r["status"] != "running" for r in json.loads(trials.read_text() or "[]")):
            break
        time.sleep(1)
    assert child.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
    os.killpg(child.pid, signal.SIGKILL)
    child.wait()
    before = load_records(RunFiles(run_dir))
    killed = PipelineRecord.load(run_dir / "pipeline.json")
    # No --space: the pipeline searches the cpu space, whose word vectors it trained first.
    assert killed.settings["space"] == "cpu" and killed.vectors == str(run_dir / "vectors")
    assert killed.bigrams and killed.pairs == str(run_dir / "pairs")  # its bigram view too, by default
    assert killed.current().name == "search" and killed.stage("vectors").status == DONE
    assert (run_dir / "vectors" / "vectors.npy").is_file()

    resumed = _child(["resume", str(run_dir)], tmp_path / "resume.log")
    assert resumed.wait(timeout=400) == 0, (tmp_path / "resume.log").read_text()[-3000:]
    log = (tmp_path / "resume.log").read_text()
    final = PipelineRecord.load(run_dir / "pipeline.json")
    assert final.finished and final.stage("search").spent_s >= killed.stage("search").spent_s
    after = load_records(RunFiles(run_dir))
    assert set(before) <= set(after)  # the search went on: no trial of before the kill was lost
    assert all(after[t].status == r.status for t, r in before.items() if r.status != "running")
    # Within the budget (+5%), with every stage's time recorded; the summary says what was spent.
    assert final.spent_s <= budget * 1.05, final.to_dict()
    assert "submission: " in log and "of the 2m30s budget" in log
    submission = pd.read_csv(tmp_path / "submission.csv", dtype=str)
    assert submission["id"].tolist() == pd.read_csv(test, dtype=str)["id"].tolist()
    assert submission["label"].notna().all()


@pytest.mark.ray
def test_a_pipeline_whose_search_completed_no_trial_submits_from_the_linear_member(tmp_path, local_ray):
    from rundir.io import read_json
    from tests.stages.test_confirm import ROWS, TRIALS, make_search_run

    pruned = [(tid, number, PRUNED, params, scores) for tid, number, _, params, scores in TRIALS]
    files = RunFiles(make_search_run(tmp_path / "search", trials=pruned))
    test = tmp_path / "test.csv"
    write_synthetic(tmp_path / "data", rows=ROWS, seed=1)[1].replace(test)
    rec = PipelineRecord(budget_s=1800.0, test=str(test), out=str(tmp_path / "submission.csv"), folds=3, max_top=10,
                         settings=read_json(files.run_json)["settings"])
    rec.stage("vectors").status = SKIPPED
    rec.stage("search").status = DONE  # a search whose share ran out before any trial completed
    rec.save(files.pipeline_json)
    lines: list[str] = []
    done = P.resume_pipeline(files.root, out=lines.append)
    printed = "\n".join(lines)
    assert done.finished and done.stage("confirm").note == P.NO_NETWORK_NOTE
    assert "the search completed no trial within its share, so the submission comes from the linear member " \
           "alone (3 folds)" in printed
    assert "ensemble: linear x" in printed
    submission = pd.read_csv(tmp_path / "submission.csv", dtype=str)
    expected = pd.read_csv(test, dtype=str)
    assert list(submission["id"]) == list(expected["id"]) and submission["label"].str.match(r"^\d+-\d+$").all()


@pytest.mark.ray
def test_a_pipeline_with_bigrams_trains_pair_vectors_and_confirms_the_first_configs_in_that_view(tmp_path, local_ray,
                                                                                                 capsys):
    from model.wordvec import vectors_view
    from rundir.io import read_json
    from tests.stages.test_confirm import ROWS, WORDVEC_SPACE, make_search_run

    files = RunFiles(make_search_run(tmp_path / "search", space_text=WORDVEC_SPACE))
    test = tmp_path / "test.csv"
    write_synthetic(tmp_path / "data", rows=ROWS, seed=1)[1].replace(test)
    rec = PipelineRecord(budget_s=1800.0, test=str(test), out=str(tmp_path / "submission.csv"), folds=3, max_top=10,
                         bigrams=True, settings=read_json(files.run_json)["settings"])
    rec.stage("search").status = DONE  # the search ran (its trials are on record); the vectors stage did not
    rec.save(files.pipeline_json)
    lines: list[str] = []
    done = P.resume_pipeline(files.root, out=lines.append)
    printed = "\n".join(lines)
    assert done.finished and done.pairs == str(files.pairs_dir.resolve()) and vectors_view(files.pairs_dir) == "bigrams"
    assert "word2vec (tokens and bigrams)" in done.stage("vectors").note
    embedded = capsys.readouterr().out
    assert "token-pair vectors of " in embedded and "(use with --set" not in embedded  # no embed hint inside
    assert done.stage("confirm").note == "top 3 x 3 folds + 2 in the bigram view"
    assert "top 3 x 3 folds, and the first 2 again in the bigram view" in printed
    spec = read_json(files.confirm.confirm_json)
    assert [m["name"] for m in spec["members"]] == ["trial-0", "trial-2", "trial-3", "trial-0-bigrams",
                                                    "trial-2-bigrams", "linear"]
    assert spec["command"].endswith(f"--top 3 --bigrams {files.pairs_dir.resolve()} --bigram-top 2")
    assert PipelineRecord.load(files.pipeline_json).bigrams  # kept for a resume
    assert P.plan_text(done).endswith("x 3 folds; the first 2 also in the bigram view, planned first)")
    submission = pd.read_csv(tmp_path / "submission.csv", dtype=str)
    assert list(submission["id"]) == list(pd.read_csv(test, dtype=str)["id"])
