"""What a confirm stage retrains: its members (the search's top-K completed trials, then the
linear member), each network job's full config, and the training file split into folds."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

from model.data import EncodedData, LabelSet, dev_fold_note, fold_indices, prepare_data
from model.encoders import check_checkpoint
from model.errors import ConfigError
from model.linear import DEFAULT_GRID, INNER_FOLDS
from results.export import run_leaderboard, tied_trials
from rundir.confirm import (
    DEFAULT_BIGRAM_TOP,
    LINEAR,
    LINEAR_MEMBER,
    NETWORK,
    ConfirmSpec,
    JobPlan,
    Member,
    bigram_twin,
    is_bigram_twin,
    job_id,
    network_name,
)
from rundir.inputs import read_training_frame
from rundir.io import read_json
from rundir.paths import RunFiles
from rundir.settings import Settings
from rundir.trials import COMPLETED, load_records
from spaces.space import load_space, parse_sets

AUTO_TOP = "auto"  # `confirm --top auto`: the completed trials tied with rank 1
AUTO_TOP_CAP = 10  # ... at most this many

# The settings confirm.json keeps: the run's data settings, then the resources the stage used.
DATA_SETTINGS = ("data", "synthetic", "synthetic_rows", "synthetic_seed", "max_seq_len")
RESOURCE_SETTINGS = ("address", "cpus_per_trial", "gpus_per_trial", "max_concurrent", "max_failures")


def plan_members(run_dir: Path, *, top: int | str, linear: bool, split_seed: int, bigrams: str | None = None,
                 bigram_top: int = DEFAULT_BIGRAM_TOP) -> list[Member]:
    """The stage's members: the top `top` completed trials in leaderboard order, then the first
    `bigram_top` of them again in the bigram view when `bigrams` names a checkpoint of token pairs,
    then linear. `top` "auto": the completed trials tied with rank 1 on the search's fold
    (results/noise.py), at most AUTO_TOP_CAP. `top` 0: linear alone (a search that completed no
    trial still gets a model)."""
    # LinearMember.params but its temperature, which each fold fits (models/linear/fold<f>/linear.npz)
    linear_member = Member(name=LINEAR_MEMBER, kind=LINEAR, params={
        "C": DEFAULT_GRID[0], "inner_folds": INNER_FOLDS, "calibration": "temperature", "seed": split_seed})
    if top == 0:
        return [linear_member] if linear else []
    board = run_leaderboard(run_dir)
    records = load_records(RunFiles(run_dir))
    if top == AUTO_TOP:
        if board["tied_with_best"].isna().all():
            raise ConfigError(f"{run_dir} keeps no trial predictions to tell ties from (launched by an earlier "
                              "version): pass --top N")
        completed = tied_trials(board, status=COMPLETED).head(AUTO_TOP_CAP)
    else:
        completed = board[board["status"] == COMPLETED].head(top)
    if completed.empty:
        raise ConfigError(f"{run_dir} has no completed trial to confirm (statuses: "
                          f"{', '.join(f'{n} {s}' for s, n in board['status'].value_counts().items()) or 'no trials'})"
                          f": resume the search until some trial completes its budget, or pass --top 0 to confirm "
                          "the linear member alone")
    members = [Member(name=network_name(int(row.optuna_number)), kind=NETWORK, source_trial=row.trial_id,
                      optuna_number=int(row.optuna_number), leaderboard_rank=int(row.rank),
                      params=records[row.trial_id].params) for row in completed.itertuples()]
    if bigrams is not None:
        members += [bigram_twin(member, bigrams) for member in members[:bigram_top]]
    return [*members, linear_member] if linear else members


def plan_jobs(spec: ConfirmSpec, run_files: RunFiles) -> dict[str, JobPlan]:
    """Every network job's plan, from the run's stored space: defaults <- fixed <- the trial's
    params <- the stage's budget and seed. Checks each config, and that its encoder checkpoint
    directory is there, before Ray starts."""
    # The run's --sets (a checkpoint the space leaves open, say) complete its stored space here too.
    sets = parse_sets(read_json(run_files.run_json).get("settings", {}).get("sets", ()))
    space = load_space(run_files.space_yaml, sets=sets)
    jobs = {}
    for member in spec.members:
        if member.kind != NETWORK:
            continue
        for seed in range(spec.seeds):
            try:
                cfg = space.config(member.params, max_epochs=spec.max_epochs,
                                   seed=spec.training_seed(member.name, seed))
            except ConfigError as err:
                _refuse_twin(member, err)
                raise ConfigError(f"{member.name} (trial {member.source_trial}) is not a valid config for "
                                  f"this version of the code: {err}") from None
            if seed == 0:
                try:
                    check_checkpoint(cfg)  # an encoder checkpoint directory must be there before Ray starts
                except ConfigError as err:
                    _refuse_twin(member, err)
                    raise
            for fold in range(spec.folds):
                jobs[job_id(member.name, fold, seed)] = JobPlan(member=member.name, fold=fold, seed=seed,
                                                                config=cfg.to_dict())
    return jobs


def _refuse_twin(member: Member, err: ConfigError) -> None:
    """A bigram twin (`confirm --bigrams`) that cannot run: an error about the flag, not the trial."""
    if is_bigram_twin(member):
        raise ConfigError(f"--bigrams: {member.name} (trial {member.source_trial} in the bigram view) cannot run: "
                          f"{err}") from None


@dataclasses.dataclass(frozen=True)
class FoldData:
    """The training file split into F folds: each fold's encoded data (for the jobs) and what the
    stage's writer keeps of it (vocabulary, held-out rows) to write fold models and OOF files."""

    frame: pd.DataFrame
    source: str
    labels: LabelSet
    y: np.ndarray  # (N,) level-2 index of every training row, in file order
    held_out: list[np.ndarray]  # per fold: (n_f,) rows it holds out, in its dev row order
    encoded: list[EncodedData]

    @classmethod
    def load(cls, settings: Settings, *, folds: int, seed: int) -> FoldData:
        frame, source = read_training_frame(settings)
        labels = LabelSet.from_labels(frame["label"])
        held_out = [fold_indices(frame["label"].tolist(), folds=folds, fold=f, seed=seed)[1] for f in range(folds)]
        encoded = [prepare_data(frame, folds=folds, fold=f, seed=seed, max_seq_len=settings.max_seq_len,
                                source=source) for f in range(folds)]
        return cls(frame=frame, source=source, labels=labels, y=labels.encode(frame["label"]), held_out=held_out,
                   encoded=encoded)

    @property
    def ids(self) -> np.ndarray:
        return self.frame["id"].astype(str).to_numpy()

    def notes(self) -> list[str]:
        """A warning per fold whose held-out rows lack some labels (as `launch` warns of its dev fold)."""
        folds = len(self.encoded)
        return [note for f, data in enumerate(self.encoded) if (note := dev_fold_note(data, fold=f, folds=folds))]


def with_resources(settings: Settings, **given: float | int | str | None) -> Settings:
    """The run's settings with the resource flags that were given (None: the run's)."""
    unknown = set(given) - set(RESOURCE_SETTINGS)
    if unknown:
        raise TypeError(f"not a resource setting: {', '.join(sorted(unknown))}")
    return dataclasses.replace(settings, **{k: v for k, v in given.items() if v is not None})
