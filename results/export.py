"""Writing and reading leaderboards and run records (the I/O edge of results/)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from results.files import RunFiles, atomic_write_json, atomic_write_text, read_json
from results.ranking import leaderboard
from results.records import TrialRecord


def save_records(files: RunFiles, records: dict[str, TrialRecord]) -> None:
    atomic_write_json(files.trials_json, [r.to_dict() for r in records.values()])


def load_records(files: RunFiles) -> dict[str, TrialRecord]:
    if not files.trials_json.exists():
        return {}
    return {d["trial_id"]: TrialRecord.from_dict(d) for d in read_json(files.trials_json)}


def to_csv(frame: pd.DataFrame) -> str:
    return frame.to_csv(index=False, lineterminator="\n")


def write_leaderboard(files: RunFiles, records: dict[str, TrialRecord], *, max_epochs: int,
                      param_names: list[str], seed: int | None, fold: int | None,
                      command_prefix: str | None = None) -> pd.DataFrame:
    """Persist the records and the ranked table they give; both writes are atomic."""
    save_records(files, records)
    frame = leaderboard(records.values(), max_epochs=max_epochs, param_names=param_names, seed=seed,
                        fold=fold, command_prefix=command_prefix)
    atomic_write_text(files.leaderboard_csv, to_csv(frame))
    return frame


def run_leaderboard(run_dir: str | Path) -> pd.DataFrame:
    """The leaderboard of a run directory, rebuilt from its records."""
    files = RunFiles(Path(run_dir))
    if not files.run_json.exists():
        raise FileNotFoundError(
            f"{run_dir} is not a run directory (no run.json): pass the RUN_DIR that `python -m search "
            "launch` printed, e.g. runs/<name>")
    run = read_json(files.run_json)
    return leaderboard(load_records(files).values(), max_epochs=run["max_epochs"],
                       param_names=run["searched"], seed=run["seed"], fold=run["fold"],
                       command_prefix=run.get("reproduce"))
