"""rundir/confirm.py: RUN_DIR/confirm's files as typed records, written and read back; damaged ones refused."""

import dataclasses
import json

import numpy as np
import pytest

from model.errors import ConfigError
from rundir.confirm import (
    ConfirmSpec,
    EnsembleRecord,
    JobRecord,
    Member,
    RaceRule,
    bigram_twin,
    is_bigram_twin,
    read_heldout,
    read_jobs,
    read_oof,
    searched_configs,
    write_heldout,
    write_jobs,
    write_oof,
)


def test_oof_file_format(tmp_path):
    probs = np.random.default_rng(0).dirichlet(np.ones(4), size=6)
    path = tmp_path / "oof" / "trial-1.npz"
    write_oof(path, probs=probs, fold_of=np.array([0, 1, 0, 1, 0, 1]), y=np.arange(6) % 4,
                ids=[10, 11, "a", "b", 14, 15])
    with np.load(path, allow_pickle=False) as data:  # no pickled objects
        assert sorted(data.files) == ["fold_of", "ids", "probs", "y"]
        assert data["probs"].dtype == np.float16 and data["probs"].shape == (6, 4)
        assert data["fold_of"].dtype == np.int16 and data["y"].dtype == np.int64
        assert data["ids"].dtype.kind == "U" and data["ids"].tolist() == ["10", "11", "a", "b", "14", "15"]
        np.testing.assert_allclose(data["probs"], probs, atol=1e-3)
    heldout = tmp_path / "heldout.npz"
    write_heldout(heldout, rows=np.array([3, 1]), probs=probs[:2])
    rows, back = read_heldout(heldout)
    assert rows.tolist() == [3, 1] and back.dtype == np.float32


SPEC = ConfirmSpec(top=1, folds=2, seeds=1, split_seed=0, max_epochs=2, labels=("1-1", "2-2"), rows=10,
                   members=(Member(name="trial-0", kind="network", source_trial="abcd1234", optuna_number=0,
                                   leaderboard_rank=1, params={"lr": 0.01}),
                            Member(name="linear", kind="linear", params={"C": 0.5})),
                   settings={"max_seq_len": 32}, created="2026-12-06T00:00:00+00:00", command="python -m search x")


def test_a_bigram_twin_is_its_config_in_the_pair_view_and_not_a_searched_config():
    network, linear = SPEC.members
    twin = bigram_twin(network, "/ckpt/pairs")
    assert twin.name == "trial-0-bigrams" and twin.source_trial == network.source_trial
    assert twin.params == {"lr": 0.01, "view": "bigrams", "checkpoint": "/ckpt/pairs", "embedding_dim": 0}
    assert [is_bigram_twin(m) for m in (network, twin, linear)] == [False, True, False]
    assert searched_configs([network, twin, linear]) == 1
    assert searched_configs([linear]) == 0


def test_confirm_spec_round_trips_with_the_file_s_key_order(tmp_path):
    path = tmp_path / "confirm.json"
    SPEC.save(path)
    raw = json.loads(path.read_text())
    assert list(raw) == ["top", "folds", "seeds", "split_seed", "max_epochs", "created", "command", "settings",
                         "labels", "rows", "members", "race", "seed_stride", "seed_offset"]
    assert list(raw["members"][0]) == ["name", "kind", "source_trial", "optuna_number", "leaderboard_rank", "params"]
    assert list(raw["members"][1]) == ["name", "kind", "params"]
    assert ConfirmSpec.load(path) == SPEC
    assert SPEC.jobs() == ["trial-0/fold0/seed0", "trial-0/fold1/seed0", "linear/fold0/seed0", "linear/fold1/seed0"]
    assert SPEC.jobs("network") == ["trial-0/fold0/seed0", "trial-0/fold1/seed0"]
    raced = dataclasses.replace(SPEC, race=RaceRule(min_folds=2, alpha=0.1))
    raced.save(path)
    assert json.loads(path.read_text())["race"] == {"min_folds": 2, "alpha": 0.1}
    assert ConfirmSpec.load(path) == raced
    assert raced.job_order(raced.jobs()) == ["trial-0/fold0/seed0", "linear/fold0/seed0", "trial-0/fold1/seed0",
                                             "linear/fold1/seed0"]  # fold by fold
    assert SPEC.job_order(SPEC.jobs()) == SPEC.jobs()  # member by member


