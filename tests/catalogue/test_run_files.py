"""Damaged run files (issue 12, item 7): each damaged file of a finished run, against each command
that reads it, is refused with an error that names the file and the way to recover, and the
refused command changes nothing in the run.

Every case damages a private copy of the finished run (`run_copy`). Damage a user can cause:
invalid JSON (an editor, a full disk), a file cut short (a copy interrupted), the wrong kind of
value, a missing key, a deleted file, and a directory where the file belongs (unreadable as a file).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest


def invalid_json(path: Path) -> None:
    path.write_text('{"name": "done", ')


def truncated(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def deleted(path: Path) -> None:
    shutil.rmtree(path) if path.is_dir() else path.unlink()


def a_directory(path: Path) -> None:
    path.unlink()
    path.mkdir()


def garbage(path: Path) -> None:
    path.write_bytes(b"this is not a database, it was overwritten by mistake\n" * 20)


def emptied(path: Path) -> None:
    path.write_bytes(b"")


def edited_json(change: Callable[[object], object]) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        path.write_text(json.dumps(change(json.loads(path.read_text()))))
    damage.__name__ = change.__name__
    return damage


def without_max_epochs(run: dict) -> dict:
    return {k: v for k, v in run.items() if k != "max_epochs"}


def without_data(run: dict) -> dict:
    return {k: v for k, v in run.items() if k != "data"}


def created_not_a_date(run: dict) -> dict:
    return {**run, "created": "yesterday"}


def without_num_samples(run: dict) -> dict:
    return {**run, "settings": {k: v for k, v in run["settings"].items() if k != "num_samples"}}


def as_list(value: object) -> list:
    return [value]


def as_object(records: list) -> dict:
    return {"trials": records}


def record_without_trial_id(records: list) -> list:
    return [{k: v for k, v in records[0].items() if k != "trial_id"}, *records[1:]]


def record_with_unknown_status(records: list) -> list:
    return [{**records[0], "status": "finished"}, *records[1:]]


def record_with_unknown_key(records: list) -> list:
    return [{**records[0], "score": 1.0}, *records[1:]]


def invalid_yaml(path: Path) -> None:
    path.write_text("searched:\n  lr: [1e-5, 1e-4\n")


def latest(pattern: str) -> Callable[[Path], Path]:
    return lambda run: sorted((run / "ray").glob(pattern))[-1]


def named(name: str) -> Callable[[Path], Path]:
    return lambda run: run / name


RESTORE = "restore it from a backup"
CASES = [
    # (file, damage, command, needles beyond the file's name)
    ("run.json", invalid_json, "export", ["not valid JSON", RESTORE]),
    ("run.json", invalid_json, "status", ["not valid JSON", RESTORE]),
    ("run.json", invalid_json, "report", ["not valid JSON", RESTORE]),
    ("run.json", invalid_json, "resume", ["not valid JSON", RESTORE]),
    ("run.json", invalid_json, "confirm", ["not valid JSON", RESTORE]),
    ("run.json", truncated, "resume", ["not valid JSON", RESTORE]),
    ("run.json", truncated, "status", ["not valid JSON", RESTORE]),
    ("run.json", edited_json(as_list), "export", ["a JSON list where an object belongs", RESTORE]),
    ("run.json", edited_json(without_max_epochs), "export", ["no `max_epochs`", RESTORE]),
    ("run.json", edited_json(without_max_epochs), "resume", ["no `max_epochs`", RESTORE]),
    ("run.json", edited_json(without_data), "report", ["no `data` object", RESTORE]),
    ("run.json", edited_json(created_not_a_date), "status", ["`created` is 'yesterday'", RESTORE]),
    ("run.json", edited_json(without_num_samples), "status", ["`settings.num_samples`", RESTORE]),
    ("run.json", a_directory, "export", ["Is a directory", RESTORE]),
    ("trials.json", invalid_json, "export", ["not valid JSON", RESTORE]),
    ("trials.json", invalid_json, "status", ["not valid JSON", RESTORE]),
    ("trials.json", invalid_json, "report", ["not valid JSON", RESTORE]),
    ("trials.json", invalid_json, "resume", ["not valid JSON", RESTORE]),
    ("trials.json", invalid_json, "confirm", ["not valid JSON", RESTORE]),
    ("trials.json", invalid_json, "predict", ["not valid JSON", RESTORE]),
    ("trials.json", truncated, "export", ["not valid JSON", RESTORE]),
    ("trials.json", edited_json(as_object), "status", ["a JSON dict where a list belongs", RESTORE]),
    ("trials.json", edited_json(record_without_trial_id), "export", ["record 0", RESTORE]),
    ("trials.json", edited_json(record_with_unknown_status), "report", ["record 0", RESTORE]),
    ("trials.json", edited_json(record_with_unknown_key), "export", ["record 0", "score", RESTORE]),
    ("trials.json", deleted, "export", ["missing, although the run has trials", RESTORE]),
    ("trials.json", deleted, "status", ["missing, although the run has trials", RESTORE]),
    ("trials.json", deleted, "resume", ["missing, although the run has trials", RESTORE]),
    ("trials.json", a_directory, "status", ["Is a directory", RESTORE]),
    ("study.db", truncated, "report", ["not a readable Optuna study", RESTORE]),
    ("study.db", truncated, "resume", ["not a readable Optuna study", RESTORE]),
    ("study.db", deleted, "report", ["missing", RESTORE, "status and export do not"]),
    ("study.db", deleted, "resume", ["missing", RESTORE]),
    ("study.db", garbage, "report", ["not a readable Optuna study", RESTORE]),
    ("study.db", emptied, "report", ["not a readable Optuna study", RESTORE]),
    ("study.db", a_directory, "resume", ["not a file", RESTORE]),
    ("space.yaml", deleted, "resume", ["No such file", RESTORE]),
    ("space.yaml", deleted, "confirm", ["No such file", RESTORE]),
    ("space.yaml", invalid_yaml, "resume", ["not valid YAML", RESTORE]),
    ("space.yaml", emptied, "resume", ["where a mapping belongs", RESTORE]),
    ("experiment_state", invalid_json, "resume", ["not valid JSON", "restore RUN_DIR/ray"]),
    ("experiment_state", truncated, "resume", ["not valid JSON", "restore RUN_DIR/ray"]),
    ("experiment_state", edited_json(as_list), "resume", ["where an object belongs", "restore RUN_DIR/ray"]),
    ("searcher-state", truncated, "resume", ["not a whole pickle", "restore RUN_DIR/ray"]),
    ("search_gen_state", emptied, "resume", ["not a whole pickle", "restore RUN_DIR/ray"]),
    ("ray", deleted, "resume", ["no experiment state, although the run has trials", "restore RUN_DIR/ray"]),
]
WHERE = {"run.json": named("run.json"), "trials.json": named("trials.json"), "study.db": named("study.db"),
         "space.yaml": named("space.yaml"), "ray": named("ray"),
         "experiment_state": latest("experiment_state-*.json"), "searcher-state": latest("searcher-state-*.pkl"),
         "search_gen_state": latest("search_gen_state-*.json")}


def argv_of(command: str, run: Path, tmp_path: Path) -> list[str]:
    test_csv = tmp_path / "test.csv"
    test_csv.write_text("id,text\n0,1 2 3\n")
    return {"export": ["export", run],
            "status": ["status", run],
            "report": ["report", run],
            "resume": ["resume", run],
            "confirm": ["confirm", run, "--top", "1", "--folds", "2"],
            "predict": ["predict", run, "--data", test_csv, "--out", tmp_path / "submission.csv", "--use", "trial:0"],
            }[command]


@pytest.mark.parametrize("what, damage, command, needles", CASES,
                         ids=[f"{w}-{d.__name__}-{c}" for w, d, c, _ in CASES])
def test_damaged_run_file_is_refused(refused, run_copy, tmp_path, what, damage, command, needles):
    path = WHERE[what](run_copy)
    damage(path)
    refused(argv_of(command, run_copy, tmp_path), [path.name, "is damaged", "nothing was changed", *needles],
            watch=(run_copy, tmp_path / "submission.csv"))


def confirm_stage(run: Path) -> Path:
    """A confirm/ directory as `confirm` leaves it, but for the parts a case damages."""
    root = run / "confirm"
    root.mkdir()
    (root / "confirm.json").write_text(json.dumps({
        "top": 1, "folds": 2, "seeds": 1, "labels": ["1-1", "2-2"], "rows": 10,
        "members": [{"name": "trial-0", "kind": "network", "params": {}}]}))
    (root / "jobs.json").write_text("{}")
    (root / "confirm.csv").write_text("rank,member,kind,level2_mean,level2_std,level2_fold0,level2_fold1\n"
                                      "1,trial-0,network,0.5,0.01,0.49,0.51\n")
    return root


CONFIRM_CASES = [
    ("confirm.json", invalid_json, ["ensemble"], ["not valid JSON", "confirm RUN_DIR --force"]),
    ("confirm.json", edited_json(as_list), ["ensemble"], ["where an object belongs", "confirm RUN_DIR --force"]),
    ("jobs.json", invalid_json, ["ensemble"], ["not valid JSON", "confirm RUN_DIR --force"]),
    ("confirm.csv", garbage, ["report"], ["no column", "confirm RUN_DIR --force"]),
    ("ensemble.json", invalid_json, ["report"], ["not valid JSON", "python -m search ensemble RUN_DIR"]),
    ("ensemble.json", invalid_json, ["predict", "--use", "ensemble"], ["not valid JSON",
                                                                      "python -m search ensemble RUN_DIR"]),
]


@pytest.mark.parametrize("name, damage, command, needles", CONFIRM_CASES,
                         ids=[f"{n}-{d.__name__}-{c[0]}" for n, d, c, _ in CONFIRM_CASES])
def test_damaged_confirm_file_is_refused(refused, run_copy, tmp_path, name, damage, command, needles):
    root = confirm_stage(run_copy)
    (root / "ensemble.json").write_text("{}")
    damage(root / name)
    argv = [command[0], run_copy, *command[1:]]
    if command[0] == "predict":
        (tmp_path / "test.csv").write_text("id,text\n0,1 2 3\n")
        argv += ["--data", tmp_path / "test.csv", "--out", tmp_path / "submission.csv"]
    refused(argv, [name, "is damaged", *needles], watch=(run_copy, tmp_path / "submission.csv"))


def test_status_export_and_report_leave_a_missing_study_alone(run_copy, capsys):
    """Status and export never need the study; report refuses without creating one."""
    from cli.main import main

    (run_copy / "study.db").unlink()
    main(["status", str(run_copy)])
    main(["export", str(run_copy)])
    assert "trial_id" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["report", str(run_copy)])
    assert not (run_copy / "study.db").exists()
