"""The confirm stage's network jobs on Ray Tune: a fixed grid of job ids, no pruning, resumable.

The stage (stages/confirm/) plans the jobs and writes every file; this module only runs them. The
jobs run as a second Ray Tune experiment inside the run (RUN_DIR/confirm/ray): a grid of job
ids, FIFO (no pruning), warm workers as in the search, bounded concurrency, and a checkpoint at
every evaluation holding the training state and the best evaluation so far, so a retried or
resumed job continues from its last evaluation and keeps its best. A resume is a new Tuner over the
same experiment with a ResumeConfig (search/internals.py), so completed jobs never train again.

What happens to a job is reported to a `JobSink` (the stage's writer), from the driver:
`started`, `progress` per evaluation, `completed` with the job's best evaluation read from its
final checkpoint (`FinishedJob`, or None when there is none), `failed`. Why the driver and not the
trial writes the fold models: (1) RUN_DIR need not be visible to the workers (with a cloud URI as
--storage-path it lives on the driver only, while checkpoints reach the driver through Ray's
storage either way); (2) one writer, no races between jobs finishing at the same time; (3) a job is
completed exactly when the sink has written its files, so a kill at any moment leaves either a
finished job or one the resumed stage finishes from the same final checkpoint. The price: the
driver reads each final checkpoint once, at the job's end.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import ray
from ray import tune
from ray.tune.experiment import Trial
from ray.tune.schedulers import FIFOScheduler

from model import metrics as M
from model.data import EncodedData
from rundir import keys as K
from rundir import preflight
from rundir.confirm import JobPlan, job_label
from rundir.settings import Settings
from search import internals
from search.callbacks import ProgressPrinter, error_message
from search.cluster import check_shared_storage
from search.deadline import DeadlineStopper, DeadlineVariantGenerator, past_deadline, until
from search.session import (
    REUSE_WORKERS,
    concurrency,
    experiment_has_state,
    quiet_ray,
    ray_session,
    restore_must_succeed,
)
from search.tracking import tracking_callbacks
from search.trainable import BEST, BEST_DEV_PROBS, BEST_METRICS, BEST_WEIGHTS, REPORT, confirm_trial, load_state


@dataclass(frozen=True)
class FinishedJob:
    """A job's best evaluation, from its final checkpoint."""

    weights: dict  # the scored weights (a state_dict on the CPU)
    dev_probs: np.ndarray  # (n_held_out, C) float32 level-2 probabilities, in the fold's dev row order
    scores: dict[str, float]  # model.metrics keys: level-2 and level-1 macro-F1, accuracy
    epoch: float
    time_s: float | None  # Ray's training seconds of the job


class JobSink(Protocol):
    """Who keeps the jobs' records and files: the stage's writer (stages/confirm/writer.py)."""

    def settled(self, job_id: str) -> bool: ...  # completed, or raced out: nothing more to record
    def raced_out(self, job_id: str) -> bool: ...
    def failed(self, job_id: str) -> bool: ...
    def start(self, job_id: str) -> None: ...
    def progress(self, job_id: str, result: Mapping[str, Any]) -> None: ...
    def complete(self, job_id: str, finished: FinishedJob | None) -> None: ...
    def fail(self, job_id: str, message: str) -> None: ...


def finished_job(state: dict | None, *, time_s: float | None) -> FinishedJob | None:
    """The best evaluation a job's final checkpoint holds; None unless the job finished its budget."""
    if state is None or not state[REPORT].get(M.FINISHED) or state.get(BEST) is None:
        return None
    best = state[BEST]
    scores = {key: float(value) for key, value in best[BEST_METRICS].items() if key != M.EPOCH}
    return FinishedJob(weights=best[BEST_WEIGHTS], dev_probs=best[BEST_DEV_PROBS].numpy(), scores=scores,
                       epoch=best[BEST_METRICS][M.EPOCH], time_s=time_s)


