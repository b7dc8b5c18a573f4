"""`python -m search status RUN_DIR`: where a search (and its confirm stage) stands, while it runs or after."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import numpy as np
import optuna

from model import metrics as M
from model.errors import ConfigError
from results.export import run_leaderboard, tied_trials, top_table
from results.ranking import fold_std
from results.timeline import busy_fraction
from rundir import keys as K
from rundir.confirm import RACED_OUT, ConfirmSpec, read_jobs
from rundir.lock import driver_pid
from rundir.paths import ConfirmFiles, RunFiles
from rundir.record import check_study, describe_method, read_run, run_method
from rundir.trials import COMPLETED, ERROR, PRUNED, RUNNING, load_records


def _duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    hours, rest = divmod(seconds, 3600)
    return (f"{hours}h" if hours else "") + f"{rest // 60}m{rest % 60:02d}s"


def status_text(run_dir: str | Path, *, top: int = 5, now: float | None = None) -> str:
    files = RunFiles(Path(run_dir))
    frame = run_leaderboard(run_dir)  # raises a clear error for a non-run directory
    run = read_run(files)
    records = load_records(files).values()
    pid = driver_pid(files)
    counts = {s: sum(r.status == s for r in records) for s in (COMPLETED, PRUNED, RUNNING, ERROR)}
    budget = run["settings"]["num_samples"]
    started = dt.datetime.fromisoformat(run["created"]).timestamp()
    stamps = [h[K.TIMESTAMP] for r in records for h in r.history if K.TIMESTAMP in h]
    until = (now or time.time()) if pid else max(stamps, default=started)
    lines = [
        f"run {run['name']} ({files.root}), launched {run['created']}; "
        + (f"a driver is running (pid {pid})" if pid else "no driver is running"),
        f"trials: {len(frame)} of {budget} started; {counts[COMPLETED]} completed, {counts[PRUNED]} pruned, "
        f"{counts[RUNNING]} running, {counts[ERROR]} failed",
        f"method: {describe_method(run_method(run), run['settings'])}",
        f"elapsed: {_duration(until - started)}" + ("" if pid else " (launch to last result)"),
    ]
    if repeats := duplicate_proposals(files, run["name"]):
        lines.append(f"duplicates: the sampler proposed {repeats} configurations already trained or training; "
                     "they reused the earlier result instead of training again")
    slots = run.get("concurrency")
    busy = busy_fraction(records, slots, now=time.time() if pid else None) if slots else None
    if busy is not None:
        lines.append(f"slots: {slots} trials at a time; all {slots} busy {busy:.0%} of the time")
    finished = frame[frame["status"] == COMPLETED]
    if len(finished):
        best = finished.iloc[0]
        lines.append(f"best completed: level-2 macro-F1 {best[M.LEVEL2_MACRO_F1]:.4f} (trial "
                     f"{best['optuna_number']}, epoch {best[M.BEST_EPOCH]} of {best['epochs']})")
    if len(frame) and top > 0:
        lines += ["", f"top {min(top, len(frame))}:", top_table(frame, top)]
    lines += tie_lines(frame, files)
    if counts[RUNNING] and not pid:
        lines += ["", f"the search stopped before it finished: `python -m search resume {files.root}`"]
    if files.confirm.confirm_json.exists():
        lines += ["", *confirm_lines(files.confirm, driver_running=pid is not None)]
    return "\n".join(lines)


def tie_lines(frame, files: RunFiles) -> list[str]:
    """Which trials cannot be told apart from rank 1 on this fold (results/noise.py)."""
    tied = tied_trials(frame)
    if frame.empty or frame["tied_with_best"].isna().all():
        return []
    numbers = ", ".join(str(n) for n in tied["optuna_number"].tolist())
    completed = len(tied_trials(frame, status=COMPLETED))
    return ["", f"tied with rank 1 on this fold (paired bootstrap of the dev rows): trial(s) {numbers}; "
                f"`python -m search confirm {files.root} --top auto` confirms the {completed} completed one(s)"]


def confirm_lines(files: ConfirmFiles, *, driver_running: bool) -> list[str]:
    """The confirm stage's progress: jobs by state, then each member's folds done and its level-2
    macro-F1 so far (mean +- std over its completed jobs) and the devices they trained on."""
    spec, jobs = ConfirmSpec.load(files.confirm_json), read_jobs(files.jobs_json)
    planned = {m.name: m.jobs(folds=spec.folds, seeds=spec.seeds) for m in spec.members}
    states = [jobs[j].status if j in jobs else None for ids in planned.values() for j in ids]
    counts = {s: states.count(s) for s in (COMPLETED, RUNNING, ERROR, RACED_OUT)}
    lines = [f"confirm: {len(spec.members)} members x {spec.folds} folds x {spec.seeds} seeds = {len(states)} jobs; "
             f"{counts[COMPLETED]} completed, {counts[RUNNING]} running, {counts[ERROR]} failed, "
             + (f"{counts[RACED_OUT]} raced out, " if counts[RACED_OUT] else "")
             + f"{len(states) - sum(counts.values())} not started"]
    for name, ids in planned.items():
        done = [jobs[j] for j in ids if j in jobs and jobs[j].completed]
        scores = [job.level2_macro_f1 for job in done]
        spread = f" +- {fold_std(scores):.4f}" if len(scores) > 1 else ""  # the std as confirm.csv has it
        score = f"level-2 macro-F1 {np.mean(scores):.4f}{spread} so far" if scores else "no job completed yet"
        # Records from before jobs noted their device have none: nothing is said for them.
        devices = sorted({jobs[j].device for j in ids if j in jobs and jobs[j].device})
        where = f", on {', '.join(devices)}" if devices else ""
        raced = next((jobs[j].note for j in ids if j in jobs and jobs[j].status == RACED_OUT), None)
        lines.append(f"  {name}: {len(scores)}/{len(ids)} jobs completed, {score}{where}"
                     + (f"; {raced}" if raced else ""))
    if counts[COMPLETED] + counts[RACED_OUT] == len(states):
        lines.append(f"confirm finished: {files.confirm_csv}")
    elif not driver_running:
        lines.append(f"the confirm stage stopped before it finished: `python -m search resume {files.run_dir}`")
    return lines


def duplicate_proposals(files: RunFiles, study_name: str) -> int:
    """Optuna trials the duplicate guard settled without training (search/searcher.py)."""
    try:
        check_study(files, study_name)  # opens nothing that is not there; writes only to undo a killed write
    except ConfigError:
        return 0  # `status` works without the study (report and resume say what is wrong with it)
    study = optuna.load_study(study_name=study_name, storage=files.study_url)
    return sum(K.DUPLICATE_OF in t.user_attrs for t in study.get_trials(deepcopy=False))
