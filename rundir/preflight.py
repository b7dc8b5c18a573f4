"""Checks that run before Ray starts, so bad input fails in a second with a message saying the fix."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

from model.data import check_fold_flags
from model.encoders import check_checkpoint, check_checkpoint_used, check_vocab_coverage
from model.errors import ConfigError
from rundir.paths import is_uri, name_problem
from rundir.settings import SAMPLERS, SCHEDULERS
from spaces.space import SearchSpace, SpaceError, check_combinations, parse_sets

# Fields the driver owns: they are flags, identical for every trial, never searched.
DRIVER_FIELDS = {"max_epochs": "--max-epochs", "seed": "--seed"}
# Fields that decide which checkpoint directory a trial loads, and whether it fits (an embedding
# size must match a vectors checkpoint's).
CHECKPOINT_FIELDS = ("encoder", "checkpoint", "embedding_dim")


def check_settings(s: Any) -> None:
    """`s` is a `rundir.settings.Settings`."""
    for flag, value in (("--reduction-factor", s.reduction_factor), ("--cpus-per-trial", s.cpus_per_trial),
                        ("--gpus-per-trial", s.gpus_per_trial)):
        if not math.isfinite(value):  # nan passes every comparison below, inf most of them
            raise ConfigError(f"{flag} is {value}, but must be a finite number")
    if s.num_samples < 1:
        raise ConfigError(f"--num-samples is {s.num_samples}, but must be >= 1")
    if s.max_epochs is not None and s.max_epochs < 1:
        raise ConfigError(f"--max-epochs is {s.max_epochs}, but must be >= 1")
    if s.grace_period < 1:
        raise ConfigError(f"--grace-period is {s.grace_period}, but must be >= 1 (epochs before ASHA "
                          "may stop a trial)")
    if s.reduction_factor <= 1:
        raise ConfigError(f"--reduction-factor is {s.reduction_factor}, but must be > 1 (ASHA keeps "
                          "1/reduction_factor of the trials at each rung; 2 to 4 is usual)")
    if s.cpus_per_trial <= 0:
        raise ConfigError(f"--cpus-per-trial is {s.cpus_per_trial}, but must be > 0")
    if s.gpus_per_trial < 0:
        raise ConfigError(f"--gpus-per-trial is {s.gpus_per_trial}, but must be >= 0")
    if s.max_concurrent is not None and s.max_concurrent < 1:
        raise ConfigError(f"--max-concurrent is {s.max_concurrent}, but must be >= 1")
    if s.max_failures < 0:
        raise ConfigError(f"--max-failures is {s.max_failures}, but must be >= 0")
    for name in parse_sets(s.sets):
        if name in DRIVER_FIELDS:
            raise ConfigError(f"--set {name}=...: `{name}` is set for all trials by {DRIVER_FIELDS[name]}; "
                              f"pass {DRIVER_FIELDS[name]} instead")
    if s.sampler not in SAMPLERS:
        raise ConfigError(f"--sampler is {s.sampler!r}; choose one of {', '.join(SAMPLERS)}")
    if s.scheduler not in SCHEDULERS:
        raise ConfigError(f"--scheduler is {s.scheduler!r}; choose one of {', '.join(SCHEDULERS)}")
    if s.time_budget_s is not None and not (math.isfinite(s.time_budget_s) and s.time_budget_s > 0):
        raise ConfigError(f"--time-budget is {s.time_budget_s} s, but must be a positive duration, e.g. 30m")
    if s.startup_trials is not None and s.startup_trials < 0:
        raise ConfigError(f"--startup-trials is {s.startup_trials}, but must be >= 0")
    check_data_flags(s)


def check_data_flags(s: Any) -> None:
    """The data and split flags `launch` and `train-one` share, before any data is read or made."""
    if s.data is not None and s.synthetic:
        raise ConfigError("--data and --synthetic exclude each other: pass one")
    if s.max_seq_len < 3:
        raise ConfigError(f"--max-seq-len is {s.max_seq_len}, but must be >= 3 ([CLS], a token, [SEP]; "
                          "128 covers the real texts)")
    for flag, value in (("--seed", s.seed), ("--synthetic-seed", s.synthetic_seed)):
        if value < 0:
            raise ConfigError(f"{flag} is {value}, but must be >= 0")
    check_fold_flags(folds=s.folds, fold=s.fold)


def check_run_location(s: Any) -> None:
    """A new run's RUN_DIR = <storage-path>/<name> (`s`: `Settings`): the name is a plain name, so the
    run stays under --storage-path, and the storage path is a directory this process can write."""
    if s.name is not None and (problem := name_problem(s.name)):
        raise ConfigError(f"--name {problem}; pass a plain name such as my-search (the run goes to "
                          "<storage-path>/<name>; choose the directory with --storage-path)")
    if is_uri(s.storage_path):
        return
    path = Path(s.storage_path)
    existing = next(p for p in (path, *path.absolute().parents) if p.exists())
    if not existing.is_dir():
        raise ConfigError(f"--storage-path {s.storage_path}: {existing} is a file, not a directory; pass a "
                          "directory (a missing one is created)")
    try:  # the only sure test of writability (root passes os.access on a read-only mount)
        tempfile.TemporaryDirectory(dir=existing).cleanup()
    except OSError as err:
        raise ConfigError(f"--storage-path {s.storage_path} is not writable ({existing}: {err.strerror}); pass a "
                          "directory you can write to") from None


def check_budget(*, max_epochs: int, grace_period: int) -> None:
    if grace_period > max_epochs:
        raise ConfigError(f"--grace-period {grace_period} is larger than the trial budget of {max_epochs} "
                          "epochs (--max-epochs): ASHA's first rung would come after the last epoch. "
                          "Lower --grace-period or raise --max-epochs")


def check_space(space: SearchSpace, overrides: dict[str, Any], *, max_seq_len: int | None = None) -> None:
    """Driver-owned fields are not searched, every warm-start point makes a valid config, and every
    checkpoint directory a trial may load is there and readable, with `max_seq_len` positions (the
    fixed one, each choice, each warm start)."""
    for param in space.params:
        if param.name in DRIVER_FIELDS:
            raise SpaceError(f"{space.path}: `{param.name}` is set for all trials by "
                             f"{DRIVER_FIELDS[param.name]}; remove it from params")
    check_combinations(space, overrides)  # again with the flags' max_epochs and seed
    points = {"(defaults)": {}, **space.warm_start}
    for name, point in points.items():
        try:
            # with each searched checkpoint a trial may draw: a fixed checkpoint encoder with a
            # searched `checkpoint` has no valid config without one
            for values in checkpoint_draws(space, point):
                space.config({**point, **values}, **overrides)
        except ConfigError as err:
            raise SpaceError(f"{space.path}: warm-start point {name!r} is not a valid config: {err}") from None
    # `TrialConfig` does no I/O, so this is where a missing or incomplete checkpoint directory is
    # found, on the driver before Ray starts, rather than as failed trials.
    try:
        check_checkpoint_used([space.config({**point, **values}, **overrides) for point in points.values()
                               for values in checkpoint_draws(space, point)])
    except ConfigError as err:
        raise SpaceError(f"{space.path}: {err}") from None
    checked: set[tuple[str, str, int]] = set()
    for name, point in points.items():
        for values in checkpoint_draws(space, point):
            shown = ", ".join(f"{k} = {v!r}" for k, v in values.items()) or "the fixed encoder and checkpoint"
            source = f"trials with {shown}" if name == "(defaults)" else f"warm-start point {name!r} ({shown})"
            try:
                cfg = space.config({**point, **values}, **overrides)
                if (cfg.encoder, cfg.checkpoint, cfg.embedding_dim) not in checked:
                    check_checkpoint(cfg, max_seq_len=max_seq_len)
                    checked.add((cfg.encoder, cfg.checkpoint, cfg.embedding_dim))
            except ConfigError as err:
                raise SpaceError(f"{space.path}: {source} cannot run: {err}") from None


def check_checkpoint_vocab(space: SearchSpace, overrides: dict[str, Any], vocab: tuple[str, ...]) -> None:
    """Every checkpoint a trial may load knows most of the run's tokens (`vocab`, of the loaded data)."""
    for point in {"(defaults)": {}, **space.warm_start}.values():
        for values in checkpoint_draws(space, point):
            check_vocab_coverage(space.config({**point, **values}, **overrides), vocab)