class ConfirmCallback(tune.Callback):
    """Reports each job's life to the sink. A settled job (completed, or raced out) is never
    reported again: after a restart Ray may run a completed job's trial once more, and it then only
    re-reports its checkpoint; a raced-out job's trial ends when RaceScheduler stops it."""

    def __init__(self, sink: JobSink):
        self.sink = sink
        self._synced = False

    def setup(self, **info: Any) -> None:
        self._synced = False

    @staticmethod
    def _job(trial: Trial) -> str:
        return trial.config[K.JOB]

    def on_step_begin(self, iteration: int, trials: list[Trial], **info: Any) -> None:
        if self._synced:
            return
        self._synced = True
        # A restored experiment may hold trials that ended after the sink's last record.
        for trial in trials:
            job_id = self._job(trial)
            if self.sink.settled(job_id):
                continue
            if trial.status == Trial.TERMINATED:
                self._complete(trial)
            elif trial.status == Trial.ERROR and not self.sink.failed(job_id):
                self.sink.fail(job_id, error_message(trial))

    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        if not self.sink.settled(self._job(trial)):
            self.sink.start(self._job(trial))

    def on_trial_result(self, iteration: int, trials: list[Trial], trial: Trial, result: dict, **info: Any) -> None:
        if not self.sink.settled(self._job(trial)) and M.EPOCH in result:  # not a job's announcement
            self.sink.progress(self._job(trial), result)

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        if not self.sink.settled(self._job(trial)):
            self._complete(trial)

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        if not self.sink.settled(self._job(trial)):
            self.sink.fail(self._job(trial), error_message(trial))

    def _complete(self, trial: Trial) -> None:
        try:
            state = load_state(trial.checkpoint)
        except (OSError, RuntimeError) as err:
            self.sink.fail(self._job(trial), f"cannot read the job's final checkpoint: {err!r}")
            return
        finished = finished_job(state, time_s=(trial.last_result or {}).get(K.TIME_TOTAL_S))
        if finished is None and past_deadline():
            return  # the time budget stopped it: it stays unfinished, and a resume continues it
        self.sink.complete(self._job(trial), finished)


class RaceScheduler(FIFOScheduler):
    """`confirm --race`: FIFO, but a job of a member the stage raced out is stopped at its next
    result. Each job announces itself with a result before it trains (confirm_trial's `announce`),
    and its worker waits for the driver's answer, so a job the race already decided never trains."""

    def __init__(self, sink: JobSink):
        super().__init__()
        self.sink = sink

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict) -> str:
        return self.STOP if self.sink.raced_out(trial.config[K.JOB]) else self.CONTINUE


class JobGenerator(DeadlineVariantGenerator):
    """The grid of the stage's jobs. Restored from the experiment's state, it still holds the storage
    of the driver that created it: the jobs it has yet to create go to `location` (storage path,
    experiment name), where the run is now, so a moved or copied run never writes its original."""

    def __init__(self, *, location: tuple[str, str], **kwargs: Any):
        super().__init__(**kwargs)
        self.location = location

    def restore_from_dir(self, dirpath: str) -> None:
        internals.drop_foreign_state(dirpath, *self.location)
        super().restore_from_dir(dirpath)

    def set_state(self, state: dict) -> None:
        location = self.location  # the state is the saved generator's __dict__: its location too
        super().set_state(state)
        self.location = location
        internals.relocate_grid(self, *location)


class ConfirmProgress(ProgressPrinter):
    """`[   12s] trial-3 fold 2 seed 0 epoch 2/4  level-2 F1 0.5100  (best 0.5100)` and
    `... completed, best level-2 F1 0.5300  [k/n jobs done]`."""

    noun = "jobs"

    def __init__(self, *, sink: JobSink, **kwargs: Any):
        super().__init__(**kwargs)
        self.sink = sink

    def on_trial_result(self, iteration: int, trials: list[Trial], trial: Trial, result: dict, **info: Any) -> None:
        if M.EPOCH in result:  # not a job's announcement (RaceScheduler)
            super().on_trial_result(iteration, trials, trial, result, **info)

    def key(self, trial: Trial) -> str:
        return trial.config.get(K.JOB)

    def name(self, trial: Trial) -> str:
        return job_label(trial.config[K.JOB])

    def how(self, last: dict) -> str:
        return "completed"

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        stopped = "raced out" if self.sink.raced_out(trial.config[K.JOB]) else (
            "stopped by the time budget" if not (trial.last_result or {}).get(M.FINISHED) and past_deadline() else "")
        if stopped and self.key(trial) not in self.before:
            self.ended += 1
            self.say(f"{self.name(trial)} {stopped}  [{self.done_text()}]")
            return
        super().on_trial_complete(iteration, trials, trial, **info)


@contextlib.contextmanager
def checked_session(settings: Settings, storage_root: str, out: Callable[[str], Any], *, log_dir: Path | None = None):
    """A Ray session (unless this process already has one) whose cluster can hold a job and, on
    several nodes, sees `storage_root` (where every job checkpoints); Ray's lines to `log_dir`/ray.log."""
    quiet_ray()
    if ray.is_initialized():
        yield
        return
    with ray_session(settings.address, log_dir=log_dir):
        if note := preflight.check_resources(cpus_per_trial=settings.cpus_per_trial,
                                             gpus_per_trial=settings.gpus_per_trial, nodes=ray.nodes()):
            out(note.replace("every trial", "every job"))
        check_shared_storage(storage_root, ray.nodes())
        yield


