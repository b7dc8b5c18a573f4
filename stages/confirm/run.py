"""`python -m search confirm RUN_DIR` and its resume: plan, write confirm.json, fit the linear
member, run the network jobs on Ray (search/confirm_jobs.py), write the outputs."""

from __future__ import annotations

import dataclasses
import datetime as dt
import shlex
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.fs

from model.errors import ConfigError
from results import confirm as C
from rundir import preflight
from rundir.confirm import (
    DEFAULT_BIGRAM_TOP,
    DEFAULT_FOLDS,
    DEFAULT_SEEDS,
    DEFAULT_TOP,
    NETWORK,
    RACED_OUT,
    RESUME_COMMAND,
    ConfirmSpec,
    Member,
    RaceRule,
    read_jobs,
    read_ranking,
    searched_configs,
)
from rundir.inputs import check_space_copy
from rundir.io import check_writable
from rundir.lock import run_lock
from rundir.paths import ConfirmFiles, RunFiles, confirm_experiment, is_uri
from rundir.record import run_settings
from rundir.settings import Settings
from rundir.trials import RUNNING, load_records
from search import internals
from search.confirm_jobs import JobGrid, checked_session, run_jobs, slots
from search.tracking import forget_confirm_runs
from search.trainable import confirm_trial
from stages.confirm.plan import (
    AUTO_TOP,
    AUTO_TOP_CAP,
    DATA_SETTINGS,
    RESOURCE_SETTINGS,
    FoldData,
    plan_jobs,
    plan_members,
    with_resources,
)
from stages.confirm.writer import ConfirmStage

Out = Callable[[str], Any]
MAX_SEEDS = 10  # confirm --seeds


def stage_finished(files: ConfirmFiles) -> bool:
    """Every member raced out, or complete with its OOF file written; and confirm.csv is written."""
    if not files.confirm_json.exists() or not files.jobs_json.exists() or not files.confirm_csv.exists():
        return False
    spec, jobs = ConfirmSpec.load(files.confirm_json), read_jobs(files.jobs_json)
    status = {m.name: C.member_status(jobs, m, folds=spec.folds, seeds=spec.seeds) for m in spec.members}
    return all(status[m.name] == RACED_OUT or (status[m.name] == C.COMPLETE and files.oof(m.name).exists())
               for m in spec.members)


def stage_pending(run_dir: str | Path) -> bool:
    """RUN_DIR has a confirm stage that has not finished: what `resume` continues."""
    files = RunFiles(Path(run_dir)).confirm
    return files.confirm_json.exists() and not stage_finished(files)


@dataclasses.dataclass(frozen=True)
class Outcome:
    files: ConfirmFiles
    table: pd.DataFrame
    finished: bool  # every job completed and every output written
    already: bool = False  # the stage had finished before this command


def _stage(run_files: RunFiles, spec: ConfirmSpec, data: FoldData, run: dict[str, Any]) -> ConfirmStage:
    return ConfirmStage(run_files.confirm, spec, plans=plan_jobs(spec, run_files),
                        vocabs=[d.vocab for d in data.encoded], held_out=data.held_out, y=data.y, ids=data.ids,
                        param_names=list(run.get("searched", [])))


