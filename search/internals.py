"""The one seam to the private internals of Ray Tune and Optuna (DESIGN.md §5, trap 11).

Ray's public API cannot express what this project needs: the searcher must tell Optuna the truth
about pruned trials and adopt retried ones, the scheduler must refill ASHA's rungs and the sample
budget after a restore (ray issues 30838 and 42221), and the driver must resume into an existing
experiment and notice when Ray's restore fails. Each use of a private attribute, an internal
argument or a log message of Ray or Optuna lives here and nowhere else (tests/search/
test_internals.py scans the project for strays), with the assumption it rests on.

`check()` verifies every assumption on the installed versions by behaviour, cheaply (under a second,
no Ray cluster): it builds the objects and exercises them, standing in for what would need a cluster
(`tune.run` behind a Tuner, a TuneController's restore), and never compares Ray's source text, so a
reformat upstream breaks nothing. It fails naming the supported versions. The driver calls
it once before a launch or a resume touches Ray; the test suite calls it too, so an upgrade of the
pins fails loudly in CI rather than silently at a user's resume.

Items (the function, then what it relies on):

1. `study(searcher)`: `OptunaSearch._ot_study` is the `optuna.Study` the searcher asks and tells,
   created by its constructor when a space is given.
2. `asked_trials(searcher)`: `OptunaSearch._ot_trials` maps a Ray trial id to the `optuna.Trial`
   `suggest` asked for it; `on_trial_result`/`on_trial_complete` look trials up there, and
   `suggest` asks the study anew for an id not in it (the duplicate guard withdraws a proposal by
   deleting its entry, then suggests again).
3. `told_trials(searcher)`: `OptunaSearch._completed_trials` is the set of Ray trial ids whose
   Optuna trial was told; later results and completions for them are ignored.
4. `storage_id(frozen)`: `FrozenTrial._trial_id` is the storage's id of the trial (unique in the
   storage; `number` counts per study), the id `optuna.trial.Trial(study, id)` takes.
5. `trial_handle(study, storage_id)`: `optuna.trial.Trial(study, trial_id)`, a constructor Optuna
   reserves to itself, gives a handle that reports to and is told as that existing trial.
6. `asha_record(scheduler, ...)`: `AsyncHyperBandScheduler._brackets` is its list of brackets,
   `_metric_op` is +1 for mode max and -1 for min, and `_Bracket.on_result(trial, time, value)`
   records a signed value in the rung the time reached, reading only `trial.trial_id`.
7. `asha_rungs(scheduler)`: `_Bracket._rungs` is a list of `(milestone, {trial_id: signed
   value})`, highest milestone first.
8. `set_sample_budget(generator, budget)`: `SearchGenerator._total_samples` and `_finished` decide
   `is_finished()` (`_counter >= _total_samples or _finished`); `set_state` restores both as
   launched.
9. `count_as_live(limiter, trial_ids)`: `ConcurrencyLimiter.live_trials` and
   `num_unfinished_live_trials` (public names, undocumented state): the limiter counts the trials
   in `live_trials` against `max_concurrent` and ignores completions of trials not in it.
10. `resume_kwargs(resume_config)`: `Tuner(_tuner_kwargs=...)` is forwarded by `Tuner.fit` (of a new
    Tuner; we never use `Tuner.restore`) into `tune.run(**kwargs)`, whose `resume_config` continues the
    experiment in the run's storage
    (with our scheduler and search algorithm, which `Tuner.restore` would replace by the pickled ones).
11. `on_restore_failure(handler)`: `TuneController.__init__` logs "Failed to restore the run
    state." through `logger.exception` on the logger "ray.tune.execution.tune_controller", inside
    its `except` block, before it starts a new experiment in the same directory; a logging filter
    runs there and an exception it raises propagates (logging shields handlers, not filters).
12. `restore_searcher(searcher, checkpoint_path)`: `OptunaSearch.save` pickles the searcher's
    `__dict__` and `OptunaSearch.restore` updates `__dict__` with it, so a restore would bring back
    the launch's `_ot_study` and `_storage` (an `RDBStorage` on the study.db where the run was
    launched) and asked trials whose `optuna.Trial.study`/`.storage` are bound to them; and
    unpickling an `RDBStorage` connects to its URL (`create_all`), which creates a database file
    at the launch location if the run has moved. So the pickle is loaded with `RDBStorage` replaced
    by an inert stand-in, `__dict__` is updated as OptunaSearch does, and then `_ot_study`,
    `_storage` and every asked trial are bound to the study and storage this searcher had before
    the restore (this driver's, on the resumed RUN_DIR), keeping the restored sampler
    (`Study.sampler`, the same object as `OptunaSearch._sampler`).
13. `relocate_experiment(generator, storage_path, name)`: `SearchGenerator.set_state` brings back
    the `_experiment` pickled at the launch, whose `spec["storage"]` (a `StorageContext` with the
    launch's `storage_fs_path` and `experiment_dir_name`) is the storage of every trial it creates
    (`_create_trial_from_spec(spec)` passes `spec.get("storage")` to the trial). Ray's
    `TuneController._restore_trials` moves restored trials to the current storage by setting
    `storage_filesystem`, `storage_fs_path` and `experiment_dir_name`; this does the same for the
    trials created after a restore, with `ray.train._internal.storage.get_fs_and_path`.
14. `asha_bracket_sizes(scheduler)`, `asha_assign(scheduler, trial_id, bracket)`: with several
    brackets, `on_trial_add` draws a trial's bracket with weights from each `_Bracket`'s number of
    `_rungs` and stores it in `_trial_info[trial_id]`, which `on_trial_result` and
    `on_trial_complete` read.
15. `median_record(scheduler, trial_id, result)`, `median_results(scheduler)`:
    `MedianStoppingRule._results` maps what `on_trial_result(controller, trial, result)` was given
    as `trial` (hashable; nothing else of it is read) to that trial's result dicts in order, and the
    rule compares a trial with every other key's results; with `min_time_slice` infinite it never
    asks the controller anything.
16. `relocate_grid(generator, storage_path, name)`: `BasicVariantGenerator.set_state` brings back
    its `_iterators` (`_TrialIterator`s) pickled at the launch; each keeps the experiment spec as
    `unresolved_spec` and, when not lazy, the variants generated but not yet made trials as
    `variants.iterable`, a list of (resolved vars, spec); a trial is created from such a spec with
    its `spec["storage"]`, as in item 13.
17. `drop_foreign_state(dirpath, storage_path, name)`: a restored experiment keeps the launch's
    driver staging directory (`TuneController._restore_trials` sets `StorageContext._timestamp`
    from the restored trials: `<Ray session>/artifacts/<launch time>/<name>/driver_artifacts`),
    `sync_down_experiment_state` copies the experiment's `.json`/`.pkl` files from its storage
    there, and the search algorithms then load the state file whose name sorts last. Two copies
    of one run resumed in one Ray session (a cluster's, or one process) share that directory, so
    the second would load the first's newer state; the search algorithms' `restore_from_dir(dirpath)`
    get the staging directory. Not in `check()` (it needs a Ray session and a restore):
    tests/stages/test_confirm_relocation.py resumes two copies of one stopped stage in one session.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import pickle
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import optuna
import pyarrow.fs
import ray
from optuna.trial import FrozenTrial
from ray import tune
from ray.train._internal.storage import StorageContext, get_fs_and_path
from ray.tune import Tuner
from ray.tune.execution.tune_controller import TuneController
from ray.tune.experiment import config_parser
from ray.tune.impl import tuner_internal
from ray.tune.schedulers import ASHAScheduler, MedianStoppingRule, TrialScheduler
from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter, Searcher, SearchGenerator
from ray.tune.search.optuna import OptunaSearch

from model.errors import ConfigError

# The versions whose internals this module was written against: the pins of requirements.txt
# (a test keeps the two equal). Other versions run only if every check below passes.
SUPPORTED = {"ray": "2.60.0", "optuna": "5.0.0"}


class UnsupportedInternals(ConfigError):
    """The installed Ray or Optuna no longer provides an internal this project relies on."""


# --- Optuna and Ray's OptunaSearch (search/searcher.py) -------------------------------------------

def study(searcher: OptunaSearch) -> optuna.Study:
    """The study `searcher` asks and tells (item 1)."""
    return searcher._ot_study


def asked_trials(searcher: OptunaSearch) -> dict[str, optuna.Trial]:
    """Ray trial id -> the Optuna trial asked for it; the searcher's own dict, changes included (item 2)."""
    return searcher._ot_trials


