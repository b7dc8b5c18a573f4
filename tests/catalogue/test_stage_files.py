"""Damaged files of the stages after the search (issue 26, item 2): every file `confirm` and `ensemble`
write, damaged, against every command that reads it, is refused with exit status 2, one error line
that names the file, what is wrong and the command that rebuilds it, and nothing changed on disk.

Every case damages a private copy (`confirmed_copy`) of one real run after `confirm --top 1 --folds 2`
and `ensemble` (`confirmed_run`): its members are `trial-0` (a network) and `linear`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.catalogue.test_run_files import deleted, edited_json, emptied, garbage, invalid_json, truncated

FORCE = "confirm RUN_DIR --force"
ENSEMBLE = "python -m search ensemble RUN_DIR"
NETWORK_DIR = "confirm/models/trial-0/fold0-seed0"
LINEAR_DIR = "confirm/models/linear/fold0"


def csv_without_rank(path: Path) -> None:
    lines = path.read_text().splitlines()
    header = lines[0].split(",")
    keep = [i for i, name in enumerate(header) if name != "rank"]
    path.write_text("\n".join(",".join(row.split(",")[i] for i in keep) for row in lines) + "\n")


def csv_rank_not_numbers(path: Path) -> None:
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], *(("first" + line[line.index(","):]) for line in lines[1:])]) + "\n")


def npz_without_probs(path: Path) -> None:
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files if k != "probs"}
    with path.open("wb") as handle:
        np.savez(handle, **arrays)


def npz_probs_of_another_shape(path: Path) -> None:
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["probs"] = arrays["probs"][:, :3]
    with path.open("wb") as handle:
        np.savez(handle, **arrays)


def npz_probs_nan(path: Path) -> None:
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["probs"] = np.full_like(arrays["probs"], np.nan)
    with path.open("wb") as handle:
        np.savez(handle, **arrays)


def first_job(change: Callable[[dict], object]) -> Callable[[dict], dict]:
    def edit(jobs: dict) -> dict:
        key = sorted(jobs)[0]
        return {**jobs, key: change(jobs[key])}
    edit.__name__ = f"first_job_{change.__name__}"
    return edit


def not_an_object(job: dict) -> object:
    return ["trial-0", 0, 0]


def without_member(job: dict) -> dict:
    return {k: v for k, v in job.items() if k != "member"}


def fold_not_a_number(job: dict) -> dict:
    return {**job, "fold": "zero"}


def status_unknown(job: dict) -> dict:
    return {**job, "status": "done"}


def score_a_string(job: dict) -> dict:
    return {**job, "level2_macro_f1": "high"}


def jobs_as_list(jobs: dict) -> list:
    return list(jobs.values())


def without(*keys: str) -> Callable[[dict], dict]:
    def edit(value: dict) -> dict:
        return {k: v for k, v in value.items() if k not in keys}
    edit.__name__ = f"without_{'_'.join(keys)}"
    return edit


def with_value(key: str, value: object) -> Callable[[dict], dict]:
    def edit(record: dict) -> dict:
        return {**record, key: value}
    edit.__name__ = f"{key}_{json.dumps(value).replace(' ', '')}"
    return edit


def weights_longer(record: dict) -> dict:
    return {**record, "weights": [*record["weights"], 1]}


def negative_weight(record: dict) -> dict:
    return {**record, "weights": [-1, *record["weights"][1:]]}


def member_unknown(record: dict) -> dict:
    return {**record, "members": ["trial-99", *record["members"][1:]]}


def spec_member_without_name(spec: dict) -> dict:
    return {**spec, "members": [{k: v for k, v in m.items() if k != "name"} for m in spec["members"]]}


def model_json_without_vocab(meta: dict) -> dict:
    return {k: v for k, v in meta.items() if k != "vocab"}


def model_json_bad_config(meta: dict) -> dict:
    return {**meta, "config": {**meta["config"], "pooler": "nonsense"}}


def foreign_weights(path: Path) -> None:
    import torch

    torch.save({"something.else": torch.zeros(3)}, path)


def a_directory_instead(path: Path) -> None:
    path.unlink()
    path.mkdir()


def as_list_value(value: object) -> list:
    return [value]


def a_pickle_of_something_else(path: Path) -> None:
    import joblib

    joblib.dump({"not": "a linear member"}, path)


# (file relative to RUN_DIR, damage, command, needles beyond the file's name, "is damaged" and "nothing was changed")
CASES = [
    # confirm.csv: ensemble, predict, report, confirm again
    ("confirm/confirm.csv", garbage, "ensemble", ["no column", FORCE]),
    ("confirm/confirm.csv", emptied, "ensemble", ["not a CSV table", FORCE]),
    ("confirm/confirm.csv", csv_without_rank, "ensemble", ["no column rank", FORCE]),
    ("confirm/confirm.csv", csv_rank_not_numbers, "ensemble", ["not numbers", FORCE]),
    ("confirm/confirm.csv", garbage, "predict-default", ["no column", FORCE]),
    ("confirm/confirm.csv", emptied, "predict-member", ["not a CSV table", FORCE]),
    ("confirm/confirm.csv", emptied, "report", ["not a CSV table", FORCE]),
    ("confirm/confirm.csv", csv_without_rank, "report", ["no column rank", FORCE]),
    ("confirm/confirm.csv", garbage, "confirm", ["no column", FORCE]),
    ("confirm/confirm.csv", emptied, "confirm", ["not a CSV table", FORCE]),
    ("confirm/confirm.csv", csv_without_rank, "confirm", ["no column rank", FORCE]),
    # jobs.json: ensemble, predict, status, confirm again, resume
    ("confirm/jobs.json", edited_json(first_job(not_an_object)), "ensemble", ["is not an object", FORCE]),
    ("confirm/jobs.json", edited_json(first_job(without_member)), "ensemble", ["has no `member`", FORCE]),
    ("confirm/jobs.json", edited_json(first_job(fold_not_a_number)), "ensemble", ["`fold` and `seed` counts", FORCE]),
    ("confirm/jobs.json", edited_json(first_job(status_unknown)), "ensemble", ["status 'done'", FORCE]),
    ("confirm/jobs.json", edited_json(first_job(score_a_string)), "ensemble", ["not a finite number", FORCE]),
    ("confirm/jobs.json", edited_json(jobs_as_list), "ensemble", ["where an object belongs", FORCE]),
    ("confirm/jobs.json", truncated, "ensemble", ["not valid JSON", FORCE]),
    ("confirm/jobs.json", edited_json(first_job(without_member)), "predict-member", ["has no `member`", FORCE]),
    ("confirm/jobs.json", invalid_json, "predict-ensemble", ["not valid JSON", FORCE]),
    ("confirm/jobs.json", edited_json(first_job(not_an_object)), "status", ["is not an object", FORCE]),
    ("confirm/jobs.json", edited_json(first_job(fold_not_a_number)), "status", ["`fold` and `seed` counts", FORCE]),
    ("confirm/jobs.json", invalid_json, "confirm", ["not valid JSON", FORCE]),
    ("confirm/jobs.json", edited_json(first_job(without_member)), "resume", ["has no `member`", FORCE]),
    ("confirm/jobs.json", emptied, "resume", ["not valid JSON", FORCE]),
    # confirm.json: ensemble, predict, status, report, confirm again, resume
    ("confirm/confirm.json", edited_json(without("folds")), "ensemble", ["no `folds`", FORCE]),
    ("confirm/confirm.json", edited_json(without("members")), "ensemble", ["no `members`", FORCE]),
    ("confirm/confirm.json", edited_json(with_value("folds", "two")), "ensemble", ["`folds` is 'two'", FORCE]),
    ("confirm/confirm.json", edited_json(with_value("labels", [])), "ensemble", ["`labels`", FORCE]),
    ("confirm/confirm.json", edited_json(spec_member_without_name), "ensemble", ["with a `name`", FORCE]),
    ("confirm/confirm.json", edited_json(without("folds")), "predict-member", ["no `folds`", FORCE]),
    ("confirm/confirm.json", truncated, "predict-ensemble", ["not valid JSON", FORCE]),
    ("confirm/confirm.json", edited_json(without("folds")), "status", ["no `folds`", FORCE]),
    ("confirm/confirm.json", emptied, "status", ["not valid JSON", FORCE]),
    ("confirm/confirm.json", edited_json(without("folds")), "confirm", ["no `folds`", FORCE]),
    ("confirm/confirm.json", invalid_json, "resume", ["not valid JSON", FORCE]),
    ("confirm/confirm.json", edited_json(with_value("seeds", 0)), "resume", ["`seeds` is 0", FORCE]),
    # ensemble.json: predict, report
    ("confirm/ensemble.json", edited_json(without("weights")), "predict-ensemble", ["no `weights`", ENSEMBLE]),
    ("confirm/ensemble.json", edited_json(weights_longer), "predict-ensemble", ["same, non-zero length", ENSEMBLE]),
    ("confirm/ensemble.json", edited_json(negative_weight), "predict-ensemble", ["finite numbers >= 0", ENSEMBLE]),
    ("confirm/ensemble.json", edited_json(with_value("weights", [0, 0])), "predict-ensemble", ["not all 0", ENSEMBLE]),
    ("confirm/ensemble.json", edited_json(with_value("option", "best")), "predict-ensemble", ["`option`", ENSEMBLE]),
    ("confirm/ensemble.json", edited_json(member_unknown), "predict-ensemble", ["trial-99", ENSEMBLE]),
    ("confirm/ensemble.json", edited_json(with_value("method", "median")), "predict-ensemble", ["`method`", ENSEMBLE]),
    ("confirm/ensemble.json", edited_json(with_value("labels", ["1-1"])), "predict-ensemble", ["labels", ENSEMBLE]),
    ("confirm/ensemble.json", truncated, "predict-default", ["not valid JSON", ENSEMBLE]),
    ("confirm/ensemble.json", edited_json(without("weights")), "report", ["no `weights`", ENSEMBLE]),
    ("confirm/ensemble.json", edited_json(negative_weight), "report", ["finite numbers >= 0", ENSEMBLE]),
    ("confirm/ensemble.json", garbage, "report", ["not valid JSON", ENSEMBLE]),
    # oof/<member>.npz: ensemble
    ("confirm/oof/linear.npz", truncated, "ensemble", ["not a readable npz file", FORCE]),
    ("confirm/oof/linear.npz", garbage, "ensemble", ["not a readable npz file", FORCE]),
    ("confirm/oof/linear.npz", emptied, "ensemble", ["not a readable npz file", FORCE]),
    ("confirm/oof/trial-0.npz", npz_without_probs, "ensemble", ["no array probs", FORCE]),
    ("confirm/oof/trial-0.npz", npz_probs_of_another_shape, "ensemble", ["probs has shape", FORCE]),
    ("confirm/oof/trial-0.npz", npz_probs_nan, "ensemble", ["NaN", FORCE]),
    ("confirm/oof/trial-0.npz", a_directory_instead, "ensemble", ["not a file", FORCE]),
    # a fold model: predict
    (f"{NETWORK_DIR}/model.pt", truncated, "predict-member", ["not readable weights", FORCE]),
    (f"{NETWORK_DIR}/model.pt", garbage, "predict-member", ["not readable weights", FORCE]),
    (f"{NETWORK_DIR}/model.pt", foreign_weights, "predict-member", ["do not fit", FORCE]),
    (f"{NETWORK_DIR}/model.pt", deleted, "predict-member", ["missing", FORCE]),
    (f"{NETWORK_DIR}/model.json", garbage, "predict-member", ["not valid JSON", FORCE]),
    (f"{NETWORK_DIR}/model.json", edited_json(model_json_without_vocab), "predict-member", ["no `vocab`", FORCE]),
    (f"{NETWORK_DIR}/model.json", edited_json(model_json_bad_config), "predict-member", ["pooler", FORCE]),
    (f"{NETWORK_DIR}/model.json", edited_json(as_list_value), "predict-member", ["where an object belongs", FORCE]),
    (f"{LINEAR_DIR}/linear.npz", truncated, "predict-linear", ["not a readable linear member", FORCE]),
    (f"{LINEAR_DIR}/linear.npz", garbage, "predict-linear", ["not a readable linear member", FORCE]),
    (f"{LINEAR_DIR}/linear.npz", emptied, "predict-ensemble", ["not a readable linear member", FORCE]),
    (f"{LINEAR_DIR}/linear.npz", a_pickle_of_something_else, "predict-linear",
     ["not a readable linear member", FORCE]),
]


def argv_of(command: str, run: Path, tmp_path: Path) -> list:
    test_csv = tmp_path / "test.csv"
    test_csv.write_text("id,text\n0,1 2 3\n1,4 5 6 7\n")
    predict = ["predict", run, "--data", test_csv, "--out", tmp_path / "submission.csv", "--no-progress"]
    return {"ensemble": ["ensemble", run],
            "predict-default": predict,
            "predict-ensemble": [*predict, "--use", "ensemble"],
            "predict-member": [*predict, "--use", "confirmed:trial-0"],
            "predict-linear": [*predict, "--use", "confirmed:linear"],
            "report": ["report", run],
            "status": ["status", run],
            "confirm": ["confirm", run, "--top", "1", "--folds", "2"],
            "resume": ["resume", run]}[command]


@pytest.mark.parametrize("name, damage, command, needles", CASES,
                         ids=[f"{n.split('/')[-1]}-{d.__name__}-{c}" for n, d, c, _ in CASES])
def test_damaged_stage_file_is_refused(refused, confirmed_copy, tmp_path, name, damage, command, needles):
    path = confirmed_copy / name
    damage(path)
    refused(argv_of(command, confirmed_copy, tmp_path), [path.name, "is damaged", "nothing was changed", *needles],
            watch=(confirmed_copy, tmp_path / "submission.csv"))
