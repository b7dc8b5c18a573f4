"""`python -m search status RUN_DIR`: where a search stands, while it runs or after."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

from model import metrics as M
from results.export import load_records, run_leaderboard, top_table
from results.files import RunFiles, driver_pid, read_run
from results.records import COMPLETED, ERROR, PRUNED, RUNNING
from results.timeline import busy_fraction


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
    stamps = [h[M.TIMESTAMP] for r in records for h in r.history if M.TIMESTAMP in h]
    until = (now or time.time()) if pid else max(stamps, default=started)
    lines = [
        f"run {run['name']} ({files.root}), launched {run['created']}; "
        + (f"a driver is running (pid {pid})" if pid else "no driver is running"),
        f"trials: {len(frame)} of {budget} started; {counts[COMPLETED]} completed, {counts[PRUNED]} pruned, "
        f"{counts[RUNNING]} running, {counts[ERROR]} failed",
        f"elapsed: {_duration(until - started)}" + ("" if pid else " (launch to last result)"),
    ]
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
    if counts[RUNNING] and not pid:
        lines += ["", f"the search stopped before it finished: `python -m search resume {files.root}`"]
    return "\n".join(lines)
