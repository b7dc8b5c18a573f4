"""Reading a confirm stage back, for `ensemble` and `predict`: which members are complete, their
fold models and their out-of-fold predictions (the files' records are rundir/confirm.py).

A member is *complete* when every job it should have (folds x seeds; the linear member folds x 1)
ended `completed` and its OOF file exists; *raced out* when `confirm --race` stopped it (never in an
ensemble); *failed* when one of its jobs ended in error; else *unfinished* (confirm was stopped or
is still running). Every error here says which command fixes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from model.errors import ConfigError
from results.confirm import COMPLETE
from rundir.confirm import (
    CONFIRM_COMMAND,
    LINEAR,
    OOF_FOLD_OF,
    OOF_IDS,
    OOF_PROBS,
    OOF_Y,
    RACED_OUT,
    RESUME_COMMAND,
    ConfirmSpec,
    JobRecord,
    Member,
    read_jobs,
    read_oof,
    read_ranking,
)
from rundir.io import damaged
from rundir.paths import ConfirmFiles
from rundir.record import require_directory
from rundir.trials import COMPLETED, ERROR, RUNNING

FAILED, UNFINISHED = "failed", "unfinished"  # a member that is not COMPLETE


@dataclass(frozen=True)
class ConfirmRun:
    """RUN_DIR/confirm/ as read at one moment."""

    files: ConfirmFiles
    spec: ConfirmSpec
    jobs: dict[str, JobRecord]
    ranking: pd.DataFrame | None  # confirm.csv, None while it does not exist yet

    @property
    def labels(self) -> tuple[str, ...]:
        return self.spec.labels

    @property
    def members(self) -> tuple[Member, ...]:
        return self.spec.members

    def member(self, name: str) -> Member:
        try:
            return self.spec.member(name)
        except KeyError:
            raise ConfigError(f"{name!r} is not a member of {self.files.confirm_json}; its members are: "
                              f"{', '.join(m.name for m in self.members)}") from None

    def member_jobs(self, name: str) -> list[tuple[str, JobRecord]]:
        """(job id, record) of a member's recorded jobs, by fold then seed."""
        return sorted(((key, job) for key, job in self.jobs.items() if job.member == name),
                      key=lambda item: (item[1].fold, item[1].seed))

    def state(self, name: str) -> tuple[str, str]:
        """(COMPLETE | RACED_OUT | FAILED | UNFINISHED, a phrase saying why) for member `name`."""
        member = self.member(name)
        jobs = self.member_jobs(name)
        raced = [j for _, j in jobs if j.status == RACED_OUT]
        if raced:
            return RACED_OUT, raced[0].note or "raced out"
        errors = [(key, j) for key, j in jobs if j.status == ERROR]
        if errors:
            return FAILED, f"{len(errors)} job(s) ended in error ({errors[0][0]}: {errors[0][1].error})"
        done = sum(j.status == COMPLETED for _, j in jobs)
        expected = self.spec.folds * member.seeds(self.spec.seeds)
        if done < expected:
            running = sum(j.status == RUNNING for _, j in jobs)
            return UNFINISHED, f"{done} of {expected} jobs completed ({running} running)"
        if self.files.oof(name).exists() and not self.files.oof(name).is_file():
            raise damaged(self.files.oof(name), "not a file")
        if not self.files.oof(name).is_file():
            return UNFINISHED, f"all {expected} jobs completed but {self.files.oof(name)} is missing"
        return COMPLETE, f"{expected} jobs completed"

    def rank_order(self) -> list[str]:
        """Member names in confirm.csv's rank order (best first); members it lacks follow in confirm.json's order."""
        ranked = [] if self.ranking is None else [str(m) for m in self.ranking.sort_values("rank")["member"]]
        names = [m.name for m in self.members]
        return [*[n for n in ranked if n in names], *[n for n in names if n not in ranked]]

    def complete_members(self, *, partial: bool = False) -> tuple[list[str], dict[str, str]]:
        """(complete members in rank order, {left-out member: why}).

        Raises ConfigError when confirm has not finished (confirm.csv missing or a member unfinished):
        an ensemble over part of the members, or of a member over part of its folds, would silently
        differ from the one confirm is producing. With `partial` (a pipeline whose confirm stage ran
        out of time), unfinished members are left out like failed ones."""
        states = {n: self.state(n) for n in self.rank_order()}
        unfinished = {n: why for n, (state, why) in states.items() if state == UNFINISHED}
        run_dir = self.files.run_dir
        if (unfinished and not partial) or self.ranking is None:
            listing = "; ".join(f"{n}: {why}" for n, why in unfinished.items()) or "confirm.csv is not written yet"
            raise ConfigError(f"confirm in {run_dir} has not finished ({listing}): resume it with "
                              f"`{RESUME_COMMAND.format(run_dir=run_dir)}`, then run this again")
        failed = {n: why for n, (state, why) in states.items() if state != COMPLETE}
        complete = [n for n in states if n not in failed]
        if not complete:
            raise ConfigError(f"every member of confirm in {run_dir} failed ("
                              + "; ".join(f"{n}: {why}" for n, why in failed.items())
                              + f"): fix the cause and rerun `{CONFIRM_COMMAND.format(run_dir=run_dir)}`")
        return complete, failed

    def fold_model_dirs(self, name: str) -> list[Path]:
        """The directories of a complete member's fold models (folds, then seeds)."""
        dirs = []
        for key, job in self.member_jobs(name):
            if job.model_dir is None:
                raise damaged(self.files.jobs_json, f"job {key} is completed but has no model_dir")
            dirs.append(self.files.root / job.model_dir)
        return dirs

    def is_linear(self, name: str) -> bool:
        return self.member(name).kind == LINEAR


def load_confirm(run_dir: str | Path) -> ConfirmRun:
    """Read RUN_DIR/confirm/; a missing stage is a ConfigError naming the command that writes it,
    a damaged file is `damaged` naming the one that rebuilds it."""
    files = ConfirmFiles.of(run_dir)
    require_directory(run_dir)
    if not files.confirm_json.is_file():
        raise ConfigError(f"{run_dir} has no confirm stage ({files.confirm_json} is missing): run "
                          f"`{CONFIRM_COMMAND.format(run_dir=run_dir)}` first")
    return ConfirmRun(files=files, spec=ConfirmSpec.load(files.confirm_json), jobs=read_jobs(files.jobs_json),
                      ranking=read_ranking(files))


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
    shape = (run.spec.rows, len(run.labels))
    for name in members:
        path = run.files.oof(name)
        arrays = read_oof(path)
        if arrays[OOF_PROBS].shape != shape:
            raise damaged(path, f"probs has shape {arrays[OOF_PROBS].shape}, but confirm.json says {shape} "
                          "(rows x labels)")
        if not np.isfinite(arrays[OOF_PROBS]).all():
            raise damaged(path, "probs holds NaN or inf")
        if first is None:
            first = arrays
        else:
            for key in (OOF_Y, OOF_FOLD_OF, OOF_IDS):
                if not np.array_equal(arrays[key], first[key]):
                    raise damaged(path, f"`{key}` differs from the one in {run.files.oof(members[0])}: the members "
                                  "were not confirmed on the same rows and split")
        probs.append(arrays[OOF_PROBS].astype(np.float64))
    if first is None:
        raise ValueError("load_oof needs at least one member")
    return OutOfFold(members=tuple(members), probs=tuple(probs), y=first[OOF_Y].astype(np.int64),
                     fold_of=first[OOF_FOLD_OF].astype(np.int64), ids=first[OOF_IDS].astype(str))
