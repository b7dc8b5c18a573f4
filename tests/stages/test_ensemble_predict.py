"""`python -m search ensemble` and `python -m search predict` over a fabricated RUN_DIR: a search with one
trial checkpoint, and a confirm stage in confirm's format (2 network members x 3 folds + the linear member),
written with the real writers (save_model_dir, np.savez_compressed, linear_bytes). No Ray."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from cli import base
from cli import main as cli
from model import metrics as M
from model.config import TrialConfig
from model.data import LabelSet, fold_indices, prepare_data
from model.errors import ConfigError
from model.inference import ModelInfo, encode_texts, load_model_dir, probabilities, save_model_dir
from model.linear import fit_linear, linear_bytes, load_linear
from model.synthetic import synthesize
from model.train import fit, scored_weights
from results import ensemble as E
from results.export import run_leaderboard
from rundir.confirm import EnsembleRecord
from rundir.inputs import load_data
from rundir.paths import ConfirmFiles
from rundir.settings import Settings
from rundir.trials import TrialRecord
from spaces.space import parse_space
from stages import ensemble as S
from stages.confirm.reader import load_confirm
from stages.ensemble import run_ensemble
from stages.predict import run_predict
from tests.conftest import own_err

ROWS, FOLDS, SEQ = 600, 3, 48
SPACE = """
fixed: {hidden_size: 32, num_layers: 1, num_heads: 2, intermediate_size: 64, pooler: mean, batch_size: 16,
        swa_start: 1}
params:
  lr:   {float: [1.0e-4, 1.0e-2], log: true}
  loss: {choice: [ce, focal]}