def told_trials(searcher: OptunaSearch) -> set[str]:
    """Ray trial ids whose Optuna trial the searcher has told; its own set, changes included (item 3)."""
    return searcher._completed_trials


def storage_id(frozen: FrozenTrial) -> int:
    """The storage's id of a trial (item 4)."""
    return frozen._trial_id


def trial_handle(study: optuna.Study, storage_id: int) -> optuna.Trial:
    """A live handle on the existing trial `storage_id` of `study`, to report to and tell (item 5)."""
    return optuna.trial.Trial(study, storage_id)


class _DetachedRDBStorage:
    """What a pickled `RDBStorage` unpickles to in `restore_searcher`: its state, no connection."""

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)


class _DetachedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if name == "RDBStorage" and module.startswith("optuna.storages"):
            return _DetachedRDBStorage
        return super().find_class(module, name)


def restore_searcher(searcher: OptunaSearch, checkpoint_path: str) -> None:
    """`OptunaSearch.restore(checkpoint_path)`, but the searcher stays on the study and storage it
    had before (this driver's) with the restored sampler, and the storage pickled at the launch is
    never opened: a moved or copied run never reads or writes the launch location (item 12)."""
    own_study, own_storage = searcher._ot_study, searcher._storage
    with open(checkpoint_path, "rb") as handle:
        state = _DetachedUnpickler(handle).load()
    if not isinstance(state, dict):
        raise ValueError(f"{checkpoint_path} is not a searcher state this version can restore (not a dict)")
    searcher.__dict__.update(state)
    own_study.sampler = searcher._ot_study.sampler
    searcher._sampler = own_study.sampler
    searcher._ot_study, searcher._storage = own_study, own_storage
    for trial in searcher._ot_trials.values():
        trial.study, trial.storage = own_study, own_study._storage


