"""Search efficiency: which sampler + scheduler finds a good config with the fewest trial-epochs?

Reads a learning-curve table (benchmarks/record_curves.py), fits a surrogate on it (random forests
over the encoded config -> per-epoch level-2 F1 and epoch time; its held-out rank correlation is
printed), then replays searches through the REAL driver (`search.driver.launch`: the searcher with
its duplicate guard, ASHA or FIFO, the callbacks and the leaderboard, on local Ray) with a trial that
reports the surrogate's curve instead of training (benchmarks/surrogate_trial.py). Every method gets
the same budget in trial-epochs: a search that has not spent it yet is resumed with more trials, and
its trials' epochs are counted in Optuna order (one trial at a time, so that is the order they ran)
up to the budget. The clock is simulated: the sum of the surrogate's epoch times.

    python -m benchmarks.search_efficiency benchmarks/data/curves_seed_tiny.csv --seeds 10 \\
        [--methods tpe+asha,random+fifo] [--budget-trials 20] [--jobs 3] [--out benchmarks/out/search_efficiency]

The table gives, per method over its seeds: trials run, the median best level-2 F1 after a third
of the budget (`best_at_third`), the median mean of the best so far over the budget (`mean_best`:
the area under the anytime curve divided by the budget, one number for the whole curve), the final
best level-2 F1 (median and quartiles), the trial-epochs and simulated seconds until the best so
far reached the target (the target is random+fifo's lower median final best; `reached` counts the
seeds that got there; these medians are lower medians, inf when fewer than half of the seeds got
there), the speed-up (random+fifo's median trial-epochs to the target / the method's; 0 when not
reached), the regret (the best level-2 F1 in the curve table minus the median final best: the
surrogate may predict above the table, so it can be negative) and the wall seconds of one replay.
A replay of 100 trial-epochs (25-56 trials) takes 15-70 s on a 2-core machine, mostly waiting on
Ray: `--jobs N` runs N replays at a time (each in its own process with its own local Ray; the
results are the same), and fewer --seeds or --methods make a quick try.

Each finished replay is kept under --out as replays/METHOD-SEED.json, bound to the curve table's
and the space's sha256 and the settings: the same command after a kill (or with more --seeds or
--methods) replays only what is missing.

Prints the surrogate's validation and a markdown table; writes runs.csv (one row per method and
seed), summary.csv (the table) and search_efficiency.png (best-so-far level-2 F1 vs budget: median
and inter-quartile band over seeds) under --out.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import math
import multiprocessing
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import ray
import yaml

from benchmarks.curves import Surrogate, best_in_table, fit_surrogate, read_curves, validate_surrogate
from benchmarks.surrogate_trial import cached_surrogate, surrogate_trial
from model import metrics as M
from model.errors import ConfigError, DataError
from rundir.io import atomic_write_json, read_json
from rundir.paths import RunFiles
from rundir.settings import SAMPLERS, SCHEDULERS, Settings
from rundir.trials import load_records
from search.cluster import connect
from search.driver import launch, resume
from search.session import quiet_ray
from spaces.space import load_space, resolve_space_path
from stages.ensemble import file_sha256

# GP rather than `auto`: on a space with choices or conditional parameters (spaces/seed.yaml) `auto`
# resolves to TPE, which tpe+asha already covers.
METHODS = ("tpe+asha", "random+asha", "tpe+fifo", "random+fifo", "gp+asha")
REFERENCE = "random+fifo"  # the target is its median final best, and speed-ups are relative to it
SUMMARY_COLUMNS = ["method", "seeds", "budget_epochs", "trials", "best_at_third", "mean_best", "final_best",
                   "final_best_q25", "final_best_q75", "reached", "epochs_to_target", "sim_s_to_target", "speedup",
                   "regret", "wall_s"]
RUN_COLUMNS = ["method", "seed", "budget_epochs", "trials", "best_at_third", "mean_best", "final_best",
               "epochs_to_target", "sim_s_to_target", "wall_s"]


def parse_methods(text: str) -> list[tuple[str, str]]:
    methods = []
    for item in text.split(","):
        sampler, _, scheduler = item.strip().partition("+")
        if sampler not in SAMPLERS or scheduler not in SCHEDULERS:
            raise ConfigError(f"--methods: {item!r} is not SAMPLER+SCHEDULER with a sampler of {', '.join(SAMPLERS)} "
                              f"and a scheduler of {', '.join(SCHEDULERS)}, e.g. tpe+asha")
        methods.append((sampler, scheduler))
    return methods


def expected_epochs(max_epochs: int, grace_period: int, reduction_factor: float, scheduler: str) -> float:
    """Epochs an average trial runs: all of them under FIFO; under ASHA about 1/rf of the trials
    reaching a rung go on to the next (rungs at grace * rf^k). Hyperband and the median rule stop
    fewer trials early, so ASHA's figure, a lower bound for them, asks for enough trials."""
    if scheduler == "fifo":
        return float(max_epochs)
    total, rung, fraction, previous = 0.0, float(grace_period), 1.0, 0.0
    while previous < max_epochs:
        rung = min(rung, max_epochs)
        total += fraction * (rung - previous)
        previous, rung, fraction = rung, rung * reduction_factor, fraction / reduction_factor
    return total


