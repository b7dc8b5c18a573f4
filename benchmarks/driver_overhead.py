"""Driver overhead: how close does a search of sleep trials come to the theoretical minimum?

Part 1: N trials that each sleep a known time (split over E "epochs", one report per epoch) run through
the real driver assembly (`search.driver.build_tuner`: FidelityAwareOptunaSearch with a SQLite
study, ASHA, the leaderboard callback, per-epoch reports) on local Ray, and through a bare Optuna
loop (`study.optimize` with n_jobs threads and the same SQLite storage). ASHA's grace period equals
the budget so no trial is cut and the minimum is exact: sum of durations / slots.

Part 2 (`--real N`, N trials): real trials (`search.trainable.run_trial`: imports, data, a tiny
encoder trained on synthetic rows) through `search.driver.launch`, with cold workers (a new worker
process per trial) and warm ones (workers reused between trials, search.driver.REUSE_WORKERS), side
by side: wall time, the fraction of it during which every slot ran a trial, and the per-trial
overhead = (wall x slots - the trials' own time) / trials. Sleep trials run cold and warm too.

    python -m benchmarks.driver_overhead [--trials 8 --duration 10 --slots 2 --epochs 4] [--real 8]

Prints markdown tables; ratios compare runs made side by side in this one process.
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
from results.timeline import busy_fraction
from rundir.paths import RunFiles
from rundir.settings import Settings
from rundir.trials import load_records
from search import driver as search_driver
from search.callbacks import LeaderboardCallback
from search.driver import build_tuner, launch
from search.searcher import FidelityAwareOptunaSearch, make_sampler
from search.session import quiet_ray
from spaces.space import parse_space

SPACE = parse_space("params:\n  lr: {float: [1.0e-4, 1.0e-2], log: true}\n", source="benchmark")


def run_tune(args: argparse.Namespace, root: Path, *, warm: bool) -> tuple[float, float]:
    """Wall seconds of the search, and the fraction of it during which every slot ran a trial."""
    search_driver.REUSE_WORKERS = warm
    files = RunFiles(root / f"tune-{warm}")
    files.root.mkdir(parents=True)
    settings = Settings(num_samples=args.trials, max_epochs=args.epochs, grace_period=args.epochs,
                        max_concurrent=args.slots, cpus_per_trial=1, storage_path=str(root), name=f"tune-{warm}")
    searcher = FidelityAwareOptunaSearch(SPACE, storage=optuna.storages.RDBStorage(files.study_url),
                                         study_name=f"tune-{warm}", seed=0)
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


REAL_SPACE = """
fixed: {hidden_size: 32, num_layers: 1, num_heads: 2, intermediate_size: 64, pooler: mean, batch_size: 32}
params:
  lr: {float: [1.0e-4, 1.0e-2], log: true}
"""


def run_real(args: argparse.Namespace, root: Path, *, warm: bool) -> tuple[float, float, float]:
    """(wall s, all-slots-busy fraction, overhead s per trial) of `args.real` real trials."""
    search_driver.REUSE_WORKERS = warm
    (root / "real.yaml").write_text(REAL_SPACE)
    settings = Settings(space=str(root / "real.yaml"), synthetic_rows=2000, max_seq_len=48, num_samples=args.real,
                        max_epochs=args.epochs, grace_period=args.epochs, max_concurrent=args.slots,
                        cpus_per_trial=1, storage_path=str(root), name=f"real-{warm}", sampler="random")
    started = time.perf_counter()
    _, frame = launch(settings, out=lambda line: None)
    wall = time.perf_counter() - started
    records = load_records(RunFiles(root / f"real-{warm}")).values()
    own = sum(r.time_s for r in records)
    return wall, busy_fraction(records, args.slots), (wall * args.slots - own) / args.real


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per trial")
    parser.add_argument("--slots", type=int, default=2, help="trials at once")
    parser.add_argument("--epochs", type=int, default=4, help="reports per trial")
    parser.add_argument("--real", type=int, default=0, help="also run this many real trials, cold and warm")
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
            cold_wall, cold_busy = run_tune(args, root, warm=False)
            tune_wall, busy = run_tune(args, root, warm=True)
        finally:
            ray.shutdown()
        bare_wall = run_bare_optuna(args, root)
        real = {}
        if args.real:
            ray.init(address="local", num_cpus=args.slots, include_dashboard=False, logging_level="ERROR")
            try:
                real = {warm: run_real(args, root, warm=warm) for warm in (False, True)}
            finally:
                ray.shutdown()
    real_import = import_seconds("search.trainable")

    print(f"\n{args.trials} trials x {args.duration:g} s ({args.epochs} reports each), {args.slots} slots; "
          f"theoretical minimum {minimum:.1f} s; Ray start-up {ray_init:.1f} s (not included below)\n")
    print("| driver | wall s | wall / minimum | overhead per trial s |")
    print("|---|---|---|---|")
    for name, wall in [("Ray Tune + FidelityAwareOptunaSearch + ASHA + SQLite + leaderboard, cold workers",
                        cold_wall),
                       ("the same, warm workers (reused between trials)", tune_wall),
                       ("bare Optuna loop (threads) + SQLite", bare_wall)]:
        per_trial = (wall - minimum) * args.slots / args.trials
        print(f"| {name} | {wall:.1f} | {wall / minimum:.3f} | {per_trial:.2f} |")
    print(f"\nAll {args.slots} slots ran a trial {cold_busy:.0%} of the cold search, {busy:.0%} of the warm one.")
    print(f"A new worker imports search.trainable (torch, transformers): {real_import:.1f} s on this machine.")
    if real:
        print(f"\n{args.real} real trials (tiny encoder, 2,000 synthetic rows, {args.epochs} epochs), "
              f"{args.slots} slots:\n")
        print("| workers | wall s | all slots busy | overhead per trial s |")
        print("|---|---|---|---|")
        for warm, (wall, busy_real, overhead) in real.items():
            print(f"| {'warm' if warm else 'cold'} | {wall:.1f} | {busy_real:.0%} | {overhead:.2f} |")
        print(f"\nwarm / cold wall: {real[True][0] / real[False][0]:.3f}")


if __name__ == "__main__":
    main()
