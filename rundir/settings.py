"""A run's settings (`Settings`: what run.json records) and their defaults.

Light on purpose: the command line builds its parser from these defaults, and `--help` must not
pay for pandas, torch or Ray. What the settings select (the space, the data) is rundir/inputs.py.
"""

from __future__ import annotations

import argparse
import shlex
from dataclasses import dataclass, fields
from pathlib import Path

DEFAULT_MAX_EPOCHS = 4
# A trial budget this large means "until --time-budget is spent" (the pipeline's search).
UNTIL_TIME_BUDGET = 10_000
# model.synthetic.DEFAULT_ROWS (the competition's training file had 14,009 rows; the copy measured
# on here holds 11,207 of them, the rest held back), restated so that this module needs no pandas;
# tests/rundir/test_settings.py checks that the two agree.
DEFAULT_SYNTHETIC_ROWS = 14_009
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
    synthetic_rows: int = DEFAULT_SYNTHETIC_ROWS
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
    sampler: str = "tpe"  # one of SAMPLERS (search/searcher.py); `auto` is resolved at launch (run.json "method")
    startup_trials: int | None = None  # random trials before the sampler models; None: ~15% of the budget
    scheduler: str = "asha"  # one of SCHEDULERS (search/scheduler.py)
    max_failures: int = 2
    # Wall seconds one driver session may run trials (search/deadline.py): no trial starts after it,
    # and trials still running stop at their next evaluation, recorded as pruned. None: until the
    # trial budget is done.
    time_budget_s: float | None = None
    track: str | None = None  # `--track mlflow[=URI]`: log trials to an experiment tracker (search/tracking.py)
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


def command_prefix(settings: Settings, *, space_path: Path, max_epochs: int) -> str:
    """The `train-one` call that rebuilds a run's data and budget; a trial's `--set`s complete it."""
    args = ["python", "-m", "search", "train-one", "--space", str(space_path.resolve())]
    if settings.data is not None:
        args += ["--data", str(Path(settings.data).resolve())]
    else:
        args += ["--synthetic", "--synthetic-rows", str(settings.synthetic_rows), "--synthetic-seed",
                 str(settings.synthetic_seed)]
    args += ["--folds", str(settings.folds), "--fold", str(settings.fold), "--max-seq-len", str(settings.max_seq_len),
             "--max-epochs", str(max_epochs), "--seed", str(settings.seed),
             "--threads", str(max(1, int(settings.cpus_per_trial)))]
    for item in settings.sets:  # launch's --set: the fixed values the run added to its space
        args += ["--set", item]
    return shlex.join(args)