def trials_for(epochs: int, per_trial: float) -> int:
    """Trials to ask for to spend `epochs`: a margin over the estimate, since a short search costs
    a resume (a Ray restore) and surplus trials only a worker each."""
    return max(1, math.ceil(epochs / per_trial * 1.1))


def run_events(files: RunFiles, surrogate: Surrogate) -> pd.DataFrame:
    """Every reported epoch of the run in the order it ran (trials in Optuna order, one at a time),
    with its simulated seconds."""
    records = sorted(load_records(files).values(), key=lambda r: r.optuna_number)
    if not records:
        return pd.DataFrame(columns=["trial", M.EPOCH, M.LEVEL2_MACRO_F1, "seconds"])
    _, seconds = surrogate.predict([r.params for r in records])
    return pd.DataFrame([(r.optuna_number, h[M.EPOCH], h[M.LEVEL2_MACRO_F1], seconds[i][int(h[M.EPOCH]) - 1])
                         for i, r in enumerate(records) for h in r.history],
                        columns=["trial", M.EPOCH, M.LEVEL2_MACRO_F1, "seconds"])


def replay(sampler: str, scheduler: str, seed: int, *, args: argparse.Namespace, space_path: Path,
           surrogate_path: Path, budget: int, storage: Path) -> dict:
    """One search through the real driver, resumed until it has spent `budget` trial-epochs."""
    surrogate = cached_surrogate(str(surrogate_path))
    per_trial = expected_epochs(surrogate.epochs, args.grace_period, args.reduction_factor, scheduler)
    trial_fn = functools.partial(surrogate_trial, surrogate_path=str(surrogate_path), time_scale=args.time_scale)
    settings = Settings(space=str(space_path), synthetic_rows=args.synthetic_rows, name=f"{sampler}-{scheduler}-{seed}",
                        storage_path=str(storage), num_samples=trials_for(budget, per_trial),
                        max_epochs=surrogate.epochs, grace_period=args.grace_period,
                        reduction_factor=args.reduction_factor, max_concurrent=1, sampler=sampler,
                        scheduler=scheduler, startup_trials=args.startup_trials, seed=seed, max_seq_len=16)
    started = time.perf_counter()
    with (storage / f"{settings.name}.log").open("w") as log, contextlib.redirect_stdout(log):
        files, _ = launch(settings, out=print, trial_fn=trial_fn)
        while (len(events := run_events(files, surrogate)) < budget
               and not read_json(files.run_json).get("space_exhausted")):
            more = len(load_records(files)) + trials_for(budget - len(events), per_trial)
            resume(files.root, num_samples=more, out=print, trial_fn=trial_fn)
    wall = time.perf_counter() - started
    events = events.iloc[:budget]
    return {"method": f"{sampler}+{scheduler}", "seed": seed, "budget_epochs": len(events),
            "trials": events["trial"].nunique(), "best": np.maximum.accumulate(events[M.LEVEL2_MACRO_F1].to_numpy()),
            "clock": np.cumsum(events["seconds"].to_numpy()), "wall_s": wall}


