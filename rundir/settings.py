"""Launch settings and the data they select. Free of Ray, so `train-one` and tools can use it."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields
from pathlib import Path

import pandas as pd

from model.data import EncodedData, prepare_data, read_table, resolve_train_path
from model.synthetic import DEFAULT_ROWS, synthesize
from spaces.space import SearchSpace, load_space, parse_sets

DEFAULT_MAX_EPOCHS = 4
# The choices of --sampler (search/searcher.py make_sampler) and --scheduler (search/scheduler.py
# SCHEDULER_CLASSES). Named here, free of Ray and Optuna, so building the CLI imports neither.
SAMPLERS = ("auto", "tpe", "random", "gp", "qmc", "cmaes")
SCHEDULERS = ("asha", "hyperband", "median", "fifo")
# `auto` takes a Gaussian process for numeric spaces up to this many trials (a GP's fit grows with
# the trials it has seen, and TPE catches up on long runs), as OptunaHub's AutoSampler does.
AUTO_GP_MAX_TRIALS = 200


@dataclass(frozen=True)
class Settings:
    """Everything a launch needs; the CLI flags map one to one onto these fields."""

    space: str | None = None  # path or shipped name; None = spaces/demo.yaml
    data: str | None = None  # directory with train.csv, or the CSV; None = synthetic
    synthetic: bool = False
    synthetic_rows: int = DEFAULT_ROWS
    synthetic_seed: int = 0
    name: str | None = None
    storage_path: str = "runs"
    num_samples: int = 12
    max_epochs: int | None = None  # None: the space's fixed value, else DEFAULT_MAX_EPOCHS
    grace_period: int = 1
    reduction_factor: float = 2
    cpus_per_trial: float = 1
    gpus_per_trial: float = 0
    max_concurrent: int | None = None  # None: as many trials as the cluster holds at once
    sampler: str = "tpe"  # search/searcher.py SAMPLERS; `auto` is resolved at launch (run.json "method")
    startup_trials: int | None = None  # random trials before the sampler models; None: ~15% of the budget
    scheduler: str = "asha"  # search/scheduler.py SCHEDULERS
    max_failures: int = 2
    seed: int = 0
    folds: int = 5
    fold: int = 0
    max_seq_len: int = 128
    address: str | None = None  # a running Ray cluster (auto, HOST:PORT, ray://HOST:PORT); None = local
    # `--set KEY=VALUE`, raw: TrialConfig fields fixed for every trial on top of the space's `fixed`
    # (see `space_of`). Strings, so run.json stays plain JSON and reads back through `parse_sets`.
    sets: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "sets", tuple(self.sets))  # argparse and run.json give lists

    @classmethod
    def from_namespace(cls, args: argparse.Namespace) -> Settings:
        """The settings of parsed CLI flags: every attribute named like a field sets that field; the
        others (`func`, `command`, `--device` ...) are not settings and are left out."""
        names = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in vars(args).items() if key in names})


def space_of(settings: Settings, path: str | Path | None = None) -> SearchSpace:
    """The space a run searches: `settings.space` (or `path`: the run's stored copy of it) with the
    run's `--set` values fixed. Launch, resume, confirm and predict all load it through here."""
    return load_space(settings.space if path is None else path, sets=parse_sets(settings.sets))


def resolve_max_epochs(settings: Settings, space: SearchSpace) -> int:
    if settings.max_epochs is not None:
        return settings.max_epochs
    return int(space.fixed.get("max_epochs", DEFAULT_MAX_EPOCHS))


def read_training_frame(settings: Settings) -> tuple[pd.DataFrame, str]:
    """The validated training table the settings select (read, or generated) and where it came from."""
    if settings.data is not None:
        path = resolve_train_path(settings.data)
        return read_table(path), str(path.resolve())
    frame, _ = synthesize(settings.synthetic_rows, seed=settings.synthetic_seed, flag="--synthetic-rows")
    return frame, f"synthetic(rows={settings.synthetic_rows}, seed={settings.synthetic_seed})"


def load_data(settings: Settings) -> EncodedData:
    """Read (or generate) and encode the data once, in the driver."""
    frame, source = read_training_frame(settings)
    return prepare_data(frame, folds=settings.folds, fold=settings.fold, seed=settings.seed,
                        max_seq_len=settings.max_seq_len, source=source)
