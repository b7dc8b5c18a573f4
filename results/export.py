"""Writing and reading leaderboards and run records (the I/O edge of results/)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from model import metrics as M
from results.noise import Noise, PairedBootstrap
from results.ranking import PARAM_PREFIX, leaderboard
from rundir.io import atomic_write_text
from rundir.paths import RunFiles
from rundir.predictions import read_predictions
from rundir.record import read_run
from rundir.trials import STATUSES, TrialRecord, load_records, save_records

FORMATS = ("csv", "md", "json")
# Markdown is for pasting into reports: the columns a reader compares, not paths and commands.
MARKDOWN_COLUMNS = ["rank", "optuna_number", "status", "epochs", "budget", M.BEST_EPOCH, M.LEVEL2_MACRO_F1,
                    "tied_with_best", M.LEVEL1_MACRO_F1, M.WORST5_F1, "time_s"]


# Text columns pandas would otherwise guess: a Ray trial id such as "8e123456" reads as a float.
TEXT_COLUMNS = {"trial_id": str, "warm_start": str, "status": str, "node": str, "device": str, "checkpoint": str,
                "error": str, "command": str}


def read_leaderboard_csv(path_or_buffer) -> pd.DataFrame:
    """Read a leaderboard CSV back with its text columns kept as text."""
    return pd.read_csv(path_or_buffer, dtype=TEXT_COLUMNS)


def to_csv(frame: pd.DataFrame) -> str:
    return frame.to_csv(index=False, lineterminator="\n")


def select(frame: pd.DataFrame, *, top: int | None = None, statuses: list[str] | None = None) -> pd.DataFrame:
    """Rows whose status is in `statuses` (all when None), then the first `top` of them (ranks kept)."""
    if statuses:
        unknown = sorted(set(statuses) - set(STATUSES))
        if unknown:
            raise ValueError(f"--status {', '.join(unknown)} is not a status; statuses are: {', '.join(STATUSES)}")
        frame = frame[frame["status"].isin(statuses)]
    if top is not None:
        if top < 1:
            raise ValueError(f"--top is {top}, but must be >= 1")
        frame = frame.head(top)
    return frame.reset_index(drop=True)


def _with_none(frame: pd.DataFrame) -> pd.DataFrame:
    """Object columns with None for every missing cell (NaN, NA), so writers leave them empty."""
    return frame.astype(object).where(frame.notna(), None)


def top_table(frame: pd.DataFrame, top: int = 5) -> str:
    """The first rows as aligned text for a terminal: rank, status, scores and parameters."""
    shown = ["rank", "optuna_number", "status", "epochs", M.LEVEL2_MACRO_F1, "tied_with_best", M.LEVEL1_MACRO_F1] + [
        c for c in frame.columns if c.startswith(PARAM_PREFIX)]
    return frame[shown].head(top).rename(columns=lambda c: c.removeprefix(PARAM_PREFIX)).to_string(
        index=False, float_format=lambda x: f"{x:.4g}", na_rep="-")


def render(frame: pd.DataFrame, fmt: str) -> str:
    """The table as CSV (every column, pandas-readable), JSON (a list of row objects, null for empty)
    or markdown (the comparison columns and the parameters)."""
    if fmt == "csv":
        return to_csv(frame)
    if fmt == "json":
        # json rather than DataFrame.to_json, which rounds floats to 10 digits
        rows = _with_none(frame).to_dict(orient="records")
        return json.dumps(rows, indent=1, ensure_ascii=False, default=lambda v: v.item()) + "\n"
    if fmt == "md":
        params = [c for c in frame.columns if c.startswith(PARAM_PREFIX)]
        table = _with_none(frame[MARKDOWN_COLUMNS + params]).rename(columns=lambda c: c.removeprefix(PARAM_PREFIX))
        return table.to_markdown(index=False, floatfmt=".4g", missingval="") + "\n"
    raise ValueError(f"--format {fmt!r} is not one of: {', '.join(FORMATS)}")


class NoiseCache:
    """The trials' noise against rank 1 (results/noise.py) for a leaderboard rewritten at every
    result: the resample weights are drawn once, and a trial's resampled scores computed again only
    when its predictions file changed; nothing is recomputed while no file and rank 1 changed."""

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._noise: dict[str, Noise] = {}
        self._bootstrap: tuple[int, PairedBootstrap] | None = None  # (dev.npz's mtime, its bootstrap)

    def noise(self, files: RunFiles, frame: pd.DataFrame) -> dict[str, Noise]:
        if frame.empty:
            return {}
        paths = sorted(files.predictions_dir.glob("*.np[yz]")) if files.predictions_dir.is_dir() else []
        versions = {p.stem: p.stat().st_mtime_ns for p in paths}
        key = (str(frame["trial_id"].iloc[0]), tuple(sorted(versions.items())))
        if key != self._key:
            self._key, self._noise = key, self._compute(files, str(frame["trial_id"].iloc[0]), versions)
        return self._noise

    def _compute(self, files: RunFiles, best: str, versions: dict[str, int]) -> dict[str, Noise]:
        read = read_predictions(files)
        if read is None or best not in read[2]:
            return {}
        y, num_labels, preds = read
        if self._bootstrap is None or self._bootstrap[0] != versions.get("dev"):
            self._bootstrap = (versions.get("dev"), PairedBootstrap(y, num_labels=num_labels))
        return self._bootstrap[1].compare(preds, best, versions=versions)


def with_noise(frame: pd.DataFrame, noise: dict[str, Noise]) -> pd.DataFrame:
    """The leaderboard with each trial's interval and whether it is tied with rank 1 (empty where a
    trial has no predictions: a run launched before they were kept, a trial not evaluated yet)."""
    frame = frame.copy()
    found = [noise.get(trial) for trial in frame["trial_id"]]
    frame["level2_ci_low"] = [n.low if n else None for n in found]
    frame["level2_ci_high"] = [n.high if n else None for n in found]
    frame["tied_with_best"] = pd.array([n.tied_with_best if n else None for n in found], dtype="boolean")
    return frame


def write_leaderboard(files: RunFiles, records: dict[str, TrialRecord], *, max_epochs: int,
                      param_names: list[str], seed: int | None, fold: int | None,
                      command_prefix: str | None = None, noise: NoiseCache | None = None) -> pd.DataFrame:
    """Persist the records and the ranked table they give; both writes are atomic."""
    save_records(files, records)
    frame = leaderboard(records.values(), max_epochs=max_epochs, param_names=param_names, seed=seed,
                        fold=fold, command_prefix=command_prefix)
    frame = with_noise(frame, (noise or NoiseCache()).noise(files, frame))
    atomic_write_text(files.leaderboard_csv, to_csv(frame))
    return frame


def run_leaderboard(run_dir: str | Path) -> pd.DataFrame:
    """The leaderboard of a run directory, rebuilt from its records, with the trials' noise."""
    files = RunFiles(Path(run_dir))
    run = read_run(files)
    frame = leaderboard(load_records(files).values(), max_epochs=run["max_epochs"],
                        param_names=run["searched"], seed=run["seed"], fold=run["fold"],
                        command_prefix=run.get("reproduce"))
    return with_noise(frame, NoiseCache().noise(files, frame))


def tied_trials(frame: pd.DataFrame, *, status: str | None = None) -> pd.DataFrame:
    """The rows tied with rank 1 (results/noise.py), in rank order; of one status if given."""
    tied = frame[frame["tied_with_best"].fillna(False).astype(bool)]
    return tied if status is None else tied[tied["status"] == status]