"""
# Small enough to train in about a second an epoch, large enough to learn more than the majority label.
MODEL = dict(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, batch_size=16, max_epochs=2)
NETWORK_MEMBERS = {"trial-0": dict(lr=1e-2, pooler="mean"), "trial-1": dict(lr=5e-3, pooler="max")}
TRIAL_EPOCHS = 3
TRIAL_ID = "a1b2c3d4"


def _fit_best(cfg: TrialConfig, data) -> dict:
    best = {}

    def on_eval(evaluation):
        if evaluation.is_best:
            best.update(weights=evaluation.scored_weights(), probs=evaluation.dev_probabilities,
                        metrics=dict(evaluation.metrics), snapshot=evaluation.snapshot())

    fit(cfg, data, on_eval, device="cpu")
    return best


def _write_search(root, frame) -> dict:
    """RUN_DIR's search part: run.json, space.yaml, trials.json and one trial's best checkpoint (state.pt)
    under ray/. The record names the checkpoint by the absolute path of a launch elsewhere, as a run directory
    that was moved since would."""
    settings = Settings(synthetic_rows=ROWS, folds=FOLDS, fold=0, seed=0, max_seq_len=SEQ)
    (root / "space.yaml").write_text(SPACE, encoding="utf-8")
    run = {"name": root.name, "created": "2026-01-01T00:00:00+00:00", "settings": dataclasses.asdict(settings),
           "searched": ["lr", "loss"], "max_epochs": TRIAL_EPOCHS, "seed": 0, "fold": 0}
    (root / "run.json").write_text(json.dumps(run), encoding="utf-8")
    params = {"lr": 1e-2, "loss": "ce"}
    cfg = parse_space(SPACE).config(params, max_epochs=TRIAL_EPOCHS, seed=0)
    data = load_data(settings)
    best = _fit_best(cfg, data)
    checkpoint = root / "ray" / f"trial_{TRIAL_ID}" / "checkpoint_000001"
    checkpoint.mkdir(parents=True)
    torch.save({**best["snapshot"], "report": best["metrics"]}, checkpoint / "state.pt")
    launched_elsewhere = "/nonexistent/launch/place" / checkpoint.relative_to(root.parent)
    history = [{k: best["metrics"][k] for k in (M.EPOCH, M.LEVEL2_MACRO_F1, M.LEVEL1_MACRO_F1, M.ACCURACY,
                                                  M.DEV_LOSS)}]
    record = TrialRecord(trial_id=TRIAL_ID, optuna_number=7, params=params, status="completed", history=history,
                         checkpoint=str(launched_elsewhere))
    (root / "trials.json").write_text(json.dumps([record.to_dict()]), encoding="utf-8")
    dev_idx = fold_indices(frame["label"].tolist(), folds=FOLDS, fold=0, seed=0)[1]
    return {"best_epoch": best["metrics"][M.EPOCH], "f1": best["metrics"][M.LEVEL2_MACRO_F1], "dev_idx": dev_idx}


def _write_confirm(root, frame) -> dict:
    """RUN_DIR/confirm/ exactly in confirm's format."""
    confirm = root / "confirm"
    labels = LabelSet.from_labels(frame["label"])
    y = labels.encode(frame["label"])
    texts = frame["text"].to_numpy()
    n, c = len(frame), len(labels.level2)
    fold_of = np.empty(n, dtype=np.int16)
    oof = {name: np.zeros((n, c)) for name in [*NETWORK_MEMBERS, "linear"]}
    jobs = {}
    for f in range(FOLDS):
        train_idx, dev_idx = fold_indices(frame["label"].tolist(), folds=FOLDS, fold=f, seed=0)
        fold_of[dev_idx] = f
        data = prepare_data(frame, folds=FOLDS, fold=f, seed=0, max_seq_len=SEQ)
        for name, overrides in NETWORK_MEMBERS.items():
            cfg = TrialConfig(**MODEL, seed=0, **overrides)
            best = _fit_best(cfg, data)
            model_dir = f"models/{name}/fold{f}-seed0"
            save_model_dir(confirm / model_dir, weights=best["weights"],
                           info=ModelInfo(config=cfg, vocab=data.vocab, max_seq_len=SEQ, labels=data.labels))
            oof[name][dev_idx] = best["probs"]
            jobs[f"{name}/fold{f}/seed0"] = {
                "member": name, "fold": f, "seed": 0, "status": "completed",
                "level2_macro_f1": best["metrics"][M.LEVEL2_MACRO_F1], "level1_macro_f1": 0.0, "accuracy": 0.0,
                "best_epoch": 1, "time_s": 1.0, "model_dir": model_dir, "error": None}
        linear = fit_linear(texts[train_idx], y[train_idx], num_labels=c, seed=0)
        (confirm / f"models/linear/fold{f}").mkdir(parents=True)
        (confirm / f"models/linear/fold{f}/linear.npz").write_bytes(linear_bytes(linear))
        oof["linear"][dev_idx] = linear.predict_proba(texts[dev_idx])
        score = E.macro_f1(y[dev_idx], linear.predict(texts[dev_idx]), num_labels=c)
        jobs[f"linear/fold{f}/seed0"] = {
            "member": "linear", "fold": f, "seed": 0, "status": "completed", "level2_macro_f1": score,
            "level1_macro_f1": 0.0, "accuracy": 0.0, "best_epoch": None, "time_s": 1.0,
            "model_dir": f"models/linear/fold{f}", "error": None}
    (confirm / "oof").mkdir()
    for name, probs in oof.items():
        np.savez_compressed(confirm / "oof" / f"{name}.npz", probs=probs.astype(np.float16), fold_of=fold_of,
                            y=y, ids=np.asarray(frame["id"].astype(str), dtype=str))
    means = {name: np.mean([j["level2_macro_f1"] for j in jobs.values() if j["member"] == name]) for name in oof}
    ranked = sorted(means, key=lambda name: -means[name])
    # confirm.json lists the network members in the order opposite to their confirmed rank (as the search's
    # leaderboard may), so the tests see which order the commands follow.
    networks = [name for name in ranked if name != "linear"][::-1]
    members = [{"name": name, "kind": "network", "source_trial": f"t{name}", "optuna_number": int(name[-1]),
                "leaderboard_rank": i + 1, "params": NETWORK_MEMBERS[name]} for i, name in enumerate(networks)]
    members.append({"name": "linear", "kind": "linear", "params": {"C": 0.5}})
    record = {"top": 2, "folds": FOLDS, "seeds": 1, "split_seed": 0, "max_epochs": MODEL["max_epochs"],
              "created": "now",
              "command": "python -m search confirm RUN_DIR",
              "settings": {"data": None, "synthetic": True, "synthetic_rows": ROWS, "synthetic_seed": 0,
                           "max_seq_len": SEQ},
              "labels": list(labels.level2), "rows": n, "members": members}
    (confirm / "confirm.json").write_text(json.dumps(record), encoding="utf-8")
    (confirm / "jobs.json").write_text(json.dumps(jobs), encoding="utf-8")
    pd.DataFrame({"rank": range(1, len(ranked) + 1), "member": ranked,
                  "kind": ["linear" if m == "linear" else "network" for m in ranked],
                  "level2_mean": [means[m] for m in ranked], "level2_std": 0.0,
                  "status": "completed"}).to_csv(confirm / "confirm.csv", index=False)
    return {"ranked": ranked, "confirm_json_order": [m["name"] for m in members], "labels": labels.level2}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A RUN_DIR with a search and a finished confirm stage, built once; tests work on copies (`run_dir`)."""
    torch.set_num_threads(2)
    root = tmp_path_factory.mktemp("runs") / "demo"
    root.mkdir()
    frame = synthesize(ROWS, seed=0)[0]
    search = _write_search(root, frame)
    confirm = _write_confirm(root, frame)
    return {"root": root, "frame": frame, **search, **confirm}


@pytest.fixture
def run_dir(built, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(built["root"], copy)
    return copy


def _oof(run_dir, members):
    files = ConfirmFiles.of(run_dir)
    arrays = [np.load(files.oof(m)) for m in members]
    return [a["probs"].astype(np.float64) for a in arrays], arrays[0]["y"], arrays[0]["fold_of"].astype(np.int64)


def _test_file(tmp_path, frame, *, labeled: bool, name="test.csv"):
    out = frame[["id", "text"] + (["label"] if labeled else [])].copy()
    path = tmp_path / name
    out.to_csv(path, index=False)
    return path


def _main(argv):
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    return exit_.value.code


# ----------------------------------------------------------------------------- ensemble


def test_ensemble_writes_the_greedy_choice_and_its_nested_score(run_dir, built, capsys):
    cli.main(["ensemble", str(run_dir), "--max-members", "6", "--method", "greedy"])
    printed = capsys.readouterr().out
    record = EnsembleRecord.load(run_dir / "confirm" / "ensemble.json")
    probs, y, fold_of = _oof(run_dir, built["ranked"])
    expected = E.build_ensemble(probs, y, fold_of, members=built["ranked"], method="prob", selection="greedy",
                                max_members=6)
    nested = E.nested_score(probs, y, fold_of, method="prob", selection="greedy", max_members=6)
    assert list(record.members) == built["ranked"]  # confirm.csv's rank order, not confirm.json's
    assert built["ranked"] != built["confirm_json_order"]
    assert record.weights == expected.weights and sum(record.weights) >= 1
    assert (record.option, record.method, record.selection, record.max_members) == (
        "greedy", "prob", "greedy", 6)
    assert record.nested_score == nested.score and record.oof_score == expected.oof_score
    assert record.fold_weights == nested.fold_weights
    assert E.EnsembleResult.from_dict(record.to_dict()).weights == expected.weights  # as predict reads it back
    # the table: every member and every option, with the in-sample and nested scores
    for name in built["ranked"]:
        member_f1 = E.macro_f1(y, probs[built["ranked"].index(name)].argmax(1), num_labels=len(built["labels"]))
        assert record.member_scores[name]["oof"] == member_f1
        assert any(name in line and f"{member_f1:.4f}" in line for line in printed.splitlines())
    for option in ("greedy", "prob", "rank", "vote"):
        result = record.options[option]
        (line,) = [line for line in printed.splitlines() if re.match(rf"^\*?\s+ensemble {option}\s", line)]
        assert f"{result['oof_score']:.4f}" in line and f"{result['nested_score']:.4f}" in line
    assert f"wrote {run_dir / 'confirm' / 'ensemble.json'}" in printed


def test_by_default_the_option_with_the_best_nested_score_is_chosen(run_dir, built, capsys):
    cli.main(["ensemble", str(run_dir), "--max-members", "6"])
    record = EnsembleRecord.load(run_dir / "confirm" / "ensemble.json")
    nested = {option: result["nested_score"] for option, result in record.options.items()}
    assert record.option == max(nested, key=nested.get) and record.nested_score == max(nested.values())
    assert "(the best nested score of the options; --method picks one)" in capsys.readouterr().out
    options = {option: E.EnsembleResult.from_dict(result) for option, result in record.options.items()}
    tied = {option: dataclasses.replace(result, nested_score=0.5) for option, result in options.items()}
    assert S.best_option(tied) == "greedy"  # a tie: the first option
    assert S.best_option({**tied, "vote": dataclasses.replace(tied["vote"], nested_score=0.6)}) == "vote"


def test_vote_follows_the_confirmed_rank_on_ties(run_dir, built):
    record = run_ensemble(run_dir, method="vote", out=lambda line: None)
    probs, y, fold_of = _oof(run_dir, built["ranked"])
    by_rank = E.predict(probs, method="vote")
    by_confirm_json = E.predict([probs[built["ranked"].index(m)] for m in built["confirm_json_order"]],
                                method="vote")
    assert (by_rank != by_confirm_json).any()  # ties do happen here, so the order matters
    assert list(record.members) == built["ranked"] and record.weights == (1, 1, 1)
    assert record.oof_score == E.macro_f1(y, by_rank, num_labels=len(built["labels"]))
    assert record.oof_score == record.nested_score  # equal weights: nothing is selected


def _fake_confirm(root, probs: list[np.ndarray], y: np.ndarray, *, names=None, statuses=None):
    """A confirm stage of OOF files only (enough for `ensemble`), members ranked in list order."""
    names = names or [f"trial-{i}" for i in range(len(probs))]
    confirm = root / "confirm"
    (confirm / "oof").mkdir(parents=True)
    n, c = probs[0].shape
    fold_of = (np.arange(n) % 2).astype(np.int16)
    jobs = {}
    for name, p in zip(names, probs, strict=True):
        np.savez_compressed(confirm / "oof" / f"{name}.npz", probs=p.astype(np.float16), fold_of=fold_of, y=y,
                            ids=np.arange(n).astype(str))
        for f in range(2):
            status = (statuses or {}).get(f"{name}/fold{f}/seed0", "completed")
            jobs[f"{name}/fold{f}/seed0"] = {"member": name, "fold": f, "seed": 0, "status": status,
                                             "level2_macro_f1": 0.5, "model_dir": f"models/{name}/fold{f}-seed0",
                                             "error": "boom" if status == "error" else None}
    record = {"folds": 2, "seeds": 1, "labels": [f"1-{k}" for k in range(c)], "rows": n,
              "members": [{"name": m, "kind": "network", "params": {}} for m in names]}
    (confirm / "confirm.json").write_text(json.dumps(record))
    (confirm / "jobs.json").write_text(json.dumps(jobs))
    pd.DataFrame({"rank": range(1, len(names) + 1), "member": names}).to_csv(confirm / "confirm.csv", index=False)
    return root


def _one_hot(labels, c, second=None):
    p = np.full((len(labels), c), 0.0)
    p[np.arange(len(labels)), labels] = 0.6
    if second is not None:
        p[np.arange(len(labels)), second] += 0.4
    else:
        p += 0.4 / c
    return p


def test_the_printout_warns_when_the_ensemble_does_not_beat_the_best_member(tmp_path):
    rng = np.random.default_rng(0)
    y = np.tile(np.arange(4), 10)
    perfect = _one_hot(y, 4)
    noise = [_one_hot(rng.integers(0, 4, len(y)), 4) for _ in range(2)]
    lines = []
    run_ensemble(_fake_confirm(tmp_path, [*noise, perfect], y), method="prob", out=lines.append)
    (warning,) = [line for line in lines if line.startswith("warning:")]
    assert "does not beat the best single member, trial-2 (OOF 1.0000)" in warning
    assert "--use confirmed:trial-2" in warning


def test_no_warning_when_the_ensemble_beats_every_member(tmp_path):
    # each member is wrong on a different third of the rows, with the true label its second choice
    y = np.tile(np.arange(3), 12)
    members = []
    for k in range(3):
        wrong = (np.arange(len(y)) % 3) == k
        top = np.where(wrong, (y + 1) % 3, y)
        members.append(_one_hot(top, 3, second=np.where(wrong, y, (y + 2) % 3)))
    lines = []
    record = run_ensemble(_fake_confirm(tmp_path, members, y), method="prob", out=lines.append)
    assert record.nested_score == 1.0 and max(s["oof"] for s in record.member_scores.values()) < 1.0
    assert record.beats_best_member and not any(line.startswith("warning:") for line in lines)


def test_the_summary_names_the_labels_the_ensemble_loses(tmp_path):
    # 4 labels: every member predicts label 3 as label 2, so the ensemble never gets 3 right
    y = np.tile(np.arange(4), 10)
    top = np.where(y == 3, 2, y)
    lines = []
    record = run_ensemble(_fake_confirm(tmp_path, [_one_hot(top, 4), _one_hot(top, 4)], y), method="prob",
                          out=lines.append)
    expected = E.label_f1(y, top, num_labels=4)
    assert record.label_f1 == pytest.approx(expected) and expected[3] == 0 and expected[0] == 1
    assert np.mean(record.label_f1) == pytest.approx(record.nested_score)
    assert EnsembleRecord.load(tmp_path / "confirm" / "ensemble.json").label_f1 == record.label_f1
    (line,) = [line for line in lines if line.startswith("weakest labels")]
    assert line == (f"weakest labels (nested F1, rows): 1-3 0.00 (10), 1-2 {expected[2]:.2f} (10), 1-0 1.00 (10), "
                    "1-1 1.00 (10); 1 of 4 labels at F1 0")


def test_a_failed_member_is_left_out_with_a_note(tmp_path):
    y = np.tile(np.arange(3), 4)
    root = _fake_confirm(tmp_path, [_one_hot(y, 3), _one_hot(y, 3)], y,
                         statuses={"trial-1/fold1/seed0": "error"})
    lines = []
    record = run_ensemble(root, out=lines.append)
    assert record.members == ("trial-0",)
    assert "note: leaving out trial-1: 1 job(s) ended in error (trial-1/fold1/seed0: boom)" in lines


@pytest.mark.parametrize("change, message", [
    ("no-confirm", "has no confirm stage .*run `python -m search confirm .*` first"),
    ("running", r"has not finished \(trial-1: 1 of 2 jobs completed \(1 running\)\): resume it with "
                r"`python -m search resume "),
    ("missing-job", r"trial-1: 1 of 2 jobs completed \(0 running\)"),
    ("no-csv", r"has not finished \(confirm.csv is not written yet\)"),
    ("no-oof", r"all 2 jobs completed but .*trial-0.npz is missing"),
    ("other-y", r"trial-1.npz is damaged \(`y` differs from the one in .*trial-0.npz"),
])
def test_ensemble_refuses_a_missing_or_partial_confirm_with_exit_2(tmp_path, capsys, change, message):
    y = np.tile(np.arange(3), 4)
    root = _fake_confirm(tmp_path, [_one_hot(y, 3), _one_hot(y, 3)], y)
    confirm = root / "confirm"
    if change == "no-confirm":
        shutil.rmtree(confirm)
    elif change in ("running", "missing-job"):
        jobs = json.loads((confirm / "jobs.json").read_text())
        if change == "running":
            jobs["trial-1/fold0/seed0"]["status"] = "running"
        else:
            del jobs["trial-1/fold0/seed0"]
        (confirm / "jobs.json").write_text(json.dumps(jobs))
    elif change == "no-csv":
        (confirm / "confirm.csv").unlink()
    elif change == "no-oof":
        (confirm / "oof" / "trial-0.npz").unlink()
    else:
        np.savez_compressed(confirm / "oof" / "trial-1.npz", probs=_one_hot(y, 3).astype(np.float16),
                            fold_of=(np.arange(len(y)) % 2).astype(np.int16), y=y[::-1].copy(),
                            ids=np.arange(len(y)).astype(str))
    assert _main(["ensemble", str(root)]) == base.EXIT_USAGE
    err = own_err(capsys)
    assert err.startswith("error: ")
    assert re.search(message, err), err
    assert not (confirm / "ensemble.json").exists()


# ----------------------------------------------------------------------------- predict


@pytest.fixture(scope="module")
def test_rows(built):
    """Unlabeled test rows in a shuffled id order, plus a row made only of tokens never seen in training."""
    test = synthesize(ROWS, seed=0)[1].sample(frac=1.0, random_state=1).head(60)
    odd = pd.DataFrame({"id": ["unseen"], "text": ["987654 876543 765432"]})
    return pd.concat([test.astype({"id": str}), odd], ignore_index=True)


def _predict(run_dir, tmp_path, rows, *, use=None, probs=None, labeled=False):
    path = _test_file(tmp_path, rows, labeled=labeled)
    out = tmp_path / "submission.csv"
    lines = []
    result = run_predict(run_dir, data=path, out_path=out, use=use, probs_path=probs, batch_size=16, device="cpu",
                         progress=False, out=lines.append)
    return pd.read_csv(out, dtype=str), lines, result


@pytest.mark.parametrize("use, used", [
    ("ensemble", "using ensemble greedy (greedy selection with replacement, probability mean) of "),
    ("confirmed:trial-0", "using confirmed member trial-0 (network): mean of 3 fold models (3 folds x 1 seed)"),
    ("confirmed:linear", "using confirmed member linear (linear): mean of 3 fold models (3 folds x 1 seed)"),
    (f"trial:{TRIAL_ID}", f"using trial {TRIAL_ID} (Optuna #7, leaderboard rank 1, completed): its best checkpoint"),
    ("trial:7", f"using trial {TRIAL_ID} (Optuna #7"),
])
def test_predict_writes_one_valid_label_per_input_row_in_input_order(run_dir, built, test_rows, tmp_path, use,
                                                                     used):
    if use == "ensemble":
        run_ensemble(run_dir, method="greedy", max_members=6, out=lambda line: None)
    submission, lines, result = _predict(run_dir, tmp_path, test_rows, use=use)
    assert list(submission.columns) == ["id", "label"]
    assert submission["id"].tolist() == test_rows["id"].astype(str).tolist()
    assert submission["label"].isin(built["labels"]).all()
    assert any(line.startswith(used) for line in lines), lines
    assert result["rows"] == len(test_rows) and "level2_macro_f1" not in result


def test_the_default_is_the_ensemble_then_the_best_confirmed_member_then_the_best_trial(run_dir, built, test_rows,
                                                                                        tmp_path):
    _, lines, _ = _predict(run_dir, tmp_path, test_rows)
    best = built["ranked"][0]
    kind = "linear" if best == "linear" else "network"
    assert lines[0].startswith(f"using confirmed member {best} ({kind}, rank 1 of confirm.csv): mean of 3 fold")
    run_ensemble(run_dir, method="greedy", out=lambda line: None)
    assert _predict(run_dir, tmp_path, test_rows)[1][0].startswith("using ensemble greedy")
    shutil.rmtree(run_dir / "confirm")
    assert _predict(run_dir, tmp_path, test_rows)[1][0].startswith(f"using trial {TRIAL_ID} (Optuna #7, leaderboard "
                                                                    "rank 1")


def test_the_ensemble_combines_each_members_mean_over_its_fold_models(run_dir, built, test_rows, tmp_path):
    record = run_ensemble(run_dir, method="rank", out=lambda line: None)
    submission, _, _ = _predict(run_dir, tmp_path, test_rows, use="ensemble", probs=tmp_path / "scores.npy")
    texts = test_rows["text"].tolist()
    per_member = []
    for name in record.members:
        folds = []
        for f in range(FOLDS):
            if name == "linear":
                folds.append(load_linear(run_dir / f"confirm/models/linear/fold{f}/linear.npz").predict_proba(texts))
            else:
                model, info = load_model_dir(run_dir / f"confirm/models/{name}/fold{f}-seed0")
                folds.append(probabilities(model, encode_texts(texts, info.vocab, max_seq_len=info.max_seq_len),
                                           batch_size=64, device=torch.device("cpu")))
        per_member.append(np.mean(folds, axis=0))
    expected = E.predict(per_member, record.weights, "rank")
    assert submission["label"].tolist() == [built["labels"][i] for i in expected]
    np.testing.assert_allclose(np.load(tmp_path / "scores.npy"), E.combine(per_member, record.weights, "rank"),
                               rtol=1e-4)


def test_trial_on_its_own_dev_rows_reproduces_the_leaderboard_score(run_dir, built, tmp_path, capsys):
    row = run_leaderboard(run_dir).iloc[0]
    assert row["trial_id"] == TRIAL_ID and row[M.LEVEL2_MACRO_F1] == built["f1"]
    # the scored weights are the SWA average of epochs 1 to best, not the live ones
    assert built["best_epoch"] >= 2 and built["f1"] > 0.05
    dev = built["frame"].iloc[built["dev_idx"]].sample(frac=1.0, random_state=3)  # any row order
    path = _test_file(tmp_path, dev, labeled=True)
    cli.main(["predict", str(run_dir), "--data", str(path), "--out", str(tmp_path / "s.csv"), "--use",
              f"trial:{TRIAL_ID}", "--no-progress", "--device", "cpu", "--batch-size", "7"])
    printed = capsys.readouterr().out
    f1 = [line for line in printed.splitlines() if line.startswith("labels in ")]
    assert f1 == [f"labels in {path}: level-2 macro-F1 {built['f1']:.4f}, accuracy "
                  + f1[0].split("accuracy ")[1]]
    result = run_predict(run_dir, data=path, out_path=tmp_path / "s.csv", use="trial:7", batch_size=64, progress=False,
                         device="cpu", out=lambda line: None)
    assert result["level2_macro_f1"] == built["f1"]  # exactly the leaderboard row's score


def test_scored_weights_are_the_swa_average_when_it_holds_any():
    live, avg = {"w": torch.zeros(2)}, {"module.w": torch.ones(2), "n_averaged": torch.tensor(2)}
    assert scored_weights({"model": live, "swa": avg})["w"].tolist() == [1.0, 1.0]
    assert scored_weights({"model": live, "swa": {**avg, "n_averaged": torch.tensor(0)}}) is live
    assert scored_weights({"model": live, "swa": None}) is live


def test_unseen_tokens_become_unk(run_dir, built, tmp_path):
    known = " ".join(built["frame"]["text"].iloc[0].split()[:3])
    rows = pd.DataFrame({"id": ["a", "b", "c"], "text": ["987654 876543 765432", "[UNK] [UNK] [UNK]", known]})
    submission, _, _ = _predict(run_dir, tmp_path, rows, use="confirmed:trial-0", probs=tmp_path / "p.npy")
    scores = np.load(tmp_path / "p.npy")
    assert scores.shape == (3, 35) and scores.dtype == np.float32
    # unseen tokens encode exactly as [UNK] (equal up to float rounding of their place in the batch) ...
    np.testing.assert_allclose(scores[0], scores[1], rtol=1e-6, atol=1e-8)
    assert np.abs(scores[0] - scores[2]).max() > 1e-4  # ... unlike known tokens
    assert submission["label"].iloc[0] == submission["label"].iloc[1]


def test_probs_csv_has_an_id_and_one_column_per_label(run_dir, built, test_rows, tmp_path):
    submission, _, _ = _predict(run_dir, tmp_path, test_rows, use="confirmed:linear", probs=tmp_path / "p.csv")
    probs = pd.read_csv(tmp_path / "p.csv", dtype={"id": str})
    assert list(probs.columns) == ["id", *built["labels"]]
    assert probs["id"].tolist() == submission["id"].tolist()
    np.testing.assert_allclose(probs[list(built["labels"])].sum(axis=1), 1.0, atol=1e-4)
    assert (probs[list(built["labels"])].to_numpy().argmax(1) == [built["labels"].index(x)
                                                                  for x in submission["label"]]).all()


def test_probs_npz_holds_the_probabilities_ids_and_labels(run_dir, built, test_rows, tmp_path):
    submission, _, _ = _predict(run_dir, tmp_path, test_rows, use="confirmed:linear", probs=tmp_path / "p.npz")
    with np.load(tmp_path / "p.npz") as saved:
        assert saved["probs"].dtype == np.float32 and saved["probs"].shape == (len(test_rows), len(built["labels"]))
        assert saved["ids"].tolist() == submission["id"].tolist()
        assert saved["labels"].tolist() == list(built["labels"])
        assert (saved["probs"].argmax(1) == [built["labels"].index(x) for x in submission["label"]]).all()


def test_a_label_column_is_scored_but_not_used(run_dir, built, tmp_path):
    rows = built["frame"].head(40).copy()
    labeled, lines, result = _predict(run_dir, tmp_path, rows, use="confirmed:trial-1", labeled=True)
    unlabeled, _, _ = _predict(run_dir, tmp_path, rows, use="confirmed:trial-1")
    assert labeled.equals(unlabeled)
    y = LabelSet.from_labels(built["labels"]).encode(rows["label"])
    pred = LabelSet.from_labels(built["labels"]).encode(labeled["label"])
    assert result["level2_macro_f1"] == E.macro_f1(y, pred, num_labels=35)
    rows.loc[rows.index[0], "label"] = "99-99"  # a label the models never saw counts as an error
    _, lines, result = _predict(run_dir, tmp_path, rows, use="confirmed:trial-1", labeled=True)
    assert any("(1 with labels the models do not know)" in line for line in lines)
    rows.loc[rows.index[1], "label"] = "not-a-label-at-all"
    submission, lines, result = _predict(run_dir, tmp_path, rows, use="confirmed:trial-1", labeled=True)
    assert len(submission) == 40 and "level2_macro_f1" not in result
    assert any(line.startswith("note: ") and "its label column is not scored" in line for line in lines)


@pytest.mark.parametrize("case, message", [
    ("no-file", r"missing.csv: file not found"),
    ("bad-use", r"--use 'best' is not one of: ensemble, confirmed:NAME, trial:ID"),
    ("no-ensemble", r"ensemble.json does not exist: run `python -m search ensemble .*` first"),
    ("no-member", r"--use confirmed:trial-9: 'trial-9' is not a member of .*confirm.json; pass one of: "),
    ("partial-member", r"confirmed member trial-0 is not complete \(2 of 3 jobs completed \(1 running\)\): resume "
                       r"confirm with `python -m search resume "),
    ("no-trial", r"--use trial:zzz: no trial of .* has that trial id or Optuna number"),
    ("no-checkpoint", r"the trial's checkpoint .*state.pt does not exist"),
    ("no-run", r"is not a run directory \(no run.json\)"),
])
def test_predict_bad_input_exits_2_naming_the_fix(run_dir, test_rows, tmp_path, capsys, case, message):
    path = _test_file(tmp_path, test_rows, labeled=False)
    use = {"bad-use": "best", "no-ensemble": "ensemble", "no-member": "confirmed:trial-9",
           "partial-member": "confirmed:trial-0", "no-trial": "trial:zzz", "no-checkpoint": "trial:7"}.get(case)
    if case == "no-file":
        path = tmp_path / "missing.csv"
    if case == "partial-member":
        jobs = json.loads((run_dir / "confirm/jobs.json").read_text())
        jobs["trial-0/fold2/seed0"]["status"] = "running"
        (run_dir / "confirm/jobs.json").write_text(json.dumps(jobs))
    if case == "no-checkpoint":
        shutil.rmtree(run_dir / "ray")
    if case == "no-run":
        shutil.rmtree(run_dir / "confirm")
        (run_dir / "run.json").unlink()
    out = tmp_path / "submission.csv"
    argv = ["predict", str(run_dir), "--data", str(path), "--out", str(out), "--no-progress"]
    assert _main(argv + (["--use", use] if use else [])) == base.EXIT_USAGE
    err = own_err(capsys)
    assert err.startswith("error: ") and re.search(message, err), err
    assert not out.exists()


def test_confirm_reader_ranks_by_confirm_csv(run_dir, built):
    run = load_confirm(run_dir)
    assert run.rank_order() == built["ranked"]
    assert [m.name for m in run.members] == built["confirm_json_order"]
    assert run.complete_members() == (built["ranked"], {})


def test_an_ensemble_chosen_on_oof_files_that_changed_since_is_refused(run_dir, built, test_rows, tmp_path):
    record = run_ensemble(run_dir, out=lambda line: None)
    files = ConfirmFiles.of(run_dir)
    assert set(record.oof_sha256) == set(record.members)
    member = next(m for m, w in zip(record.members, record.weights, strict=True) if w > 0)
    arrays = dict(np.load(files.oof(member)))
    arrays["probs"] = arrays["probs"][::-1].copy()  # as if `confirm --force` had retrained the member
    np.savez(files.oof(member), **arrays)
    with pytest.raises(ConfigError, match=rf"out-of-fold predictions that changed since \(of {member}: .*rerun "
                                          r"`python -m search ensemble"):
        _predict(run_dir, tmp_path, test_rows, use="ensemble")
