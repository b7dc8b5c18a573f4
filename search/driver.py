"""Assemble and run a search: data -> Tuner(trial, FidelityAwareOptunaSearch, ASHA) -> leaderboard.

`launch(settings)` is the whole flow of `python -m search launch`; `build_tuner` is the Tuner
assembly on its own, shared with benchmarks/driver_overhead.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import pickletools
import platform
import shlex
import shutil
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import ray
from ray import tune
from ray.tune.search import ConcurrencyLimiter

from model import metrics as M
from model.data import EncodedData, dev_fold_note
from model.errors import ConfigError
from model.provenance import git_revision, versions
from results.export import top_table
from rundir import keys as K
from rundir import preflight
from rundir.inputs import check_space_copy, load_data, resolve_max_epochs, space_of
from rundir.io import atomic_write_bytes, atomic_write_json, atomic_write_text, check_writable, damaged, read_json
from rundir.lock import run_lock
from rundir.paths import RunFiles, is_uri, run_files, search_experiment
from rundir.predictions import write_dev_labels
from rundir.record import check_study, describe_method, run_method, run_settings
from rundir.relocation import relocate_checkpoints
from rundir.settings import UNTIL_TIME_BUDGET, Settings, command_prefix
from rundir.trials import ERROR, RUNNING, TrialRecord, load_records, save_records
from search import internals
from search.callbacks import LeaderboardCallback, ProgressPrinter
from search.cluster import check_shared_storage
from search.deadline import DeadlineStopper, past_deadline, until
from search.scheduler import SCHEDULER_CLASSES, BudgetSearchGenerator, SearchScheduler
from search.searcher import FidelityAwareOptunaSearch, resolve_sampler, startup_trials
from search.session import (
    RAY_LOG,
    REUSE_WORKERS,
    RestoreFailed,
    concurrency,
    experiment_has_state,
    ray_session,
    restore_must_succeed,
)
from search.tracking import parse_track, tracking_callbacks
from search.trainable import run_trial
from spaces.space import SearchSpace, resolve_space_path


def default_name(space_path: Path) -> str:
    return f"{space_path.stem}-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"


def make_scheduler(settings: Settings, max_epochs: int) -> SearchScheduler:
    return SCHEDULER_CLASSES[settings.scheduler].for_search(
        max_epochs=max_epochs, grace_period=settings.grace_period, reduction_factor=settings.reduction_factor)


def search_method(settings: Settings, space: SearchSpace) -> dict[str, Any]:
    """The sampler (`auto` resolved), its startup trials and the scheduler, as run.json records them:
    a resume builds the same searcher from this record."""
    return {"sampler": resolve_sampler(settings.sampler, space, settings.num_samples),
            "startup_trials": startup_trials(settings.num_samples, len(space.warm_start), settings.startup_trials),
            "scheduler": settings.scheduler}


def build_tuner(trainable: Callable, *, searcher: tune.search.Searcher, files: RunFiles, max_epochs: int,
                settings: Settings, callbacks: list[tune.Callback], scheduler: SearchScheduler | None = None,
                resume: bool = False, retry: frozenset[str] = frozenset()) -> tune.Tuner:
    """The Tuner of a new run, or (`resume`) of the run in `files.root` continued where it stopped;
    `retry`: ids of errored trials to resume too."""
    resources = {"cpu": settings.cpus_per_trial, "gpu": settings.gpus_per_trial}
    storage, name = search_experiment(settings.storage_path, files)
    # The chain Tune would build from max_concurrent_trials, built here so the budget survives a
    # restore. Bounded concurrency: TPE asks only as slots free up (unbounded, it degrades to
    # random search), and Ray keeps that many trials pending, so every slot stays busy.
    search_alg = BudgetSearchGenerator(ConcurrencyLimiter(searcher, max_concurrent=concurrency(settings)),
                                       budget=settings.num_samples, retry=retry, location=(storage, name))
    extra = {}
    if resume:
        # Interrupted trials continue from their last checkpoint under the same id; finished trials
        # stay as they ended, errored ones too unless retried. Tuner.restore would bring back the
        # scheduler and the budget as launched; a new Tuner over the same directory takes ours.
        kind = tune.ResumeConfig.ResumeType
        extra = internals.resume_kwargs(tune.ResumeConfig(
            unfinished=kind.RESUME,
            errored=kind.RESUME if retry else kind.SKIP,
            finished=kind.SKIP))
    return tune.Tuner(
        tune.with_resources(trainable, resources),
        tune_config=tune.TuneConfig(
            search_alg=search_alg,
            scheduler=scheduler or make_scheduler(settings, max_epochs),
            num_samples=settings.num_samples,
            reuse_actors=REUSE_WORKERS,
            trial_dirname_creator=lambda trial: f"trial_{trial.trial_id}",
        ),
        run_config=tune.RunConfig(
            storage_path=storage,
            name=name,
            failure_config=tune.FailureConfig(max_failures=settings.max_failures),
            stop=DeadlineStopper(),  # --time-budget (search/deadline.py: why not Ray's time_budget_s)
            # The latest checkpoint is always kept (to resume); num_to_keep=1 adds the best one.
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1, checkpoint_score_attribute=K.CHECKPOINT_SCORE,
                                                    checkpoint_score_order="max"),
            callbacks=callbacks,
            verbose=0,
        ),
        **extra,
    )


# The libraries whose versions run.json records.
RUN_PACKAGES = ("torch", "ray", "optuna", "transformers", "scikit-learn", "pandas")


def write_run_record(files: RunFiles, *, settings: Settings, space: SearchSpace, space_path: Path,
                     data: EncodedData, max_epochs: int, argv: list[str] | None) -> None:
    atomic_write_text(files.space_yaml, space_path.read_text(encoding="utf-8"))
    write_dev_labels(files, data.dev.labels, num_labels=data.num_labels)  # what the trials' predictions are scored on
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
                 "vocab": len(data.vocab), "max_seq_len": data.max_seq_len,
                 "level2_labels": list(data.labels.level2)},
        "ray_experiment": "/".join(search_experiment(settings.storage_path, files)),
        "concurrency": concurrency(settings),
        "method": search_method(settings, space),
        "reproduce": command_prefix(settings, space_path=files.space_yaml, max_epochs=max_epochs),
        "versions": versions(RUN_PACKAGES),
        "git_revision": git_revision(),
        "host": platform.node(),
    })


def _refuse_existing(settings: Settings, files: RunFiles) -> None:
    if has_experiment_state(settings, files):
        raise ConfigError(f"{files.root} already exists: resume it with `python -m search resume {files.root}`,"
                          " or pick another --name")
    raise ConfigError(f"{files.root} already exists but holds no started search (not a run, or a launch that "
                      f"stopped before its first trial): pick another --name, or delete it (rm -r {files.root})")


@contextlib.contextmanager
def new_run_dir(settings: Settings, files: RunFiles, *, keep: frozenset[str] = frozenset()):
    """Create RUN_DIR for the block; if the block fails before Ray's experiment has saved its state
    (before the first trial: nothing there that `resume` could continue), remove RUN_DIR again, so a
    failed launch leaves no half-made run behind and the same launch can simply be repeated.
    `keep`: names already in RUN_DIR that belong to its caller (a pipeline's record and vectors):
    RUN_DIR may exist holding only those, and they stay whatever happens."""
    try:
        files.root.mkdir(parents=True, exist_ok=bool(keep))
    except FileExistsError:  # another launch took the name since the check
        _refuse_existing(settings, files)
    try:
        yield
    except BaseException:
        started = True  # if that cannot be told, keep the directory
        with contextlib.suppress(Exception):
            started = has_experiment_state(settings, files)
        if not started:
            _remove_all_but(files.root, keep)
        raise


def _remove_all_but(root: Path, keep: frozenset[str]) -> None:
    if not keep:
        shutil.rmtree(root, ignore_errors=True)
        return
    for entry in root.iterdir():
        if entry.name not in keep:
            shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)


def has_experiment_state(settings: Settings, files: RunFiles) -> bool:
    return experiment_has_state(*search_experiment(settings.storage_path, files))


def launch(settings: Settings, *, argv: list[str] | None = None, out: Callable[[str], Any] = print,
           trial_fn: Callable = run_trial, keep: frozenset[str] = frozenset()) -> tuple[RunFiles, pd.DataFrame]:
    """Run a whole search and return its run files and final leaderboard.

    `trial_fn` is what each Ray trial calls, with `run_trial`'s signature; tests wrap it to inject
    failures. `keep`: names RUN_DIR may already hold, its caller's (stages/pipeline.py).
    """
    internals.check()  # before anything is written: the Ray and Optuna internals we use still hold
    preflight.check_settings(settings)
    space_path = resolve_space_path(settings.space)
    space = space_of(settings, space_path)
    max_epochs = resolve_max_epochs(settings, space)
    preflight.check_budget(max_epochs=max_epochs, grace_period=settings.grace_period)
    preflight.check_space(space, {"max_epochs": max_epochs, "seed": settings.seed}, max_seq_len=settings.max_seq_len)
    preflight.check_run_location(settings)
    files = run_files(settings.storage_path, settings.name or default_name(space_path))
    if settings.track:
        parse_track(settings.track, files.root)  # a tracker this machine lacks is refused before any work
    if files.root.exists() and not (keep and {e.name for e in files.root.iterdir()} <= keep):
        if keep and not has_experiment_state(settings, files):
            # The caller's own RUN_DIR, with what a launch of it killed before Ray's first snapshot left.
            _remove_all_but(files.root, keep)
        else:
            _refuse_existing(settings, files)
    data = load_data(settings)
    preflight.check_checkpoint_vocab(space, {"max_epochs": max_epochs, "seed": settings.seed}, data.vocab.tokens)

    with ray_session(settings.address):
        gpu_note = preflight.check_resources(cpus_per_trial=settings.cpus_per_trial,
                                             gpus_per_trial=settings.gpus_per_trial, nodes=ray.nodes())
        check_shared_storage(settings.storage_path, ray.nodes())
        with new_run_dir(settings, files, keep=keep), run_lock(files):
            RAY_LOG.attach(files.root)
            write_run_record(files, settings=settings, space=space, space_path=space_path, data=data,
                             max_epochs=max_epochs, argv=argv)
            out(f"RUN_DIR {files.root}")
            out(f"data: {data.source}: {len(data.train)} train / {len(data.dev)} dev rows (fold "
                f"{settings.fold} of {settings.folds}), {data.num_labels} labels; space {space_path.name}: "
                f"{len(space.searched)} searched parameters, {len(space.warm_start)} warm-start points")
            if note := dev_fold_note(data, fold=settings.fold, folds=settings.folds):
                out(note)
            if gpu_note:
                out(gpu_note)
            method = read_json(files.run_json)["method"]
            searcher = FidelityAwareOptunaSearch(space, storage=optuna.storages.RDBStorage(files.study_url),
                                                 study_name=files.root.name, seed=settings.seed,
                                                 sampler=method["sampler"], n_startup_trials=method["startup_trials"])
            frame = _search(files, settings, space, data, searcher, max_epochs, resume=False, out=out,
                            trial_fn=trial_fn)
    return files, frame


def resume(run_dir: str | Path, *, num_samples: int | None = None, max_failures: int | None = None,
           retry_errored: bool = False, time_budget_s: float | None = None, argv: list[str] | None = None,
           out: Callable[[str], Any] = print, trial_fn: Callable = run_trial) -> tuple[RunFiles, pd.DataFrame]:
    """Continue the run in `run_dir`: interrupted trials from their last checkpoint, ended trials
    never again (`retry_errored`: except errored ones, which resume from their last checkpoint
    under the same id), up to `num_samples` trials in all (default: the run's budget), for at most
    `time_budget_s` wall seconds (default: the run's --time-budget, per driver session)."""
    internals.check()  # before anything is written: the Ray and Optuna internals we use still hold
    files = RunFiles(Path(run_dir))
    run, settings = run_settings(files)
    records = load_records(files)
    if not has_experiment_state(settings, files):
        where = "/".join(search_experiment(settings.storage_path, files))
        if records:
            raise damaged(Path(where), "no experiment state, although the run has trials")
        raise ConfigError(f"{run_dir} has no Ray experiment state (in {where}): its launch stopped before the "
                          "search started, so there is nothing to resume. Launch it again (under a new --name)")
    if not is_uri(settings.storage_path):
        check_experiment(files)
    check_study(files, run["name"])  # before Optuna's RDBStorage, which creates a missing study.db
    given = {"num_samples": num_samples, "max_failures": max_failures, "time_budget_s": time_budget_s}
    settings = dataclasses.replace(settings, **{k: v for k, v in given.items() if v is not None})
    preflight.check_settings(settings)
    check_writable(files.root, "resume")
    space = _stored_space(files, settings, out)
    if settings.num_samples < len(records):
        raise ConfigError(f"--num-samples {settings.num_samples} is below the {len(records)} trials the run "
                          "already has; pass at least that many")
    data = load_data(settings)

    with ray_session(settings.address, log_dir=files.root), run_lock(files), rolled_back_on_restore_failure(files):
        if note := preflight.check_resources(cpus_per_trial=settings.cpus_per_trial,
                                             gpus_per_trial=settings.gpus_per_trial, nodes=ray.nodes()):
            out(note)
        check_shared_storage(settings.storage_path, ray.nodes())
        _record_resume(files, run, settings, argv)
        if not is_uri(settings.storage_path) and relocate_checkpoints(files, records):
            save_records(files, records)
        done = sum(r.status != RUNNING for r in records.values())
        out(f"RUN_DIR {files.root}")
        out(f"resuming: {len(records)} trials recorded ({done} ended), budget {settings.num_samples} trials")
        # The study is named after the run as launched: a copied or renamed RUN_DIR keeps that name.
        method = run_method(run)  # the pickled searcher state then restores the sampler's history
        searcher = FidelityAwareOptunaSearch(space, storage=optuna.storages.RDBStorage(files.study_url),
                                             study_name=run["name"], seed=settings.seed, warm_start=False,
                                             sampler=method["sampler"], n_startup_trials=method["startup_trials"])
        retry = _reopen_errored(files, records, searcher, out) if retry_errored else frozenset()
        frame = _search(files, settings, space, data, searcher, run["max_epochs"], resume=True, out=out,
                        trial_fn=trial_fn, retry=retry)
    return files, frame


def _record_resume(files: RunFiles, run: dict[str, Any], settings: Settings, argv: list[str] | None) -> None:
    """run.json after a resume: the new budget, where the run is now, and the resume itself."""
    run["settings"]["num_samples"] = settings.num_samples
    run["settings"]["max_failures"] = settings.max_failures
    run["ray_experiment"] = "/".join(search_experiment(settings.storage_path, files))  # where the run is now
    # The rows' reproduction commands name the run's space.yaml: where the run is now, too.
    run["reproduce"] = command_prefix(settings, space_path=files.space_yaml, max_epochs=run["max_epochs"])
    run.setdefault("resumed", []).append({
        "at": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": shlex.join(["python", "-m", "search", *(argv or [])]),
        "git_revision": git_revision()})
    atomic_write_json(files.run_json, run)


def check_experiment(files: RunFiles) -> None:
    """Refuse a damaged Ray experiment in RUN_DIR/ray before Ray reads it (Ray would fail deep in
    its restore, or start over): the latest experiment state must be Ray's JSON, and the searcher's
    and search generator's states whole pickles (their opcodes read to the end; nothing is loaded)."""
    states = sorted(files.ray_dir.glob("experiment_state-*.json"))
    state = read_json(states[-1], dict)
    if not isinstance(state.get("trial_data"), list) or not isinstance(state.get("runner_data"), dict):
        raise damaged(states[-1], "not Ray's experiment state (no `trial_data` list or `runner_data` object)")
    for pattern in ("searcher-state-*.pkl", "search_gen_state-*.json"):
        saved = sorted(files.ray_dir.glob(pattern))
        if not saved:
            raise damaged(files.ray_dir, f"no {pattern}: the searcher's state is missing")
        _check_pickle(saved[-1])


def _check_pickle(path: Path) -> None:
    try:
        ops = [op.name for op, _, _ in pickletools.genops(path.read_bytes())]
    except OSError as err:
        raise damaged(path, err.strerror or str(err)) from None
    except ValueError as err:
        raise damaged(path, f"not a whole pickle: {err}") from None
    if not ops or ops[-1] != "STOP":
        raise damaged(path, "not a whole pickle: it ends early")


@contextlib.contextmanager
def rolled_back_on_restore_failure(files: RunFiles):
    """A resume that Ray cannot restore changes nothing: run.json and trials.json, which resume
    rewrites before Ray reads its experiment, and study.db, where `--retry-errored` adds a running
    Optuna trial per retried trial (Optuna cannot delete trials), get their old bytes back. No
    transaction is open on the study then: Optuna commits each write, and SQLite's default
    rollback journal is gone after each commit."""
    saved = {path: path.read_bytes() for path in (files.run_json, files.trials_json, files.study_db)
             if path.exists()}
    try:
        yield
    except RestoreFailed:
        for path, data in saved.items():
            atomic_write_bytes(path, data)
        raise


def _reopen_errored(files: RunFiles, records: dict[str, TrialRecord], searcher: FidelityAwareOptunaSearch,
                    out: Callable[[str], Any]) -> frozenset[str]:
    """Mark the errored trials (not the lost ones, which Ray never knew) running again, each with
    a fresh Optuna trial; returns their ids."""
    errored = {tid: r.optuna_number for tid, r in records.items()
               if r.status == ERROR and not (r.error or "").startswith("lost:")}
    new_numbers = searcher.reopen(errored)
    for trial_id, number in new_numbers.items():
        record = records[trial_id]
        out(f"retrying errored trial {record.optuna_number} ({trial_id}) as Optuna trial {number}: {record.error}")
        record.status, record.error, record.optuna_number = RUNNING, None, number
    save_records(files, records)
    return frozenset(new_numbers)


def _stored_space(files: RunFiles, settings: Settings, out: Callable[[str], Any]) -> SearchSpace:
    """The space the run was launched with (its copy in RUN_DIR), checked against today's code."""
    check_space_copy(files)
    try:
        space = space_of(settings, files.space_yaml)
        preflight.check_space(space, {"max_epochs": settings.max_epochs, "seed": settings.seed},
                              max_seq_len=settings.max_seq_len)
    except ConfigError as err:
        raise ConfigError(f"the run's search space no longer fits this version of the code, so its study "
                          f"cannot continue: {err}") from None
    try:
        current = resolve_space_path(settings.space)
    except ConfigError:
        current = None
    if current is not None and current.read_text(encoding="utf-8") != files.space_yaml.read_text(encoding="utf-8"):
        out(f"note: {current} changed since the launch; resuming with the space the run stored "
            f"({files.space_yaml}). Launch a new run to search the changed space")
    return space


def _search(files: RunFiles, settings: Settings, space: SearchSpace, data: EncodedData,
            searcher: FidelityAwareOptunaSearch, max_epochs: int, *, resume: bool,
            out: Callable[[str], Any], trial_fn: Callable = run_trial, retry: frozenset[str] = frozenset()
            ) -> pd.DataFrame:
    """Run (or continue) the Tuner and return the final leaderboard."""
    run = read_json(files.run_json)
    trials = f"{settings.num_samples} trials" if settings.num_samples < UNTIL_TIME_BUDGET else "trials"
    timed = f"for {settings.time_budget_s / 60:.1f} min (its time budget) or " if settings.time_budget_s else ""
    out(f"search: {timed}{trials}, up to {max_epochs} epochs each, "
        f"{describe_method(run_method(run), asdict(settings))}, {concurrency(settings)} at a time")
    board = LeaderboardCallback(files, max_epochs=max_epochs, param_names=space.searched, seed=settings.seed,
                                fold=settings.fold, command_prefix=run.get("reproduce"))
    scheduler = make_scheduler(settings, max_epochs)
    ended: frozenset[str] = frozenset()
    if resume:
        scheduler.replay({tid: [(h[M.EPOCH], h[K.OBJECTIVE]) for h in r.history]
                          for tid, r in board.records.items()})
        ended = frozenset(tid for tid, r in board.records.items() if r.status != RUNNING)
    trainable = tune.with_parameters(trial_fn, data=data, space=space,
                                     overrides={"max_epochs": max_epochs, "seed": settings.seed}, ended=ended)
    printer = ProgressPrinter(max_epochs=max_epochs, num_samples=settings.num_samples, ended=ended)
    tracking = tracking_callbacks(settings.track, files.root)
    tuner = build_tuner(trainable, searcher=searcher, files=files, max_epochs=max_epochs, settings=settings,
                        callbacks=[board, printer, *tracking], scheduler=scheduler, resume=resume, retry=retry)
    with restore_must_succeed() if resume else contextlib.nullcontext(), until(settings.time_budget_s):
        tuner.fit()
        out_of_time = past_deadline()
    for trial_id, last in board.stopped_at_end.items():  # the time budget ran out while they trained
        searcher.on_trial_complete(trial_id, last)
    frame = board.write()
    if board.stopped_at_end:
        out(f"the time budget ({settings.time_budget_s:.0f} s) ran out: {len(board.stopped_at_end)} trial(s) "
            "stopped as they were (recorded as pruned at the epoch they reached)")
    if searcher.exhausted and not (frame["status"] == RUNNING).any() and len(frame) < settings.num_samples:
        out(f"the space holds no configuration not yet trained (the sampler proposed only repeats): the search "
            f"ends after {len(frame)} of {settings.num_samples} trials, and run.json's budget is lowered to "
            f"{len(frame)}")
        run = read_json(files.run_json)
        run["settings"]["num_samples"] = len(frame)
        run["space_exhausted"] = True
        atomic_write_json(files.run_json, run)
        settings = dataclasses.replace(settings, num_samples=len(frame))
    frame.attrs["out_of_time"] = out_of_time
    if out_of_time:
        out(f"the time budget ({settings.time_budget_s / 60:.1f} min) ended the search: trials still training "
            "then stopped at their next evaluation (recorded as pruned); `resume RUN_DIR --time-budget ...` goes on")
    if is_finished(frame, settings.num_samples):
        searcher.reconcile(final=True)
        out(summary(frame, files))
        out(f"next: python -m search confirm {shlex.quote(str(files.root))}   (the top 5 completed trials on every "
            "fold, and the linear member)")
    else:
        out(summary(frame, files) + f"\n\nthe search stopped early: continue it with "
            f"`python -m search resume {files.root}`")
    return frame


def run_budget(files: RunFiles) -> int:
    """The run's trial budget as run.json holds it now (raised by `resume --num-samples`, lowered to
    the trials run when the space held no more configurations)."""
    return int(read_json(files.run_json)["settings"]["num_samples"])


def is_finished(frame: pd.DataFrame, num_samples: int) -> bool:
    """Every trial of the budget exists, or the time budget ended the search (`_search` notes it in
    the frame's attrs); and every trial has ended."""
    return (len(frame) >= num_samples or frame.attrs.get("out_of_time", False)) and not (
        frame["status"] == RUNNING).any()


def summary(frame: pd.DataFrame, files: RunFiles, top: int = 5) -> str:
    counts = frame["status"].value_counts().to_dict()
    return (f"\n{len(frame)} trials: " + ", ".join(f"{n} {s}" for s, n in counts.items())
            + f"\n\ntop {min(top, len(frame))}:\n{top_table(frame, top)}\n\nleaderboard: {files.leaderboard_csv}"
            + f"\nexport: python -m search export {shlex.quote(str(files.root))} --out leaderboard.csv")