def confirm(run_dir: str | Path, *, top: int | str = DEFAULT_TOP, folds: int = DEFAULT_FOLDS,
            seeds: int = DEFAULT_SEEDS, linear: bool = True, race: RaceRule | None = None, force: bool = False,
            address: str | None = None,
            cpus_per_trial: float | None = None, gpus_per_trial: float | None = None,
            max_concurrent: int | None = None, max_failures: int | None = None, time_budget_s: float | None = None,
            bigrams: str | Path | None = None, bigram_top: int = DEFAULT_BIGRAM_TOP,
            argv: list[str] | None = None, out: Out = print, trial_fn: Callable = confirm_trial) -> Outcome:
    """Run the confirm stage of the search in `run_dir` (stages/confirm/__init__.py), its network jobs
    for at most `time_budget_s` wall seconds (jobs unfinished then stay unfinished; `resume` goes on).
    `trial_fn` is what each Ray trial calls, with `confirm_trial`'s signature; tests wrap it to inject
    failures. `bigrams`: a checkpoint of token pairs (`embed --view bigrams`); the first `bigram_top`
    configs are confirmed again reading it (`rundir.confirm.bigram_twin`)."""
    internals.check()
    run_files = RunFiles(Path(run_dir))
    run, settings = run_settings(run_files)
    check_space_copy(run_files)
    load_records(run_files)  # a damaged trials.json is refused before the lock
    for flag, value, low in (("--top", top, 0), ("--folds", folds, 2), ("--seeds", seeds, 1)):
        if value != AUTO_TOP and (not isinstance(value, int) or value < low):
            raise ConfigError(f"{flag} is {value}, but must be >= {low}" + (" or auto" if flag == "--top" else ""))
    if bigrams is not None and (top == 0 or bigram_top < 1):
        raise ConfigError(f"--bigrams confirms the first --bigram-top configs again in the bigram view, but "
                          f"{'--top 0 confirms none' if top == 0 else f'--bigram-top is {bigram_top}'}; pass "
                          "--top and --bigram-top of 1 or more, or drop --bigrams")
    if top == 0 and not linear:
        raise ConfigError("--top 0 confirms the linear member alone, which --no-linear leaves out: nothing to "
                          "confirm; pass --top 1 or more, or drop --no-linear")
    if seeds > MAX_SEEDS:
        raise ConfigError(f"--seeds is {seeds}, above {MAX_SEEDS}: every seed retrains every config on every fold; "
                          "a few seeds are all an ensemble can use")
    check_race(race, folds=folds)
    settings = with_resources(settings, address=address, cpus_per_trial=cpus_per_trial, gpus_per_trial=gpus_per_trial,
                              max_concurrent=max_concurrent, max_failures=max_failures)
    preflight.check_settings(settings)
    check_writable(run_files.root, "confirm")
    with run_lock(run_files):
        if run_files.confirm.confirm_json.exists() and not force:
            return _already(run_files, out)
        members = _members(run_files, run, top=top, linear=linear, seed=settings.seed, out=out,
                           bigrams=None if bigrams is None else str(Path(bigrams).resolve()), bigram_top=bigram_top)
        networks = searched_configs(members)
        spec = ConfirmSpec(top=networks if top == AUTO_TOP else top, folds=folds, seeds=seeds,
                           split_seed=settings.seed, max_epochs=run["max_epochs"],
                           members=tuple(members), labels=(), rows=0, race=race)
        plan_jobs(spec, run_files)  # every config valid, every checkpoint directory there: before Ray
        data = FoldData.load(settings, folds=folds, seed=settings.seed)
        with checked_session(settings, _storage_root(settings, run_files), out, log_dir=run_files.root):
            settings = dataclasses.replace(settings, max_concurrent=slots(settings))
            if force:
                _delete_stage(settings, run_files, out)
            spec = dataclasses.replace(
                spec, created=dt.datetime.now().astimezone().isoformat(timespec="seconds"),
                command=shlex.join(["python", "-m", "search", *(argv or ["confirm", str(run_dir)])]),
                settings={k: getattr(settings, k) for k in (*DATA_SETTINGS, *RESOURCE_SETTINGS)},
                labels=tuple(data.labels.level2), rows=len(data.frame))
            spec.save(run_files.confirm.confirm_json)
            stage = _stage(run_files, spec, data, run)
            stage.save()
            _say_plan(run_files.confirm, spec, data, out)
            return _run(stage, data, settings, run_files, resume=False, retry=False, out=out, trial_fn=trial_fn,
                        time_budget_s=time_budget_s)


def check_race(race: RaceRule | None, *, folds: int) -> None:
    """--race-min-folds within 2..--folds (a paired test needs two folds), --race-alpha within (0, 0.5]."""
    if race is None:
        return
    if not 2 <= race.min_folds <= folds:
        raise ConfigError(f"--race-min-folds is {race.min_folds}, but must be from 2 to --folds ({folds})")
    if not 0 < race.alpha <= 0.5:
        raise ConfigError(f"--race-alpha is {race.alpha}, but must be above 0 and at most 0.5")