def slots(settings: Settings) -> int:
    """Jobs at once: --max-concurrent, else what the cluster holds (a Ray session must be open)."""
    return settings.max_concurrent or concurrency(settings)


@dataclass(frozen=True)
class JobGrid:
    """The jobs one `run_jobs` call runs: what each trains, on which folds, and which it skips."""

    plans: dict[str, JobPlan]  # every network job of the stage
    folds: list[EncodedData]  # per fold, its encoded data (its own vocabulary)
    pending: list[str]  # the jobs to run now
    settled: frozenset[str]  # jobs completed or raced out before (a restored experiment may still list them)
    skipped: frozenset[str]  # errored jobs not retried
    max_epochs: int
    time_budget_s: float | None = None  # stop the jobs after this wall time (those unfinished stay unfinished)
    race: bool = False  # `confirm --race`: RaceScheduler stops the jobs of members the stage raced out


def run_jobs(grid: JobGrid, sink: JobSink, settings: Settings, *, experiment: tuple[str, str], retry: bool,
             out: Callable[[str], Any], trial_fn: Callable = confirm_trial, run_dir: Path | None = None) -> None:
    """Run (or, when `experiment` has state, continue) the grid's pending jobs through Ray Tune.

    `experiment`: (storage_path, name) of the stage's Ray experiment. `trial_fn` is what each Ray
    trial calls, with `confirm_trial`'s signature; tests wrap it to inject failures."""
    storage, name = experiment
    restore = experiment_has_state(storage, name)
    out(f"confirm: {len(grid.pending)} network job(s) to run, {slots(settings)} at a time"
        + (f", {len(grid.settled)} done before" if grid.settled else ""))
    # A job announces itself before it trains when the driver may stop it before its first epoch:
    # its config raced out, or its stage out of time.
    trainable = tune.with_parameters(trial_fn, folds=grid.folds, jobs=grid.plans, ended=grid.settled,
                                     announce=grid.race or grid.time_budget_s is not None)
    extra = {}
    if restore:
        kind = tune.ResumeConfig.ResumeType
        # `finished` too: a job Ray's time budget stopped is TERMINATED like a completed one. Both run
        # again from their checkpoint; a completed job's trial returns at once (confirm_trial's `ended`).
        extra = internals.resume_kwargs(tune.ResumeConfig(unfinished=kind.RESUME,
                                                          errored=kind.RESUME if retry else kind.SKIP,
                                                          finished=kind.RESUME))
    tracking = tracking_callbacks(settings.track, run_dir, confirm=True) if run_dir is not None else []
    progress = ConfirmProgress(sink=sink, max_epochs=grid.max_epochs, num_samples=len(grid.plans),
                               ended=grid.settled | grid.skipped)
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": settings.cpus_per_trial, "gpu": settings.gpus_per_trial}),
        # A fresh experiment (none on disk: a new stage, or one killed before Ray's first snapshot)
        # runs the jobs not completed yet; a restored one keeps its own list and only resumes.
        param_space={K.JOB: tune.grid_search(grid.pending)},
        tune_config=tune.TuneConfig(
            # Every job trains its full budget (no pruning), but the jobs of a member raced out.
            scheduler=RaceScheduler(sink) if grid.race else FIFOScheduler(),
            search_alg=JobGenerator(max_concurrent=slots(settings), location=experiment),
            reuse_actors=REUSE_WORKERS,  # warm workers, as in the search (search/session.py)
            trial_dirname_creator=lambda trial: f"{trial.config[K.JOB].replace('/', '_')}_{trial.trial_id}",
        ),
        run_config=tune.RunConfig(
            storage_path=storage, name=name,
            failure_config=tune.FailureConfig(max_failures=settings.max_failures),
            stop=DeadlineStopper(),  # the time budget (search/deadline.py: why not Ray's time_budget_s)
            # Only the latest checkpoint: it holds the best evaluation too.
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            callbacks=[ConfirmCallback(sink), progress, *tracking],
            verbose=0,
        ),
        **extra,
    )
    with restore_must_succeed() if restore else contextlib.nullcontext(), until(grid.time_budget_s):
        tuner.fit()