# --- Ray's ASHA, SearchGenerator and ConcurrencyLimiter (search/scheduler.py) ---------------------

@dataclass(frozen=True)
class _TrialRef:
    """What `_Bracket.on_result` reads of a trial."""
    trial_id: str


def asha_record(scheduler: ASHAScheduler, trial_id: str, time: float, value: float, bracket: int = 0) -> None:
    """Record `trial_id`'s metric `value` at `time` in the rungs of the scheduler's bracket number
    `bracket`, as a result would; the decision is discarded (item 6)."""
    scheduler._brackets[bracket].on_result(_TrialRef(trial_id), time, scheduler._metric_op * value)


def asha_rungs(scheduler: ASHAScheduler, bracket: int = 0) -> list[tuple[float, dict[str, float]]]:
    """(milestone, {trial_id: signed metric}) per rung of bracket number `bracket`, highest
    milestone first; copies (item 7)."""
    return [(milestone, dict(recorded)) for milestone, recorded in scheduler._brackets[bracket]._rungs]


def asha_bracket_sizes(scheduler: ASHAScheduler) -> list[int]:
    """The number of rungs of each bracket, the weights Ray draws a new trial's bracket by (item 14)."""
    return [len(bracket._rungs) for bracket in scheduler._brackets]


def asha_assign(scheduler: ASHAScheduler, trial_id: str, bracket: int) -> None:
    """Put `trial_id` in bracket number `bracket`, as `on_trial_add` does with a random one (item 14)."""
    scheduler._trial_info[trial_id] = scheduler._brackets[bracket]


def median_record(scheduler: MedianStoppingRule, trial_id: str, result: dict[str, float]) -> None:
    """Add `result` to `trial_id`'s results, which the median rule keys by what its
    `on_trial_result` is given (a `_TrialRef` here: search/scheduler.py ResumableMedian) (item 15)."""
    scheduler._results[_TrialRef(trial_id)].append(result)


