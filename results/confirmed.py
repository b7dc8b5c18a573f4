"""Reading what `python -m search confirm` left in RUN_DIR/confirm/ (the I/O edge for `ensemble` and `predict`).

RUN_DIR/confirm/ holds:
    confirm.json     the stage's record: folds, seeds, settings, level-2 labels in index order, rows N,
                     and the members ({"name", "kind": network|linear, "params", ...}) it retrains
    jobs.json        {"<member>/fold<f>/seed<s>": {"member", "fold", "seed", "status", "level2_macro_f1",
                     ..., "model_dir" (relative to confirm/), "error"}}, linear jobs as "linear/fold<f>/seed0"
    models/          the fold models: models/<member>/fold<f>-seed<s>/ (model.inference model directories),
                     models/linear/fold<f>/linear.joblib (a joblib dump of a model.linear.LinearMember)
    oof/<member>.npz out-of-fold probabilities: probs (N, C) float16 (mean over seeds, training-file row
                     order), fold_of (N,) int16, y (N,) int64, ids (N,) unicode
    confirm.csv      one row per member ranked by mean level-2 macro-F1 (rank, member, kind, level2_mean, ...)
    ensemble.json    what `python -m search ensemble` chose (written there, read by `predict`)

A member is *complete* when every job it should have (folds x seeds; the linear member folds x 1) ended
`completed` and its OOF file exists; *failed* when one of its jobs ended in error; else *unfinished*
(confirm was stopped or is still running). Every error here says which command fixes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from model.errors import ConfigError
from results.confirm import COMPLETE, LINEAR
from rundir.io import read_json
from rundir.paths import ConfirmFiles
from rundir.trials import COMPLETED as JOB_COMPLETED
from rundir.trials import ERROR as JOB_ERROR
from rundir.trials import RUNNING as JOB_RUNNING

FAILED, UNFINISHED = "failed", "unfinished"  # a member that is not COMPLETE
# How a user makes the stage, and how one finishes a stopped stage.
CONFIRM_COMMAND = "python -m search confirm {run_dir}"
RESUME_COMMAND = "python -m search resume {run_dir}"
ENSEMBLE_COMMAND = "python -m search ensemble {run_dir}"


@dataclass(frozen=True)
class Member:
    name: str
    kind: str  # NETWORK or LINEAR
    params: dict[str, Any]


@dataclass(frozen=True)
class Job:
    key: str  # "<member>/fold<f>/seed<s>"
    member: str
    fold: int
    seed: int
    status: str
    level2_macro_f1: float | None
    model_dir: Path | None  # absolute (jobs.json stores it relative to confirm/)
    error: str | None


def _count(value: Any, what: str, path: Path) -> int:
    """confirm.json's `folds`/`seeds`: a count, or the list of them."""
    if isinstance(value, list):
        return len(value)
    if isinstance(value, int) and value >= 1:
        return value
    raise ConfigError(f"{path}: `{what}` is {value!r}, but must be a count >= 1 or a list; the file is written by "
                      "`python -m search confirm`, not by hand")


@dataclass(frozen=True)
class ConfirmRun:
    """RUN_DIR/confirm/ as read at one moment."""

    files: ConfirmFiles
    record: dict[str, Any]  # confirm.json
    members: tuple[Member, ...]  # confirm.json's order
    jobs: tuple[Job, ...]
    ranking: pd.DataFrame | None  # confirm.csv, None while it does not exist yet

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self.record["labels"])

    @property
    def rows(self) -> int:
        return int(self.record["rows"])

    @property
    def folds(self) -> int:
        return _count(self.record["folds"], "folds", self.files.confirm_json)

    def member(self, name: str) -> Member:
        for member in self.members:
            if member.name == name:
                return member
        raise ConfigError(f"{name!r} is not a member of {self.files.confirm_json}; its members are: "
                          f"{', '.join(m.name for m in self.members)}")

    def expected_jobs(self, member: Member) -> int:
        seeds = 1 if member.kind == LINEAR else _count(self.record["seeds"], "seeds", self.files.confirm_json)
        return self.folds * seeds

    def member_jobs(self, name: str) -> list[Job]:
        return sorted((j for j in self.jobs if j.member == name), key=lambda j: (j.fold, j.seed))

    def state(self, name: str) -> tuple[str, str]:
        """(COMPLETE | FAILED | UNFINISHED, a phrase saying why) for member `name`."""
        member = self.member(name)
        jobs = self.member_jobs(name)
        errors = [j for j in jobs if j.status == JOB_ERROR]
        if errors:
            return FAILED, f"{len(errors)} job(s) ended in error ({errors[0].key}: {errors[0].error})"
        done = sum(j.status == JOB_COMPLETED for j in jobs)
        expected = self.expected_jobs(member)
        if done < expected:
            running = sum(j.status == JOB_RUNNING for j in jobs)
            return UNFINISHED, f"{done} of {expected} jobs completed ({running} running)"
        if not self.files.oof(name).is_file():
            return UNFINISHED, f"all {expected} jobs completed but {self.files.oof(name)} is missing"
        return COMPLETE, f"{expected} jobs completed"

    def rank_order(self) -> list[str]:
        """Member names in confirm.csv's rank order (best first); members it lacks follow in confirm.json's order."""
        ranked = [] if self.ranking is None else [str(m) for m in self.ranking.sort_values("rank")["member"]]
        return [*[n for n in ranked if n in {m.name for m in self.members}],
                *[m.name for m in self.members if m.name not in ranked]]

    def complete_members(self) -> tuple[list[str], dict[str, str]]:
        """(complete members in rank order, {failed member: why}).

        Raises ConfigError when confirm has not finished (confirm.csv missing or a member unfinished):
        an ensemble over part of the members, or of a member over part of its folds, would silently
        differ from the one confirm is producing."""
        unfinished = {n: why for n in self.rank_order() for state, why in [self.state(n)] if state == UNFINISHED}
        if unfinished or self.ranking is None:
            listing = "; ".join(f"{n}: {why}" for n, why in unfinished.items()) or "confirm.csv is not written yet"
            raise ConfigError(f"confirm in {self.files.run_dir} has not finished ({listing}): resume it with "
                              f"`{RESUME_COMMAND.format(run_dir=self.files.run_dir)}`, then run this again")
        failed = {n: why for n in self.rank_order() for state, why in [self.state(n)] if state == FAILED}
        complete = [n for n in self.rank_order() if n not in failed]
        if not complete:
            raise ConfigError(f"every member of confirm in {self.files.run_dir} failed ("
                              + "; ".join(f"{n}: {why}" for n, why in failed.items())
                              + f"): fix the cause and rerun `{CONFIRM_COMMAND.format(run_dir=self.files.run_dir)}`")
        return complete, failed


