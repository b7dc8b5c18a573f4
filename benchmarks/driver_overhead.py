"""Driver overhead: how close does a search of sleep trials come to the theoretical minimum?

N trials that each sleep a known time (split over E "epochs", one report per epoch) run through
the real driver assembly (`search.driver.build_tuner`: FidelityAwareOptunaSearch with a SQLite
study, ASHA, the leaderboard callback, per-epoch reports) on local Ray, and through a bare Optuna
loop (`study.optimize` with n_jobs threads and the same SQLite storage). ASHA's grace period equals
the budget so no trial is cut and the minimum is exact: sum of durations / slots.

    python -m benchmarks.driver_overhead [--trials 8 --duration 10 --slots 2 --epochs 4]

Prints a markdown table; ratios compare runs made side by side in this one process.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import ray
from ray import tune

from benchmarks.sleep_trial import sleep_trial
from results.files import RunFiles
from results.timeline import busy_fraction
from search.callbacks import LeaderboardCallback
from search.driver import build_tuner, quiet_ray
from search.searcher import FidelityAwareOptunaSearch, make_sampler
from search.settings import Settings
from spaces.space import parse_space

SPACE = parse_space("params:\n  lr: {float: [1.0e-4, 1.0e-2], log: true}\n", source="benchmark")


def run_tune(args: argparse.Namespace, root: Path) -> tuple[float, float]:
    """Wall seconds of the search, and the fraction of it during which every slot ran a trial."""
    files = RunFiles(root / "tune")
    files.root.mkdir(parents=True)
    settings = Settings(num_samples=args.trials, max_epochs=args.epochs, grace_period=args.epochs,
                        max_concurrent=args.slots, cpus_per_trial=1, storage_path=str(root), name="tune")
    searcher = FidelityAwareOptunaSearch(SPACE, storage=optuna.storages.RDBStorage(files.study_url),
                                         study_name="tune", seed=0)
    board = LeaderboardCallback(files, max_epochs=args.epochs, param_names=SPACE.searched, seed=0, fold=0)
    trainable = tune.with_parameters(sleep_trial, duration=args.duration, epochs=args.epochs)
    tuner = build_tuner(trainable, searcher=searcher, files=files, max_epochs=args.epochs, settings=settings,
                        callbacks=[board])
    started = time.perf_counter()
    tuner.fit()
    return time.perf_counter() - started, busy_fraction(board.records.values(), args.slots)


def run_bare_optuna(args: argparse.Namespace, root: Path) -> float:
    study = optuna.create_study(storage=f"sqlite:///{root / 'bare.db'}", direction="maximize",
                                sampler=make_sampler(seed=0))

    def objective(trial: optuna.Trial) -> float:
        lr = SPACE.sample(trial)["lr"]
        for epoch in range(1, args.epochs + 1):
            time.sleep(args.duration / args.epochs)
            trial.report(lr * 100 * epoch / args.epochs, epoch)
        return lr * 100

    started = time.perf_counter()
    study.optimize(objective, n_trials=args.trials, n_jobs=args.slots)
    return time.perf_counter() - started


def import_seconds(module: str) -> float:
    """Wall time of a fresh interpreter importing `module` (what a new Ray worker pays per trial)."""
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                check=True).stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per trial")
    parser.add_argument("--slots", type=int, default=2, help="trials at once")
    parser.add_argument("--epochs", type=int, default=4, help="reports per trial")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    quiet_ray()
    minimum = args.trials * args.duration / args.slots

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        ray.init(address="local", num_cpus=args.slots, include_dashboard=False, logging_level="ERROR")
        ray_init = time.perf_counter() - started
        try:
            tune_wall, busy = run_tune(args, root)
        finally:
            ray.shutdown()
        bare_wall = run_bare_optuna(args, root)
    real_import = import_seconds("search.trainable")

    print(f"\n{args.trials} trials x {args.duration:g} s ({args.epochs} reports each), {args.slots} slots; "
          f"theoretical minimum {minimum:.1f} s; Ray start-up {ray_init:.1f} s (not included below)\n")
    print("| driver | wall s | wall / minimum | overhead per trial s |")
    print("|---|---|---|---|")
    for name, wall in [("Ray Tune + FidelityAwareOptunaSearch + ASHA + SQLite + leaderboard", tune_wall),
                       ("bare Optuna loop (threads) + SQLite", bare_wall)]:
        per_trial = (wall - minimum) * args.slots / args.trials
        print(f"| {name} | {wall:.1f} | {wall / minimum:.3f} | {per_trial:.2f} |")
    print(f"\nAll {args.slots} slots ran a trial {busy:.0%} of the Ray Tune search (the rest: workers starting).")
    print(f"A real trial's worker also imports search.trainable (torch, transformers): {real_import:.1f} s "
          "per trial on this machine, on top of the overhead above.")


if __name__ == "__main__":
    main()