def median_results(scheduler: MedianStoppingRule) -> dict[str, list[dict[str, float]]]:
    """{trial_id: its results in order}; copies (item 15)."""
    return {ref.trial_id: list(results) for ref, results in scheduler._results.items()}


def trial_ref(trial_id: str) -> _TrialRef:
    """A stand-in for a Tune trial, keyed by its id, that the schedulers' bookkeeping accepts."""
    return _TrialRef(trial_id)


def set_sample_budget(generator: SearchGenerator, budget: int) -> None:
    """Make `generator` create trials until `budget` exist in all, whatever its restored state said (item 8)."""
    generator._total_samples = budget
    generator._finished = False


def count_as_live(limiter: ConcurrencyLimiter, trial_ids: Iterable[str]) -> None:
    """Count `trial_ids` as running trials of `limiter` again (trials a restored run resumes after
    the limiter saw them end), so their slots and completions are accounted for (item 9)."""
    for trial_id in set(trial_ids) - limiter.live_trials:
        limiter.live_trials.add(trial_id)
        limiter.num_unfinished_live_trials += 1


def relocate_experiment(generator: SearchGenerator, storage_path: str, name: str) -> None:
    """Make the trials a restored `generator` creates live in the experiment `name` under
    `storage_path` (a path or URI), where the run is now, not where it was launched (item 13)."""
    experiment = generator._experiment
    if experiment is None:
        return
    _relocate_storages((experiment.spec.get("storage"), getattr(experiment, "storage", None)), storage_path, name)


def relocate_grid(generator: BasicVariantGenerator, storage_path: str, name: str) -> None:
    """The same for a restored grid generator (the confirm stage's jobs, item 16): the specs its
    trial iterators still hold, the unresolved one and the variants generated but not yet made trials."""
    specs = []
    for iterator in generator._iterators:
        specs.append(iterator.unresolved_spec)
        variants = iterator.variants
        if variants is not None and not variants.lazy_eval:
            specs.extend(spec for _, spec in variants.iterable)
    _relocate_storages((spec.get("storage") for spec in specs), storage_path, name)


def drop_foreign_state(dirpath: str, storage_path: str, name: str) -> None:
    """Delete the state files in Ray's driver staging directory `dirpath` that the experiment
    `name` under `storage_path` does not hold: another driver of the same Ray session wrote them
    for a copy of this run (item 17), and Ray would restore the newest of them."""
    filesystem, fs_path = get_fs_and_path(storage_path)
    selector = pyarrow.fs.FileSelector(Path(fs_path, name).as_posix(), allow_not_found=True)
    stored = {info.base_name for info in filesystem.get_file_info(selector)}
    for path in Path(dirpath).iterdir():
        if path.is_file() and path.suffix in (".json", ".pkl") and path.name not in stored:
            path.unlink(missing_ok=True)


def _relocate_storages(storages: Iterable[StorageContext | None], storage_path: str, name: str) -> None:
    filesystem, fs_path = get_fs_and_path(storage_path)
    for storage in {id(s): s for s in storages if s is not None}.values():
        storage.storage_filesystem = filesystem
        storage.storage_fs_path = Path(fs_path).as_posix()
        storage.experiment_dir_name = name


# --- Ray's Tuner and TuneController (search/driver.py) --------------------------------------------

def resume_kwargs(resume_config: tune.ResumeConfig) -> dict[str, Any]:
    """Keyword arguments that make a new `tune.Tuner` resume the experiment already in its storage
    path with `resume_config` (item 10)."""
    return {"_tuner_kwargs": {"resume_config": resume_config}}


RESTORE_LOGGER = "ray.tune.execution.tune_controller"
RESTORE_FAILED = "Failed to restore the run state"


class _RestoreFailureFilter(logging.Filter):
    def __init__(self, handler: Callable[[BaseException | None], None]):
        super().__init__()
        self.handler = handler

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage().startswith(RESTORE_FAILED):
            self.handler(record.exc_info[1] if record.exc_info else None)
        return True


