"""The confirm stage's driver side without Ray: what a job's final checkpoint becomes on disk, when
a member's OOF file appears, and the linear member."""

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from model import metrics as M
from model.config import TrialConfig
from model.errors import ConfigError
from model.inference import load_model_dir, probabilities
from model.network import build_model
from rundir.confirm import (
    JOB_SCORES,
    LINEAR,
    NETWORK,
    ConfirmSpec,
    JobPlan,
    Member,
    RaceRule,
    job_id,
    parse_job_id,
    read_heldout,
    read_oof,
)
from rundir.io import read_json
from rundir.paths import ConfirmFiles
from rundir.settings import Settings
from search.confirm_jobs import finished_job
from search.trainable import BEST, BEST_DEV_PROBS, BEST_METRICS, BEST_WEIGHTS, REPORT
from stages.confirm.plan import FoldData
from stages.confirm.reader import load_confirm
from stages.confirm.run import stage_finished
from stages.confirm.writer import ConfirmStage
from stages.predict import require_complete_member
from tests.conftest import TINY

FOLDS = 2
MEMBERS = (Member(name="trial-5", kind=NETWORK, source_trial="abcd", optuna_number=5, leaderboard_rank=1,
                  params={"lr": 1e-3}),
           Member(name="linear", kind=LINEAR, params={"C": 0.5, "inner_folds": 3, "calibration": "temperature",
                                                      "seed": 0}))


@pytest.fixture(scope="module")
def data() -> FoldData:
    return FoldData.load(Settings(synthetic_rows=600, max_seq_len=40), folds=FOLDS, seed=0)


@pytest.fixture
def stage(data, tmp_path) -> ConfirmStage:
    spec = ConfirmSpec(top=1, folds=FOLDS, seeds=1, split_seed=0, max_epochs=1, settings={"max_seq_len": 40},
                       labels=tuple(data.labels.level2), rows=600, members=MEMBERS)
    cfg = TrialConfig(**TINY, max_epochs=1, lr=1e-3).to_dict()
    plans = {job_id("trial-5", f, 0): JobPlan(member="trial-5", fold=f, seed=0, config=cfg) for f in range(FOLDS)}
    return ConfirmStage(ConfirmFiles(tmp_path / "confirm"), spec, plans=plans, vocabs=[d.vocab for d in data.encoded],
                        held_out=data.held_out, y=data.y, ids=data.ids, param_names=["lr"])


def final_state(data: FoldData, fold: int, *, finished: bool = True) -> dict:
    """What a job's final checkpoint holds: a (random) model as its best evaluation."""
    torch.manual_seed(fold)
    encoded = data.encoded[fold]
    model = build_model(TrialConfig(**TINY), vocab=encoded.vocab.tokens, max_seq_len=40,
                        num_labels=encoded.num_labels, num_level1=len(encoded.labels.level1))
    probs = probabilities(model, encoded.dev, batch_size=64, device=torch.device("cpu"))
    scores = M.classification_metrics(encoded.dev.labels, probs.argmax(axis=1), level1_of=encoded.labels.level1_of)
    return {REPORT: {M.FINISHED: finished},
            BEST: {BEST_WEIGHTS: model.state_dict(), BEST_DEV_PROBS: torch.from_numpy(probs),
                   BEST_METRICS: {M.EPOCH: 1, **{k: scores[k] for k in JOB_SCORES}}}}


def test_a_completed_job_leaves_its_model_and_a_complete_member_its_oof(stage, data):
    files = stage.files
    stage.start("trial-5/fold0/seed0")
    assert read_json(files.jobs_json)["trial-5/fold0/seed0"]["status"] == "running"
    state = final_state(data, 0)
    stage.complete("trial-5/fold0/seed0", finished_job(state, time_s=3.5))
    record = read_json(files.jobs_json)["trial-5/fold0/seed0"]
    assert record["status"] == "completed" and record["time_s"] == 3.5 and record[M.BEST_EPOCH] == 1
    assert record[M.LEVEL2_MACRO_F1] == state[BEST][BEST_METRICS][M.LEVEL2_MACRO_F1]
    assert record["model_dir"] == "models/trial-5/fold0-seed0"
    model, info = load_model_dir(files.root / record["model_dir"])
    assert info.vocab == data.encoded[0].vocab and info.labels == data.labels and info.config.lr == 1e-3
    np.testing.assert_allclose(probabilities(model, data.encoded[0].dev, batch_size=64, device=torch.device("cpu")),
                               state[BEST][BEST_DEV_PROBS].numpy(), atol=1e-6)
    assert not files.oof("trial-5").exists()  # one fold of two
    table = pd.read_csv(files.confirm_csv).set_index("member")
    assert table.loc["trial-5", "status"] == "partial" and table.loc["trial-5", "n_scores"] == 1

    stage.complete("trial-5/fold1/seed0", finished_job(final_state(data, 1), time_s=None))
    oof = read_oof(files.oof("trial-5"))
    assert sorted(np.bincount(oof["fold_of"])) == sorted(len(h) for h in data.held_out)
    assert (oof["y"] == data.y).all() and oof["ids"].tolist() == data.frame["id"].astype(str).tolist()
    for fold in range(FOLDS):
        rows, probs = read_heldout(files.heldout(files.model_dir("trial-5", fold, 0)))
        assert (oof["fold_of"][rows] == fold).all()
        np.testing.assert_allclose(oof["probs"][rows], probs, atol=1e-3)
    assert pd.read_csv(files.confirm_csv).set_index("member").loc["trial-5", "status"] == "complete"