def _quiet() -> None:
    """Logs of the replays' driver: Optuna's errors only (not a warning per trial from GP on a
    conditional space) and Ray's quiet settings; in the main process and in each job process."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    quiet_ray()


def _start_job_process() -> None:
    _quiet()
    connect(None)  # this process's own local Ray, kept for every replay it runs


def _run_job(replay_one, job: tuple[str, str, int]) -> tuple[tuple[str, str, int], dict]:
    return job, replay_one(*job)


def replay_all(jobs: list[tuple[str, str, int]], replay_one, processes: int):
    """Yield (job, its replay) as each finishes. One process runs them in turn on one local Ray;
    `processes` > 1 runs that many at a time, each in a process with its own local Ray. A replay runs
    one trial at a time and waits on Ray more than it computes, so a few processes help even on 2
    cores. A pool of processes rather than threads: the driver (Tuner, signal handlers, the
    module-level Ray connection) is made for one search per process."""
    if processes <= 1:
        started = connect(None)  # one local Ray for every replay (launch keeps a running one)
        try:
            for job in jobs:
                yield _run_job(replay_one, job)
        finally:
            if started:
                ray.shutdown()
        return
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=processes, mp_context=context, initializer=_start_job_process) as pool:
        futures = [pool.submit(_run_job, replay_one, job) for job in jobs]
        for future in as_completed(futures):
            yield future.result()


def replay_key(args: argparse.Namespace, space_path: Path, budget: int) -> dict:
    """What a replay's result depends on, besides its method and seed. The startup trials are in it
    only when set, so replays kept before --startup-trials existed (the default) still match."""
    startup = {} if args.startup_trials is None else {"startup_trials": args.startup_trials}
    return {"curves_sha256": file_sha256(Path(args.curves)), "space_sha256": file_sha256(space_path),
            "budget_epochs": budget, "grace_period": args.grace_period, "reduction_factor": args.reduction_factor,
            "surrogate_seed": args.surrogate_seed, "synthetic_rows": args.synthetic_rows, **startup}


def replay_file(out: Path, sampler: str, scheduler: str, seed: int) -> Path:
    return out / "replays" / f"{sampler}+{scheduler}-{seed}.json"


def save_replay(path: Path, run: dict, key: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, {"key": key, **run, "best": run["best"].tolist(), "clock": run["clock"].tolist()})


def load_replay(path: Path, key: dict) -> dict | None:
    """The replay kept at `path` if it was made with `key`, else None."""
    try:
        saved = read_json(path)
    except (OSError, ValueError):
        return None
    if not isinstance(saved, dict) or saved.pop("key", None) != key:
        return None
    return {**saved, "best": np.asarray(saved["best"], dtype=float), "clock": np.asarray(saved["clock"], dtype=float)}


def to_target(run: dict, target: float) -> tuple[float, float]:
    """(trial-epochs, simulated seconds) until the best so far reached `target`; inf if never."""
    reached = np.flatnonzero(run["best"] >= target - 1e-12)
    return (float(reached[0] + 1), float(run["clock"][reached[0]])) if len(reached) else (math.inf, math.inf)


def lower_median(values) -> float:
    """The median that is one of the values (the lower middle one of an even count). The target is
    the reference's lower median final best, so at least half of its seeds reach it and its median
    time to target is finite; a time is inf for a seed that never reached the target."""
    return float(np.quantile(np.asarray(values, dtype=float), 0.5, method="lower"))


def summarise(runs: list[dict], table_best: float) -> tuple[pd.DataFrame, pd.DataFrame, float, str]:
    """(per-run frame, per-method table, target, the reference method: REFERENCE, or the first
    method when REFERENCE did not run)."""
    finals = pd.DataFrame([{"method": r["method"], "final": r["best"][-1]} for r in runs])
    reference = REFERENCE if REFERENCE in set(finals["method"]) else finals["method"].iloc[0]
    target = lower_median(finals.loc[finals["method"] == reference, "final"])
    rows = []
    for r in runs:
        epochs, seconds = to_target(r, target)
        rows.append({"method": r["method"], "seed": r["seed"], "budget_epochs": r["budget_epochs"],
                     "trials": r["trials"], "best_at_third": r["best"][max(0, len(r["best"]) // 3 - 1)],
                     "mean_best": float(np.mean(r["best"])),
                     "final_best": r["best"][-1], "epochs_to_target": epochs,
                     "sim_s_to_target": seconds, "wall_s": r["wall_s"]})
    per_run = pd.DataFrame(rows, columns=RUN_COLUMNS)
    reference_epochs = lower_median(per_run.loc[per_run["method"] == reference, "epochs_to_target"])
    table = []
    for method, group in per_run.groupby("method", sort=False):
        epochs = lower_median(group["epochs_to_target"])
        table.append({"method": method, "seeds": len(group), "budget_epochs": int(group["budget_epochs"].min()),
                      "trials": group["trials"].median(), "best_at_third": group["best_at_third"].median(),
                      "mean_best": group["mean_best"].median(),
                      "final_best": group["final_best"].median(),
                      "final_best_q25": group["final_best"].quantile(0.25),
                      "final_best_q75": group["final_best"].quantile(0.75),
                      "reached": f"{int(np.isfinite(group['epochs_to_target']).sum())}/{len(group)}",
                      "epochs_to_target": epochs, "sim_s_to_target": lower_median(group["sim_s_to_target"]),
                      "speedup": reference_epochs / epochs if math.isfinite(epochs) else 0.0,
                      "regret": table_best - group["final_best"].median(), "wall_s": group["wall_s"].median()})
    return per_run, pd.DataFrame(table, columns=SUMMARY_COLUMNS), target, reference


def draw(runs: list[dict], target: float, reference: str, table_best: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method in dict.fromkeys(r["method"] for r in runs):
        curves = np.vstack([r["best"] for r in runs if r["method"] == method])
        x = np.arange(1, curves.shape[1] + 1)
        q25, median, q75 = np.quantile(curves, [0.25, 0.5, 0.75], axis=0)
        ax.plot(x, median, label=method)
        ax.fill_between(x, q25, q75, alpha=0.2)
    # Every method climbs from the first trials' scores to near the target within a few trials; the
    # differences are in the rest, so the axis starts at the lowest median a tenth into the budget.
    tenth = max(1, len(runs[0]["best"]) // 10) - 1
    low = min(np.median(np.vstack([r["best"] for r in runs if r["method"] == m]), axis=0)[tenth]
              for m in dict.fromkeys(r["method"] for r in runs))
    ax.set_ylim(max(0.0, low - 0.01), max(table_best, target) + 0.01)
    ax.axhline(target, color="grey", linestyle="--", linewidth=1, label=f"target ({reference} median final best)")
    ax.axhline(table_best, color="black", linestyle=":", linewidth=1, label="best config in the table")
    ax.set_xlabel("budget spent (trial-epochs)")
    ax.set_ylabel("best level-2 macro-F1 so far")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def space_without_warm_starts(space: str, out: Path) -> Path:
    """A copy of the space without its warm-start points: they would be every method's first
    trials and hide the samplers' differences."""
    spec = yaml.safe_load(resolve_space_path(space).read_text(encoding="utf-8"))
    spec.pop("warm_start", None)
    path = out / "space.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def run(args: argparse.Namespace) -> pd.DataFrame:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    methods = parse_methods(args.methods)
    frame = read_curves(args.curves)
    space = load_space(args.space)
    check = validate_surrogate(frame, space, seed=args.surrogate_seed)
    print(f"surrogate: {check['configs']} configs, {check['folds']}-fold held out: Spearman rank correlation of "
          f"final-epoch level-2 F1 {check['spearman_final_f1']:.3f} (MAE {check['mae_final_f1']:.4f}); "
          f"epoch time MAE {check['mae_epoch_s']:.2f} s", flush=True)
    surrogate = fit_surrogate(frame, space, seed=args.surrogate_seed)
    surrogate_path = out / "surrogate.pkl"
    surrogate.save(surrogate_path)
    space_path = resolve_space_path(args.space) if args.warm_start else space_without_warm_starts(args.space, out)
    budget = args.budget_trials * surrogate.epochs
    table_best = best_in_table(frame)
    print(f"budget: {budget} trial-epochs per search ({args.budget_trials} full trials of {surrogate.epochs} "
          f"epochs); {len(methods)} methods x {args.seeds} seeds", flush=True)

    _quiet()
    with tempfile.TemporaryDirectory(prefix="search-efficiency-") as tmp:
        storage = Path(args.keep_runs) if args.keep_runs else Path(tmp)
        storage.mkdir(parents=True, exist_ok=True)
        jobs = [(sampler, scheduler, seed) for sampler, scheduler in methods for seed in range(args.seeds)]
        key = replay_key(args, space_path, budget)
        done = {job: load_replay(replay_file(out, *job), key) for job in jobs}
        kept = sum(r is not None for r in done.values())
        if kept:
            print(f"{kept} of {len(jobs)} replays kept in {out / 'replays'} from an earlier run with the same "
                  "table and settings", flush=True)
        replay_one = functools.partial(replay, args=args, space_path=space_path, surrogate_path=surrogate_path,
                                       budget=budget, storage=storage)
        for job, r in replay_all([job for job in jobs if done[job] is None], replay_one, args.jobs):
            save_replay(replay_file(out, *job), r, key)
            done[job] = r
            print(f"{r['method']} seed {r['seed']}: {r['trials']} trials, best {r['best'][-1]:.4f} after "
                  f"{r['budget_epochs']} trial-epochs ({r['wall_s']:.0f} s wall)", flush=True)
        runs = [done[job] for job in jobs]
    per_run, table, target, reference = summarise(runs, table_best)
    per_run.to_csv(out / "runs.csv", index=False)
    table.to_csv(out / "summary.csv", index=False)
    draw(runs, target, reference, table_best, out / "search_efficiency.png")
    print(f"\ntarget: level-2 F1 {target:.4f} ({reference}'s lower median final best; speed-up = its "
          f"trial-epochs to the target / the method's); best config in the table "
          f"{table_best:.4f}\n")
    print(table.to_markdown(index=False, floatfmt=".4g"))
    print(f"\nwrote {out / 'summary.csv'}, {out / 'runs.csv'}, {out / 'search_efficiency.png'}")
    return table


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("curves", help="the curve CSV of benchmarks/record_curves.py")
    parser.add_argument("--space", default="spaces/seed.yaml", help="the space the curves were recorded on")
    parser.add_argument("--methods", default=",".join(METHODS), help="SAMPLER+SCHEDULER, comma-separated")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--budget-trials", type=int, default=20,
                        help="budget per search, in full trials' worth of epochs (default %(default)s)")
    parser.add_argument("--grace-period", type=int, default=1)
    parser.add_argument("--reduction-factor", type=float, default=2)
    parser.add_argument("--startup-trials", type=int, default=None,
                        help="random trials before a model-based sampler takes over (default: launch's, ~15%% "
                             "of the trials asked for)")
    parser.add_argument("--warm-start", action="store_true", help="keep the space's warm-start points")
    parser.add_argument("--time-scale", type=float, default=0.0,
                        help="really sleep this fraction of each simulated epoch (default none)")
    parser.add_argument("--synthetic-rows", type=int, default=211, help="the (unused) data the driver loads")
    parser.add_argument("--surrogate-seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=1,
                        help="replays at a time, each in its own process with its own local Ray (default "
                             "%(default)s); the results do not depend on it")
    parser.add_argument("--out", default="benchmarks/out/search_efficiency")
    parser.add_argument("--keep-runs", default=None, help="keep the replayed runs under this directory")
    args = parser.parse_args(argv)
    if min(args.seeds, args.budget_trials, args.jobs) < 1:
        parser.error("--seeds, --budget-trials and --jobs must be at least 1")
    if args.startup_trials is not None and args.startup_trials < 0:
        parser.error("--startup-trials must be at least 0")
    return args


def main(argv: list[str] | None = None) -> None:
    try:
        run(parse_args(argv))
    except (ConfigError, DataError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