@contextlib.contextmanager
def on_restore_failure(handler: Callable[[BaseException | None], None]) -> Iterator[None]:
    """While active, call `handler(cause)` when Ray fails to restore an experiment, inside Ray's
    `except` block and before it writes anything; an exception `handler` raises propagates out of
    `Tuner.fit` (item 11)."""
    logger = logging.getLogger(RESTORE_LOGGER)
    guard = _RestoreFailureFilter(handler)
    logger.addFilter(guard)
    try:
        yield
    finally:
        logger.removeFilter(guard)


# --- The start-up check ---------------------------------------------------------------------------

class _ProbeSearcher(Searcher):
    """A searcher that always has a suggestion: what the limiter check wraps."""

    def suggest(self, trial_id: str) -> dict | None:
        return {"x": 0.0}

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        pass


def _probe_space(trial: optuna.Trial) -> None:
    trial.suggest_float("x", 0.0, 1.0)


def _expect(condition: bool, what: str) -> None:
    if not condition:
        raise AssertionError(what)


def _check_optuna_search() -> None:
    """Items 1-5 on an in-memory study."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created" line
    try:
        searcher = OptunaSearch(_probe_space, metric="m", mode="max",
                                sampler=optuna.samplers.RandomSampler(seed=0))
    finally:
        optuna.logging.set_verbosity(verbosity)
    _expect(isinstance(study(searcher), optuna.Study), "OptunaSearch._ot_study is not the searcher's optuna.Study")
    searcher.suggest("probe")
    asked = asked_trials(searcher)
    _expect(isinstance(asked, dict) and isinstance(asked.get("probe"), optuna.Trial),
            "OptunaSearch._ot_trials does not map a suggested Ray trial id to its optuna.Trial")
    first = asked.pop("probe")
    searcher.suggest("probe")
    _expect(asked_trials(searcher)["probe"].number == first.number + 1,
            "OptunaSearch.suggest does not ask a new optuna.Trial for a trial id withdrawn from _ot_trials")
    study(searcher).tell(first, state=optuna.trial.TrialState.FAIL)
    searcher.on_trial_complete("probe", {"m": 0.5})
    told = told_trials(searcher)
    _expect(isinstance(told, set) and "probe" in told,
            "OptunaSearch._completed_trials does not hold the ids of the trials told to Optuna")
    frozen = study(searcher).get_trials(deepcopy=False)[1]
    _expect(frozen.state == optuna.trial.TrialState.COMPLETE and frozen.value == 0.5,
            "OptunaSearch.on_trial_complete did not tell the asked trial through the study")
    sid = storage_id(frozen)
    _expect(isinstance(sid, int), "FrozenTrial._trial_id is not the trial's storage id (an int)")
    _expect(trial_handle(study(searcher), sid).number == frozen.number,
            "optuna.trial.Trial(study, FrozenTrial._trial_id) is not a handle on that trial")


def _check_asha() -> None:
    """Items 6-7 on a fresh one-bracket ASHA, in both modes."""
    for mode, sign in (("max", 1.0), ("min", -1.0)):
        scheduler = ASHAScheduler(time_attr="t", metric="m", mode=mode, max_t=4, grace_period=1,
                                  reduction_factor=2, brackets=1)
        _expect(scheduler._metric_op == sign, f"ASHAScheduler._metric_op is not {sign:+g} for mode {mode!r}")
        _expect([m for m, _ in asha_rungs(scheduler)] == [4, 2, 1],
                "ASHAScheduler._brackets[0]._rungs is not [(milestone, {trial_id: value})], highest first")
        asha_record(scheduler, "probe", 2, 0.5)
        _expect(asha_rungs(scheduler) == [(4, {}), (2, {"probe": sign * 0.5}), (1, {})],
                "_Bracket.on_result(trial, time, value) does not record a value in the rung its time reached")


def _check_brackets_and_median() -> None:
    """Items 14-15 on a three-bracket ASHA and a median rule."""
    scheduler = ASHAScheduler(time_attr="t", metric="m", mode="max", max_t=4, grace_period=1,
                              reduction_factor=2, brackets=3)
    _expect(asha_bracket_sizes(scheduler) == [3, 2, 1], "ASHAScheduler with 3 brackets does not have 3, 2 and 1 rungs")
    asha_assign(scheduler, "probe", 1)
    scheduler.on_trial_result(None, trial_ref("probe"), {"t": 2, "m": 0.5})
    _expect(asha_rungs(scheduler, 1) == [(4, {}), (2, {"probe": 0.5})],
            "ASHAScheduler.on_trial_result does not record in the bracket _trial_info[trial_id] names")
    scheduler.on_trial_add(None, trial_ref("added"))
    _expect(any(scheduler._trial_info.get("added") is bracket for bracket in scheduler._brackets),
            "ASHAScheduler.on_trial_add no longer puts a new trial's bracket in _trial_info[trial_id]")
    rule = MedianStoppingRule(time_attr="t", metric="m", mode="max", grace_period=1, min_samples_required=1,
                              min_time_slice=float("inf"))
    median_record(rule, "a", {"t": 1, "m": 0.9})
    _expect(rule.on_trial_result(None, trial_ref("b"), {"t": 1, "m": 0.1}) == TrialScheduler.STOP,
            "MedianStoppingRule does not stop a trial below the median of the results recorded under other keys")
    _expect(median_results(rule) == {"a": [{"t": 1, "m": 0.9}], "b": [{"t": 1, "m": 0.1}]},
            "MedianStoppingRule._results does not map each trial key to its results in order")


def _check_generator_and_limiter() -> None:
    """Items 8-9 on a generator over a limiter over a searcher that always has a suggestion."""
    limiter = ConcurrencyLimiter(_ProbeSearcher(), max_concurrent=1)
    generator = SearchGenerator(limiter)
    state = generator.get_state()
    generator.set_state({**state, "total_samples": 1, "finished": True})
    set_sample_budget(generator, 3)
    _expect(generator.total_samples == 3 and not generator.is_finished(),
            "SearchGenerator._total_samples/_finished do not decide total_samples and is_finished()")
    count_as_live(limiter, ["probe"])
    _expect(limiter.suggest("other") is None,
            "ConcurrencyLimiter does not count the trials in live_trials against max_concurrent")
    limiter.on_trial_complete("probe", {})
    _expect(not limiter.live_trials and limiter.num_unfinished_live_trials == 0 and limiter.suggest("other"),
            "ConcurrencyLimiter.on_trial_complete does not release a trial counted in live_trials")


class _Forwarded(Exception):
    """Raised by the stand-in for `tune.run` in `_check_tuner_kwargs`, carrying what it was given."""


def _capture_run(*args: Any, **kwargs: Any) -> None:
    raise _Forwarded(kwargs)


def _check_tuner_kwargs() -> None:
    """Item 10: a Tuner's _tuner_kwargs reach tune.run (stood in for: nothing runs, Ray is not started)."""
    ((name, forwarded),) = resume_kwargs(tune.ResumeConfig()).items()
    _expect(name in inspect.signature(Tuner.__init__).parameters, f"tune.Tuner takes no {name} argument")
    for key in forwarded:
        _expect(key in inspect.signature(tune.run).parameters, f"tune.run takes no {key} argument")
    marker = "internals-probe-marker"  # Tuner copies its kwargs: compared by value
    with tempfile.TemporaryDirectory() as tmp, mock.patch.object(tuner_internal, "run", _capture_run):
        tuner = Tuner(lambda config: None, run_config=tune.RunConfig(storage_path=tmp, name="probe"),
                           **{name: {key: marker for key in forwarded}})
        try:
            tuner.fit()
            given: dict = {}
        except _Forwarded as seen:
            given = seen.args[0]
    _expect(all(given.get(key) == marker for key in forwarded),
            f"Tuner.fit does not pass {name} on to tune.run (TunerInternal._fit_internal)")


