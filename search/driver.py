"""Assemble and run a search: data -> Tuner(trial, FidelityAwareOptunaSearch, ASHA) -> leaderboard.

`launch(settings)` is the whole flow of `python -m search launch`; `build_tuner` is the Tuner
assembly on its own, shared with benchmarks/driver_overhead.py.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import shlex
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler

from model import metrics as M
from model.data import EncodedData, prepare_data, read_table, resolve_train_path
from model.errors import ConfigError
from model.synthetic import DEFAULT_ROWS, synthesize
from results.export import write_leaderboard
from results.files import RunFiles, atomic_write_json, atomic_write_text
from search import preflight
from search.callbacks import LeaderboardCallback, ProgressPrinter
from search.searcher import FidelityAwareOptunaSearch
from search.trainable import run_trial
from spaces.space import SearchSpace, load_space, resolve_space_path

DEFAULT_MAX_EPOCHS = 4
REPO_ROOT = Path(__file__).resolve().parent.parent


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
    max_failures: int = 2
    seed: int = 0
    folds: int = 5
    fold: int = 0
    max_seq_len: int = 128


def resolve_max_epochs(settings: Settings, space: SearchSpace) -> int:
    if settings.max_epochs is not None:
        return settings.max_epochs
    return int(space.fixed.get("max_epochs", DEFAULT_MAX_EPOCHS))


def load_data(settings: Settings) -> EncodedData:
    """Read (or generate) and encode the data once, in the driver."""
    if settings.data is not None:
        path = resolve_train_path(settings.data)
        frame, source = read_table(path), str(path.resolve())
    else:
        frame, _ = synthesize(settings.synthetic_rows, seed=settings.synthetic_seed)
        source = f"synthetic(rows={settings.synthetic_rows}, seed={settings.synthetic_seed})"
    return prepare_data(frame, folds=settings.folds, fold=settings.fold, seed=settings.seed,
                        max_seq_len=settings.max_seq_len, source=source)


def default_name(space_path: Path) -> str:
    return f"{space_path.stem}-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"


def ensure_ray() -> bool:
    """Start a local Ray unless one is already running in this process; True if we started it."""
    if ray.is_initialized():
        return False
    ray.init(include_dashboard=False, logging_level="WARNING", configure_logging=True)
    return True


def concurrency(settings: Settings) -> int:
    """The number of trials the cluster holds at once (at least 1), or --max-concurrent."""
    if settings.max_concurrent is not None:
        return settings.max_concurrent
    total = ray.cluster_resources()
    slots = int(total.get("CPU", 1) // settings.cpus_per_trial)
    if settings.gpus_per_trial > 0:
        slots = min(slots, int(total.get("GPU", 0) // settings.gpus_per_trial))
    return max(1, slots)


def build_tuner(trainable: Callable, *, searcher: tune.search.Searcher, files: RunFiles, max_epochs: int,
                settings: Settings, callbacks: list[tune.Callback]) -> tune.Tuner:
    resources = {"cpu": settings.cpus_per_trial, "gpu": settings.gpus_per_trial}
    scheduler = ASHAScheduler(time_attr=M.TIME_ATTR, metric=M.OBJECTIVE, mode="max", max_t=max_epochs,
                              grace_period=settings.grace_period, reduction_factor=settings.reduction_factor)
    return tune.Tuner(
        tune.with_resources(trainable, resources),
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=settings.num_samples,
            # Bounded so TPE asks only as trials free up; unbounded it degrades to random search.
            max_concurrent_trials=concurrency(settings),
            reuse_actors=False,
            trial_dirname_creator=lambda trial: f"trial_{trial.trial_id}",
        ),
        run_config=tune.RunConfig(
            name=files.root.name,
            storage_path=str(files.root.parent.resolve()),
            failure_config=tune.FailureConfig(max_failures=settings.max_failures),
            # The latest checkpoint is always kept (to resume); num_to_keep=1 adds the best one.
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1, checkpoint_score_attribute=M.OBJECTIVE,
                                                    checkpoint_score_order="max"),
            callbacks=callbacks,
            verbose=0,
        ),
    )


def _git_revision() -> str | None:
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                             timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO_ROOT, capture_output=True,
                               text=True, timeout=5).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _versions() -> dict[str, str]:
    import sklearn
    import torch
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__, "ray": ray.__version__,
            "optuna": optuna.__version__, "transformers": transformers.__version__,
            "scikit-learn": sklearn.__version__, "pandas": pd.__version__}


def write_run_record(files: RunFiles, *, settings: Settings, space: SearchSpace, space_path: Path,
                     data: EncodedData, max_epochs: int, argv: list[str] | None) -> None:
    files.root.mkdir(parents=True)
    atomic_write_text(files.space_yaml, space_path.read_text(encoding="utf-8"))
    atomic_write_json(files.run_json, {
        "name": files.root.name,
        "created": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": shlex.join(["python", "-m", "search", *(argv or [])]),
        "settings": asdict(settings),
        "space": str(space_path.resolve()),
        "searched": space.searched,
        "max_epochs": max_epochs,
        "seed": settings.seed,
        "fold": settings.fold,
        "data": {"source": data.source, "train_rows": len(data.train), "dev_rows": len(data.dev),
                 "labels": data.num_labels, "vocab": len(data.vocab), "max_seq_len": data.max_seq_len},
        "versions": _versions(),
        "git_revision": _git_revision(),
        "host": platform.node(),
    })


def launch(settings: Settings, *, argv: list[str] | None = None,
           out: Callable[[str], Any] = print) -> tuple[RunFiles, pd.DataFrame]:
    """Run a whole search and return its run files and final leaderboard."""
    preflight.check_settings(settings)
    space_path = resolve_space_path(settings.space)
    space = load_space(space_path)
    max_epochs = resolve_max_epochs(settings, space)
    preflight.check_budget(max_epochs=max_epochs, grace_period=settings.grace_period)
    overrides = {"max_epochs": max_epochs, "seed": settings.seed}
    preflight.check_space(space, overrides)
    files = RunFiles(Path(settings.storage_path) / (settings.name or default_name(space_path)))
    if files.root.exists():
        raise ConfigError(f"{files.root} already exists: pick another --name (or remove that directory)")
    data = load_data(settings)

    quiet_ray()
    started_ray = ensure_ray()
    try:
        preflight.check_resources(cpus_per_trial=settings.cpus_per_trial,
                                  gpus_per_trial=settings.gpus_per_trial, nodes=ray.nodes())
        write_run_record(files, settings=settings, space=space, space_path=space_path, data=data,
                         max_epochs=max_epochs, argv=argv)
        out(f"RUN_DIR {files.root}")
        out(f"data: {data.source}: {len(data.train)} train / {len(data.dev)} dev rows (fold "
            f"{settings.fold} of {settings.folds}), {data.num_labels} labels; space {space_path.name}: "
            f"{len(space.searched)} searched parameters, {len(space.warm_start)} warm-start points")
        out(f"search: {settings.num_samples} trials, up to {max_epochs} epochs each, ASHA grace "
            f"{settings.grace_period} / reduction {settings.reduction_factor:g}, "
            f"{concurrency(settings)} at a time")
        searcher = FidelityAwareOptunaSearch(space, storage=optuna.storages.RDBStorage(files.study_url),
                                             study_name=files.root.name, seed=settings.seed)
        board = LeaderboardCallback(files, max_epochs=max_epochs, param_names=space.searched,
                                    seed=settings.seed, fold=settings.fold)
        trainable = tune.with_parameters(run_trial, data=data, space=space, overrides=overrides)
        tuner = build_tuner(trainable, searcher=searcher, files=files, max_epochs=max_epochs,
                            settings=settings, callbacks=[board, ProgressPrinter(
                                max_epochs=max_epochs, num_samples=settings.num_samples)])
        tuner.fit()
        frame = write_leaderboard(files, board.records, max_epochs=max_epochs, param_names=space.searched,
                                  seed=settings.seed, fold=settings.fold)
    finally:
        if started_ray:
            ray.shutdown()
    out(summary(frame, files))
    return files, frame


def summary(frame: pd.DataFrame, files: RunFiles, top: int = 5) -> str:
    counts = frame["status"].value_counts().to_dict()
    shown = ["rank", "optuna_number", "status", "epochs", M.LEVEL2_MACRO_F1, M.LEVEL1_MACRO_F1] + [
        c for c in frame.columns if c.startswith("param.")]
    table = frame[shown].head(top).rename(columns=lambda c: c.removeprefix("param.")).to_string(
        index=False, float_format=lambda x: f"{x:.4g}", na_rep="-")
    return (f"\n{len(frame)} trials: " + ", ".join(f"{n} {s}" for s, n in counts.items())
            + f"\n\ntop {min(top, len(frame))}:\n{table}\n\nleaderboard: {files.leaderboard_csv}"
            + f"\nexport: python -m search export {files.root} --out leaderboard.csv")


def quiet_ray() -> None:
    """Environment defaults for the driver process (read by Ray when it starts and while it runs)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Trials checkpoint every epoch on purpose (to resume); Ray's warning that this forces frequent
    # experiment snapshots is noise here.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