def checkpoint_draws(space: SearchSpace, point: dict[str, Any]) -> list[dict[str, Any]]:
    """Every assignment of the searched `CHECKPOINT_FIELDS` a trial starting from `point` (a
    warm-start point, or {}) can draw (see `SearchSpace.draws`)."""
    return space.draws(CHECKPOINT_FIELDS, point)


def check_resources(*, cpus_per_trial: float, gpus_per_trial: float, nodes: list[dict]) -> str | None:
    """`nodes`: `ray.nodes()` of the live ones. Fail if no node can hold one trial; return a note
    when the cluster has GPUs that --gpus-per-trial 0 leaves unused, else None."""
    alive = [n.get("Resources", {}) for n in nodes if n.get("Alive", True)]
    max_cpu = max((r.get("CPU", 0) for r in alive), default=0)
    max_gpu = max((r.get("GPU", 0) for r in alive), default=0)
    if cpus_per_trial > max_cpu:
        raise ConfigError(f"--cpus-per-trial is {cpus_per_trial}, but the largest node has {max_cpu:g} CPUs: "
                          "no trial could ever start. Lower --cpus-per-trial")
    if gpus_per_trial > max_gpu:
        raise ConfigError(f"--gpus-per-trial is {gpus_per_trial}, but the largest node has {max_gpu:g} GPUs: "
                          "no trial could ever start. Lower --gpus-per-trial (0 trains on CPU)")
    gpus = sum(r.get("GPU", 0) for r in alive)
    if gpus and not gpus_per_trial:
        return (f"note: the cluster has {gpus:g} GPU(s), but --gpus-per-trial is 0: every trial trains on "
                "the CPU. Pass --gpus-per-trial 1 (or 0.5 to share a GPU between two trials) to use them")
    return None