class _ProbeRestoreError(Exception):
    pass


class _ProbeStopped(Exception):
    pass


def _failing_resume(self: TuneController, resume_config: Any) -> None:
    raise _ProbeRestoreError


def _stop(cause: BaseException | None) -> None:
    raise _ProbeStopped(cause)


@contextlib.contextmanager
def _silenced(name: str) -> Iterator[None]:
    """The logger `name` reaches no handler for the block (its filters still run): the probe's
    failed restore must not print an error line into a user's launch."""
    logger = logging.getLogger(name)
    handlers, propagate = logger.handlers[:], logger.propagate
    logger.handlers, logger.propagate = [logging.NullHandler()], False
    try:
        yield
    finally:
        logger.handlers, logger.propagate = handlers, propagate


def _check_restore_log() -> None:
    """Item 11: a TuneController whose restore fails calls our handler, inside its `except`, before
    it goes on (its resume is stood in for by one that fails; no cluster: a fixed pending-trial limit)."""
    with (tempfile.TemporaryDirectory() as tmp, mock.patch.object(TuneController, "resume", _failing_resume),
          mock.patch.dict("os.environ", {"TUNE_MAX_PENDING_TRIALS_PG": "1"}), _silenced(RESTORE_LOGGER),
          on_restore_failure(_stop)):
        try:
            TuneController(resume_config=tune.ResumeConfig(), storage=StorageContext(tmp, "probe"),
                           resource_manager_factory=lambda: None)
            cause = None
        except _ProbeStopped as stopped:
            cause = stopped.args[0]
    _expect(isinstance(cause, _ProbeRestoreError),
            f"TuneController.__init__ no longer logs {RESTORE_FAILED!r} (with the cause) on the logger "
            f"{RESTORE_LOGGER!r} when its restore fails")