def _already(run_files: RunFiles, out: Out) -> Outcome:
    """`confirm` on a run that has a stage: say where a finished one's table is; refuse an unfinished one."""
    files = run_files.confirm
    if not stage_finished(files):
        raise ConfigError(f"{run_files.root} has an unfinished confirm stage: continue it with "
                          f"`python -m search resume {run_files.root}` (or pass --force to delete {files.root} "
                          "and start over)")
    spec = ConfirmSpec.load(files.confirm_json)
    out(f"the confirm stage of {run_files.root} already finished (top {spec.top}, {spec.folds} folds, {spec.seeds} "
        f"seed(s)): {files.confirm_csv}. To confirm with other --top, --folds or --seeds, pass --force (deletes "
        f"{files.root} and starts over)")
    return Outcome(files, read_ranking(files), finished=True, already=True)


def _members(run_files: RunFiles, run: dict[str, Any], *, top: int | str, linear: bool, seed: int, out: Out,
             bigrams: str | None = None, bigram_top: int = DEFAULT_BIGRAM_TOP) -> list[Member]:
    members = plan_members(run_files.root, top=top, linear=linear, split_seed=seed, bigrams=bigrams,
                           bigram_top=bigram_top)
    networks = searched_configs(members)
    if top == AUTO_TOP:
        out(f"--top auto: {networks} completed trial(s) cannot be told apart from rank 1 on the search's fold "
            f"(at most {AUTO_TOP_CAP}): " + ", ".join(m.name for m in members if m.kind == NETWORK))
    elif networks < top:
        out(f"note: the run has {networks} completed trial(s); confirming those (--top {top})")
    unfinished = sum(r.status == RUNNING for r in load_records(run_files).values())
    if unfinished:
        out(f"note: {unfinished} trial(s) of the search have not finished (`python -m search resume "
            f"{run_files.root} --num-samples N` continues them); confirming the completed ones")
    return members


def _storage_root(settings: Settings, run_files: RunFiles) -> str:
    """Where the stage's jobs checkpoint: every node of a cluster must see it."""
    return settings.storage_path if is_uri(settings.storage_path) else str(run_files.root.parent)


def _delete_stage(settings: Settings, run_files: RunFiles, out: Out) -> None:
    """--force: delete RUN_DIR/confirm and, with a URI storage, the stage's Ray experiment there."""
    files = run_files.confirm
    if not files.root.exists():
        return
    shutil.rmtree(files.root)
    forget_confirm_runs(run_files.root)  # --track: the new stage logs into new runs
    storage, name = confirm_experiment(settings.storage_path, run_files)
    if is_uri(storage):  # the stage's Ray experiment lives outside RUN_DIR
        fs, path = pyarrow.fs.FileSystem.from_uri(storage)
        fs.delete_dir_contents(f"{path}/{name}", missing_dir_ok=True)
    out(f"--force: deleted the previous confirm stage ({files.root})")


def _say_plan(files: ConfirmFiles, spec: ConfirmSpec, data: FoldData, out: Out) -> None:
    networks = sum(m.kind == NETWORK for m in spec.members)
    linear = len(spec.members) > networks
    out(f"CONFIRM {files.root}")
    out(f"data: {data.source}: {spec.rows} rows in {spec.folds} folds (split seed {spec.split_seed}), "
        f"{len(spec.labels)} labels; {networks} config(s) x {spec.folds} folds x {spec.seeds} seed(s) at "
        f"{spec.max_epochs} epochs" + (", and the linear member" if linear else ""))
    if spec.race is not None:
        out(f"racing: fold by fold; a config below the best on at least {spec.race.min_folds} shared folds "
            f"(one-sided paired t-test, p < {spec.race.alpha:g}) is raced out and its jobs left are skipped")
    for note in data.notes():
        out(note)