def test_a_job_without_a_final_checkpoint_is_an_error_not_a_model(stage, data):
    stage.complete("trial-5/fold0/seed0", finished_job(final_state(data, 0, finished=False), time_s=1.0))
    record = read_json(stage.files.jobs_json)["trial-5/fold0/seed0"]
    assert record["status"] == "error" and "without a final checkpoint" in record["error"]
    assert not stage.files.model_dir("trial-5", 0, 0).exists()


def test_the_linear_member_is_fitted_once_per_fold(stage, data):
    lines = []
    stage.fit_linear(data, lines.append)
    jobs = read_json(stage.files.jobs_json)
    assert sorted(jobs) == ["linear/fold0/seed0", "linear/fold1/seed0"]
    assert all(r["status"] == "completed" and r[M.LEVEL2_MACRO_F1] > 0.2 for r in jobs.values())
    assert stage.files.linear_model(1).exists() and stage.files.oof("linear").exists()
    assert [line.split(":")[0] for line in lines] == ["linear fold 0", "linear fold 1"]
    stage.fit_linear(data, lines.append)  # completed folds are not fitted again
    assert len(lines) == 2 and read_json(stage.files.jobs_json) == jobs


def test_folds_whose_held_out_rows_lack_labels_are_named(data):
    assert data.notes() == []  # 600 rows in 2 folds: every label in both
    many = FoldData.load(Settings(synthetic_rows=400, max_seq_len=16), folds=8, seed=0)
    counts = many.frame["label"].value_counts()
    rare = counts[counts < 8]
    assert len(rare)  # labels with fewer rows than folds: absent from some folds' held-out rows
    notes = many.notes()
    assert notes and all("--folds 8" in note and "or fewer scores every label" in note for note in notes)
    named = {label for label in rare.index if any(f"{label} (" in note for note in notes)}
    assert named == set(rare.index)


RACE_FOLDS = 4
RACERS = tuple(Member(name=f"trial-{n}", kind=NETWORK, source_trial=f"t{n}", optuna_number=n, leaderboard_rank=n,
                      params={"lr": 1e-3}) for n in (1, 2, 3))
# Per member, level-2 macro-F1 per fold: trial-2 ties trial-1 (noise), trial-3 is below on every fold.
RACE_SCORES = {"trial-1": [0.55, 0.53, 0.56, 0.54], "trial-2": [0.554, 0.524, 0.562, 0.543],
               "trial-3": [0.52, 0.505, 0.525, 0.51]}


@pytest.fixture(scope="module")
def race_data() -> FoldData:
    return FoldData.load(Settings(synthetic_rows=600, max_seq_len=40), folds=RACE_FOLDS, seed=0)


def test_racing_runs_fold_by_fold_and_races_out_a_clearly_worse_member_only(race_data, tmp_path):
    spec = ConfirmSpec(top=3, folds=RACE_FOLDS, seeds=1, split_seed=0, max_epochs=1, settings={"max_seq_len": 40},
                       labels=tuple(race_data.labels.level2), rows=600, members=RACERS, race=RaceRule(3, 0.05))
    cfg = TrialConfig(**TINY, max_epochs=1).to_dict()
    plans = {job_id(m.name, f, 0): JobPlan(member=m.name, fold=f, seed=0, config=cfg)
             for m in RACERS for f in range(RACE_FOLDS)}
    files = ConfirmFiles(tmp_path / "confirm")
    stage = ConfirmStage(files, spec, plans=plans, vocabs=[d.vocab for d in race_data.encoded],
                         held_out=race_data.held_out, y=race_data.y, ids=race_data.ids, param_names=["lr"])
    spec.save(files.confirm_json)
    said = []
    stage.say = said.append
    order = spec.job_order(stage.network_jobs())
    assert order[:4] == ["trial-1/fold0/seed0", "trial-2/fold0/seed0", "trial-3/fold0/seed0", "trial-1/fold1/seed0"]
    assert dataclasses.replace(spec, race=None).job_order(stage.network_jobs()) == stage.network_jobs()

    for job in order:
        if stage.settled(job):
            continue
        member, fold, _ = parse_job_id(job)
        finished = finished_job(final_state(race_data, fold), time_s=1.0)
        stage.complete(job, dataclasses.replace(finished, scores={**finished.scores,
                                                                  M.LEVEL2_MACRO_F1: RACE_SCORES[member][fold]}))
        if job == "trial-3/fold1/seed0":
            assert not any(stage.raced_out(j) for j in order)  # two folds: too few to tell

    jobs = read_json(files.jobs_json)
    assert [jobs[f"trial-3/fold{f}/seed0"]["status"] for f in range(RACE_FOLDS)] == ["completed"] * 3 + ["raced_out"]
    assert jobs["trial-3/fold3/seed0"]["note"].startswith("raced out after 3 folds: -0.0300 level-2 macro-F1 "
                                                          "against trial-1 (one-sided paired t-test p=")
    assert not files.model_dir("trial-3", 3, 0).exists() and not files.oof("trial-3").exists()
    assert said == ["trial-3 " + jobs["trial-3/fold3/seed0"]["note"] + ": its 1 job(s) left will not run"]
    table = pd.read_csv(files.confirm_csv).set_index("member")
    assert table["status"].to_dict() == {"trial-1": "complete", "trial-2": "complete", "trial-3": "raced_out"}
    assert table.loc["trial-3", "n_scores"] == 3 and table.loc["trial-3", "rank"] == 3
    assert stage_finished(files)
    complete, left_out = load_confirm(tmp_path).complete_members()
    assert complete == ["trial-2", "trial-1"] and left_out == {"trial-3": jobs["trial-3/fold3/seed0"]["note"]}
    with pytest.raises(ConfigError, match=r"confirmed member trial-3 was raced out after 3 folds: .* pick the "
                       "ensemble or a complete member with --use"):
        require_complete_member(load_confirm(tmp_path), "trial-3")