def _probe_searcher(storage: optuna.storages.BaseStorage, seed: int) -> OptunaSearch:
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created" line
    try:
        return OptunaSearch(_probe_space, metric="m", mode="max", storage=storage, study_name="probe",
                            sampler=optuna.samplers.RandomSampler(seed=seed))
    finally:
        optuna.logging.set_verbosity(verbosity)


def _check_restore_searcher() -> None:
    """Item 12: a searcher saved on a.db, restored after a.db moved to b.db, works on b.db only."""
    with tempfile.TemporaryDirectory() as tmp:
        launched, moved, saved = Path(tmp, "a.db"), Path(tmp, "b.db"), Path(tmp, "searcher.pkl")
        searcher = _probe_searcher(optuna.storages.RDBStorage(f"sqlite:///{launched}"), seed=0)
        searcher.suggest("probe")
        sampler = type(study(searcher).sampler)
        searcher.save(str(saved))
        del searcher
        launched.rename(moved)
        resumed = _probe_searcher(optuna.storages.RDBStorage(f"sqlite:///{moved}"), seed=1)
        own = study(resumed)
        restore_searcher(resumed, str(saved))
        _expect(not launched.exists(), "restoring an OptunaSearch opened the storage it was saved with")
        _expect(study(resumed) is own and isinstance(own.sampler, sampler) and own.sampler is resumed._sampler,
                "OptunaSearch.restore does not restore _ot_study/_sampler from the pickled __dict__")
        asked = asked_trials(resumed).get("probe")
        _expect(isinstance(asked, optuna.Trial), "OptunaSearch.restore does not restore _ot_trials")
        asked.report(0.5, 1)
        own.tell(asked, 0.5)
        reread = optuna.load_study(study_name="probe", storage=f"sqlite:///{moved}").trials
        _expect(not launched.exists() and len(reread) == 1 and reread[0].intermediate_values == {1: 0.5}
                and reread[0].value == 0.5,
                "a restored asked optuna.Trial (its .study/.storage) does not report to the rebound study")


# The trainable of the probe trial (registered by the check; a Trial needs a registered name).
_PROBE_TRAINABLE = "internals_probe"


class _ProbeExperiment:
    def __init__(self, storage: StorageContext):
        self.storage = storage
        self.spec = {"storage": storage}