def test_members_train_with_distinct_seeds_never_the_searchs_but_stages_written_before_keep_theirs(tmp_path):
    spec = dataclasses.replace(SPEC, split_seed=7, seeds=2)
    seeds = [spec.training_seed(m, s) for m in ("trial-0", "linear") for s in (0, 1)]
    assert seeds == [1007, 1008, 2007, 2008] and 7 not in seeds  # 7: the search's seed
    path = tmp_path / "confirm.json"
    before_offset = spec.to_dict()
    del before_offset["seed_offset"]
    path.write_text(json.dumps(before_offset))
    assert ConfirmSpec.load(path).training_seed("linear", 1) == 1008
    before_stride = dict(before_offset)
    del before_stride["seed_stride"]
    path.write_text(json.dumps(before_stride))
    assert ConfirmSpec.load(path).training_seed("linear", 1) == 8


def test_job_records_round_trip(tmp_path):
    path = tmp_path / "jobs.json"
    jobs = {"trial-0/fold0/seed0": JobRecord(member="trial-0", fold=0, seed=0, status="completed",
                                             level2_macro_f1=0.5, level1_macro_f1=0.7, accuracy=0.6, best_epoch=2,
                                             time_s=3.5, device="cpu", model_dir="models/trial-0/fold0-seed0")}
    write_jobs(path, jobs)
    assert list(json.loads(path.read_text())["trial-0/fold0/seed0"]) == [
        "member", "fold", "seed", "status", "level2_macro_f1", "level1_macro_f1", "accuracy", "best_epoch", "time_s",
        "device", "gpu_mem_peak_gb", "model_dir", "error", "note"]
    assert read_jobs(path) == jobs
    assert read_jobs(tmp_path / "missing.json") == {}


def _spec_without(key):
    value = SPEC.to_dict()
    del value[key]
    return value


@pytest.mark.parametrize("value, problem", [
    ([], "where an object belongs"),
    (_spec_without("folds"), "no `folds`"),
    ({**SPEC.to_dict(), "members": []}, "`members` is not a non-empty list"),
    ({**SPEC.to_dict(), "members": ["trial-0"]}, "a member is not an object"),
    ({**SPEC.to_dict(), "members": [{"name": "x", "kind": "forest", "params": {}}]}, "not network or linear"),
    ({**SPEC.to_dict(), "folds": "five"}, "`folds` is 'five'"),
    ({**SPEC.to_dict(), "labels": "1-1"}, "`labels` is not a list"),
    ({**SPEC.to_dict(), "race": {"min_folds": 3, "alpha": 2}}, "`race` is {'min_folds': 3, 'alpha': 2}, not an"),
    ({**SPEC.to_dict(), "race": "yes"}, "`race` is 'yes'"),
])
def test_a_damaged_confirm_json_is_refused_naming_the_fix(tmp_path, value, problem):
    path = tmp_path / "confirm" / "confirm.json"
    path.parent.mkdir()
    path.write_text(json.dumps(value))
    with pytest.raises(ConfigError, match="confirm.json is damaged") as err:
        ConfirmSpec.load(path)
    assert problem in str(err.value) and "confirm RUN_DIR --force" in str(err.value)