def resume_confirm(run_dir: str | Path, *, max_failures: int | None = None, retry_errored: bool = False,
                   time_budget_s: float | None = None, out: Out = print, trial_fn: Callable = confirm_trial
                   ) -> Outcome:
    """Continue the unfinished confirm stage in `run_dir`: jobs that were training continue from
    their last checkpoint, completed jobs are never trained again, errored ones only with
    `retry_errored` (from their last checkpoint); then write the outputs a kill left unwritten."""
    internals.check()
    run_files = RunFiles(Path(run_dir))
    run, settings = run_settings(run_files)
    files = run_files.confirm
    spec = ConfirmSpec.load(files.confirm_json)
    settings = with_resources(settings, **{k: spec.settings.get(k) for k in RESOURCE_SETTINGS})
    settings = with_resources(settings, max_failures=max_failures)
    preflight.check_settings(settings)
    check_writable(files.root, "resume")
    data = FoldData.load(settings, folds=spec.folds, seed=spec.split_seed)
    if tuple(data.labels.level2) != spec.labels or len(data.frame) != spec.rows:
        raise ConfigError(f"the training data ({data.source}) is not the data the confirm stage started on "
                          f"({spec.rows} rows, {len(spec.labels)} labels): restore it, or start over with "
                          "`confirm --force`")
    with run_lock(run_files):
        stage = _stage(run_files, spec, data, run)
        jobs = spec.jobs()
        out(f"CONFIRM {files.root}")
        out(f"resuming the confirm stage: {sum(stage.completed(j) for j in jobs)} of {len(jobs)} jobs completed")
        return _run(stage, data, settings, run_files, resume=True, retry=retry_errored, out=out, trial_fn=trial_fn,
                    time_budget_s=time_budget_s)


def _run(stage: ConfirmStage, data: FoldData, settings: Settings, run_files: RunFiles, *, resume: bool, retry: bool,
         out: Out, trial_fn: Callable, time_budget_s: float | None = None) -> Outcome:
    """Fit the linear member's missing folds, run (or continue) the network jobs, write the outputs."""
    stage.say = out
    if stage.spec.race is not None:
        stage.race()  # a driver killed between a job's end and its race leaves the decision to this one
    stage.fit_linear(data, out)
    skipped = frozenset(j for j in stage.network_jobs() if stage.failed(j) and not retry)
    pending = stage.spec.job_order([j for j in stage.network_jobs() if not stage.settled(j) and j not in skipped])
    if pending:
        grid = JobGrid(plans=stage.plans, folds=data.encoded, pending=pending, skipped=skipped,
                       settled=frozenset(j for j in stage.network_jobs() if stage.settled(j)),
                       max_epochs=stage.spec.max_epochs, time_budget_s=time_budget_s,
                       race=stage.spec.race is not None)
        with checked_session(settings, _storage_root(settings, run_files), out, log_dir=run_files.root):
            run_jobs(grid, stage, settings, experiment=confirm_experiment(settings.storage_path, run_files),
                     retry=retry, out=out, trial_fn=trial_fn, run_dir=run_files.root)
    frame = stage.finish()
    errors = stage.errors()
    finished = stage_finished(stage.files)
    out(f"\n{summary(frame)}\n\nconfirm.csv: {stage.files.confirm_csv}")
    if errors:
        out(f"{len(errors)} job(s) ended as errors ({', '.join(errors[:5])}{' ...' if len(errors) > 5 else ''}; "
            f"see {stage.files.jobs_json}): fix the cause, then `python -m search resume {run_files.root} "
            "--retry-errored`")
    elif not finished:
        out(f"the confirm stage stopped early: continue it with `{RESUME_COMMAND.format(run_dir=run_files.root)}`")
    else:
        out(f"next: python -m search ensemble {shlex.quote(str(run_files.root))}   (an ensemble of the members, "
            "scored by nested cross-validation)")
    return Outcome(stage.files, frame, finished=finished)


def summary(frame: pd.DataFrame, top: int = 10) -> str:
    counts = frame["status"].value_counts().to_dict()
    return (f"{len(frame)} members: " + ", ".join(f"{n} {s}" for s, n in counts.items())
            + f"\n\n{C.top_rows(frame, top)}")