def load_confirm(run_dir: str | Path) -> ConfirmRun:
    """Read RUN_DIR/confirm/; a missing stage or file is a ConfigError naming the command that writes it."""
    files = ConfirmFiles.of(run_dir)
    if not Path(run_dir).is_dir():
        raise ConfigError(f"{run_dir} is not a directory: pass the RUN_DIR that `python -m search launch` printed")
    if not files.confirm_json.is_file():
        raise ConfigError(f"{run_dir} has no confirm stage ({files.confirm_json} is missing): run "
                          f"`{CONFIRM_COMMAND.format(run_dir=run_dir)}` first")
    record = read_json(files.confirm_json, dict)
    missing = [key for key in ("members", "labels", "rows", "folds", "seeds") if key not in record]
    try:
        if missing:
            raise KeyError(", ".join(missing))
        members = tuple(Member(name=m["name"], kind=m["kind"], params=m.get("params") or {})
                        for m in record["members"])
    except (KeyError, TypeError) as err:
        raise ConfigError(f"{files.confirm_json} lacks {err}: it was not written by this version of "
                          f"`python -m search confirm`; rerun it") from None
    jobs = []
    if files.jobs_json.is_file():
        for key, job in read_json(files.jobs_json, dict).items():
            model_dir = job.get("model_dir")
            score = job.get("level2_macro_f1")
            jobs.append(Job(key=key, member=job["member"], fold=int(job["fold"]), seed=int(job["seed"]),
                            status=job["status"], level2_macro_f1=None if score is None else float(score),
                            model_dir=files.root / model_dir if model_dir else None, error=job.get("error")))
    ranking = pd.read_csv(files.confirm_csv, dtype={"member": str}) if files.confirm_csv.is_file() else None
    return ConfirmRun(files=files, record=record, members=members, jobs=tuple(jobs), ranking=ranking)


# ----------------------------------------------------------------------------- out-of-fold predictions


@dataclass(frozen=True)
class OutOfFold:
    """The members' OOF probabilities over the same N training rows."""

    members: tuple[str, ...]
    probs: tuple[np.ndarray, ...]  # per member (N, C) float64
    y: np.ndarray  # (N,) int64 level-2 label indices
    fold_of: np.ndarray  # (N,) int64
    ids: np.ndarray  # (N,) str


def load_oof(run: ConfirmRun, members: list[str]) -> OutOfFold:
    """Load oof/<member>.npz of `members` and check that they describe the same rows, folds and labels."""
    first: dict[str, np.ndarray] | None = None
    probs = []
    shape = (run.rows, len(run.labels))
    rerun = f"rerun `{CONFIRM_COMMAND.format(run_dir=run.files.run_dir)}`"
    for name in members:
        path = run.files.oof(name)
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in ("probs", "fold_of", "y", "ids") if k not in npz.files]
            if missing:
                raise ConfigError(f"{path} lacks {', '.join(missing)}: it is not a confirm OOF file; {rerun}")
            try:
                arrays = {k: npz[k] for k in ("probs", "fold_of", "y", "ids")}
            except ValueError as err:  # an object array (e.g. ids not stored as unicode): never unpickled
                raise ConfigError(f"{path}: {err}; confirm writes plain arrays (ids as unicode); {rerun}") from None
        if arrays["probs"].shape != shape:
            raise ConfigError(f"{path}: probs has shape {arrays['probs'].shape}, but confirm.json says {shape} "
                              f"(rows x labels); {rerun}")
        if not np.isfinite(arrays["probs"]).all():
            raise ConfigError(f"{path}: probs holds NaN or inf; {rerun}")
        if first is None:
            first = arrays
        else:
            for key in ("y", "fold_of", "ids"):
                if not np.array_equal(arrays[key], first[key]):
                    raise ConfigError(f"{path}: `{key}` differs from the one in {run.files.oof(members[0])}: the "
                                      f"members were not confirmed on the same rows and split; {rerun}")
        probs.append(arrays["probs"].astype(np.float64))
    assert first is not None, "load_oof needs at least one member"
    return OutOfFold(members=tuple(members), probs=tuple(probs), y=first["y"].astype(np.int64),
                     fold_of=first["fold_of"].astype(np.int64), ids=first["ids"].astype(str))