@pytest.mark.parametrize("value, problem", [
    ({"j": "completed"}, "job 'j' is not an object"),
    ({"j": {"fold": 0, "seed": 0, "status": "completed"}}, "job 'j' has no `member`"),
    ({"j": {"member": "m", "fold": "zero", "seed": 0, "status": "completed"}}, "`fold` and `seed` counts"),
    ({"j": {"member": "m", "fold": 0, "seed": 0, "status": "done"}}, "has status 'done'"),
    ({"j": {"member": "m", "fold": 0, "seed": 0, "status": "completed", "level2_macro_f1": "high"}},
     "not a finite number"),
    ({"j": {"member": "m", "fold": 0, "seed": 0, "status": "completed", "colour": "red"}}, "unknown key(s) colour"),
    ({"j": {"member": "m", "fold": 0, "seed": 0, "status": "raced_out", "note": 3}}, "has note 3, not a string"),
])
def test_a_damaged_jobs_json_is_refused_naming_the_fix(tmp_path, value, problem):
    path = tmp_path / "jobs.json"
    path.write_text(json.dumps(value))
    with pytest.raises(ConfigError, match="jobs.json is damaged") as err:
        read_jobs(path)
    assert problem in str(err.value)


ENSEMBLE = EnsembleRecord(
    members=("trial-0", "linear"), weights=(2, 1), method="prob", selection="greedy", max_members=20, oof_score=0.6,
    nested_score=0.55, fold_scores=(0.5, 0.6), fold_weights=((1, 1), (2, 1)), folds=(0, 1), option="greedy",
    member_kinds={"trial-0": "network", "linear": "linear"}, labels=("1-1", "2-2"), rows=10,
    member_scores={"trial-0": {"oof": 0.5, "fold_scores": [0.5, 0.5]}}, best_member="trial-0",
    beats_best_member=True, left_out={}, oof_sha256={"trial-0": "ab"}, options={})


@pytest.mark.parametrize("change, problem", [
    ({"weights": [1]}, "same, non-zero length"),
    ({"weights": [1, -1]}, "finite numbers >= 0"),
    ({"weights": [0, 0]}, "not all 0"),
    ({"option": "forest"}, "`option` is 'forest'"),
    ({"labels": None, "members": None}, "`members` and `weights`"),
    ({"label_f1": [0.5]}, "`label_f1` must be 2 F1 scores"),
    ({"label_f1": [0.5, 1.5]}, "`label_f1` must be 2 F1 scores"),
])
def test_an_ensemble_record_round_trips_and_a_damaged_one_is_refused(tmp_path, change, problem):
    path = tmp_path / "ensemble.json"
    ENSEMBLE.save(path)
    assert EnsembleRecord.load(path) == ENSEMBLE
    path.write_text(json.dumps({**ENSEMBLE.to_dict(), **change}))
    with pytest.raises(ConfigError, match="ensemble.json is damaged") as err:
        EnsembleRecord.load(path)
    assert problem in str(err.value) and "python -m search ensemble RUN_DIR" in str(err.value)


def test_an_ensemble_record_keeps_its_label_f1_and_one_written_before_it_loads(tmp_path):
    path = tmp_path / "ensemble.json"
    scored = dataclasses.replace(ENSEMBLE, label_f1=(0.25, 0.75))
    scored.save(path)
    assert json.loads(path.read_text())["label_f1"] == [0.25, 0.75] and EnsembleRecord.load(path) == scored
    older = {k: v for k, v in ENSEMBLE.to_dict().items() if k != "label_f1"}
    path.write_text(json.dumps(older))
    assert EnsembleRecord.load(path).label_f1 == ()


def test_an_ensemble_record_without_weights_is_refused(tmp_path):
    path = tmp_path / "ensemble.json"
    value = ENSEMBLE.to_dict()
    del value["weights"]
    path.write_text(json.dumps(value))
    with pytest.raises(ConfigError, match="no `weights`"):
        EnsembleRecord.load(path)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "foreign"])
def test_a_damaged_oof_file_is_refused_naming_the_fix(tmp_path, damage):
    path = tmp_path / "confirm" / "oof" / "trial-1.npz"
    write_oof(path, probs=np.full((2, 2), 0.5), fold_of=np.array([0, 1]), y=np.array([0, 1]), ids=["a", "b"])
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:50])
    elif damage == "garbage":
        path.write_bytes(b"not an npz at all")
    else:
        np.savez(path.with_suffix(""), something=np.zeros(2))
    with pytest.raises(ConfigError, match="trial-1.npz is damaged") as err:
        read_oof(path)
    assert "confirm RUN_DIR --force" in str(err.value) and str(err.value).count("To recover") == 1