def _check_relocate_experiment() -> None:
    """Item 13: set_state restores _experiment, whose spec["storage"] new trials are given."""
    tune.register_trainable(_PROBE_TRAINABLE, lambda config: None)
    with tempfile.TemporaryDirectory() as tmp:
        given = StorageContext(str(Path(tmp, "a")), "launched")
        trial = config_parser._create_trial_from_spec({"run": _PROBE_TRAINABLE, "storage": given},
                                                      config_parser._make_parser())
        _expect(trial.storage is not None and trial.storage.experiment_fs_path == given.experiment_fs_path,
                'ray.tune.experiment.config_parser._create_trial_from_spec no longer gives trials spec["storage"]')
        experiment = _ProbeExperiment(StorageContext(str(Path(tmp, "a")), "launched"))
        generator = SearchGenerator(_ProbeSearcher())
        generator.set_state({**generator.get_state(), "experiment": experiment})
        relocate_experiment(generator, str(Path(tmp, "b")), "moved")
        _expect(experiment.spec["storage"].experiment_fs_path == Path(tmp, "b", "moved").as_posix(),
                "SearchGenerator.set_state does not restore _experiment, or StorageContext's "
                "storage_fs_path/experiment_dir_name no longer decide experiment_fs_path")


def _check_relocate_grid() -> None:
    """Item 16: set_state restores _iterators, whose specs new trials are created from."""
    tune.register_trainable(_PROBE_TRAINABLE, lambda config: None)
    with tempfile.TemporaryDirectory() as tmp:
        launched = BasicVariantGenerator()
        launched.add_configurations(tune.Experiment("launched", _PROBE_TRAINABLE, storage_path=str(Path(tmp, "a")),
                                                    config={"job": tune.grid_search(["first", "second"])}))
        launched.next_trial()  # generates every variant, makes a trial of the first
        launched.save_to_dir(tmp, "probe")  # as Tune saves it in the experiment state
        generator = BasicVariantGenerator()
        generator.restore_from_dir(tmp)
        relocate_grid(generator, str(Path(tmp, "b")), "moved")
        trial = generator.next_trial()
        _expect(trial is not None and trial.config == {"job": "second"}
                and trial.storage.experiment_fs_path == Path(tmp, "b", "moved").as_posix(),
                "BasicVariantGenerator.set_state does not restore _iterators with their unresolved_spec and "
                "variants.iterable, or trials no longer get their spec's storage")


CHECKS: dict[str, Callable[[], None]] = {
    "OptunaSearch and optuna.Trial (items 1-5)": _check_optuna_search,
    "ASHA rungs (items 6-7)": _check_asha,
    "ASHA brackets and the median rule (items 14-15)": _check_brackets_and_median,
    "SearchGenerator budget and ConcurrencyLimiter (items 8-9)": _check_generator_and_limiter,
    "Tuner _tuner_kwargs (item 10)": _check_tuner_kwargs,
    "TuneController restore-failure log (item 11)": _check_restore_log,
    "OptunaSearch restore onto this driver's study (item 12)": _check_restore_searcher,
    "SearchGenerator experiment storage after a restore (item 13)": _check_relocate_experiment,
    "BasicVariantGenerator trial storage after a restore (item 16)": _check_relocate_grid,
}


def problems() -> list[str]:
    """What no longer holds on the installed versions: one line per failed check, [] if all hold."""
    found = []
    for name, run_check in CHECKS.items():
        try:
            run_check()
        except Exception as err:  # any failure of a probe is a broken assumption
            found.append(f"{name}: {err if isinstance(err, AssertionError) else repr(err)}")
    return found


def check() -> None:
    """Raise `UnsupportedInternals`, naming the supported versions, unless every assumption holds."""
    found = problems()
    if found:
        supported = ", ".join(f"{lib} {version}" for lib, version in SUPPORTED.items())
        raise UnsupportedInternals(
            f"the installed ray {ray.__version__} and optuna {optuna.__version__} no longer provide internals "
            f"this project relies on (supported: {supported}, as pinned in requirements.txt):\n"
            + "\n".join(f"  - {line}" for line in found)
            + "\ninstall the supported versions (pip install -r requirements.txt), or adapt search/internals.py "
            "to the new ones")
