"""`python -m benchmarks.gpu_kit run`: every GPU check in order, one summary.

Unpacks the kit (when `--kit` is given) and puts its site directory and the repository on the
checks' PYTHONPATH, then runs the checks of checks.py one after another, each command in its own
process session under its check's time limit (and what is left of `--budget-s`). A check that runs
past its limit has its whole session killed (Ray's raylet, GCS and workers included) and is recorded
as "timeout" with its output's tail; a failing check is recorded and the run goes on. After every
check, OUT/summary.json, OUT/summary.md and OUT/checks.log are rewritten (three files, no folders:
the run tool brings back at most 8 files, 2 folders deep), so a run cut short still reports.

Uses the standard library only: it starts on the device's bare Python, before the kit is unpacked.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from benchmarks.gpu_kit import checks as C

REPO = Path(__file__).resolve().parents[2]
GPU_BUDGET_S = 480.0  # checks.py: the sum of the GPU limits
MIN_START_S = 5.0  # a check the budget leaves less than this is skipped: no check gets through its imports sooner
TAIL_PASS, TAIL_OTHER = 1500, 6000  # characters of output kept in the summary per check
LOG_LIMIT = 15 * 2**20  # the run tool brings back files of up to 16 MiB


class CappedLog:
    """A text file that stops growing at `limit` characters, saying so once (the rest of a check's
    output is still in its summary tail)."""

    def __init__(self, file: IO[str], limit: int = LOG_LIMIT):
        self.file, self.left = file, limit - file.tell()

    def write(self, text: str) -> None:
        if self.left > 0:
            self.file.write(text[:self.left])
            if len(text) >= self.left:
                self.file.write(f"\n[checks.log stops here: {LOG_LIMIT // 2**20} MiB, what the run tool brings back]\n")
            self.left -= len(text)

    def flush(self) -> None:
        self.file.flush()


@dataclass
class Outcome:
    """What one command did."""

    code: int | None  # None when it was killed at its limit
    output: str
    timed_out: bool
    seconds: float
    left_running: int = 0  # processes of its session still running after it ended, then stopped


def session_pids(sid: int) -> list[int]:
    """The live processes of session `sid` (Linux /proc; elsewhere none). Zombies are left out: an
    orphan's is reaped by init, not by us."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 3 and int(fields[3]) == sid and fields[0] != "Z":  # after "(comm)": state ppid pgrp sid
            pids.append(int(stat.parent.name))
    return pids


def stop_session(proc: subprocess.Popen) -> int:
    """End the command, if it still runs, and everything it started (its session: Ray's raylet, GCS,
    agents and workers): SIGTERM, then SIGKILL to what is left after 5 s. Returns how many processes
    were signalled."""
    signalled = 0
    for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 2.0)):
        pids = set(session_pids(proc.pid)) | ({proc.pid} if proc.poll() is None else set())
        if not pids:
            break
        signalled = max(signalled, len(pids))
        for pid in pids:
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and (proc.poll() is None or session_pids(proc.pid)):
            time.sleep(0.1)
    return signalled


def run_command(argv: list[str], *, timeout: float, env: dict[str, str], cwd: Path, log: CappedLog) -> Outcome:
    """Run `argv` in a new session, its output (stdout and stderr together) copied to `log`; kill
    the session at `timeout` seconds."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            text=True, errors="replace", env=env, cwd=cwd, start_new_session=True)
    lines: list[str] = []

    def read() -> None:
        for line in proc.stdout:
            lines.append(line)
            log.write(line)
        log.flush()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    timed_out = False
    try:
        proc.wait(timeout=max(timeout, 0.1))
    except subprocess.TimeoutExpired:
        timed_out = True
    # Killed at its limit, or ended with processes of its session still running (a Ray agent that
    # outlives its driver): either way nothing of this check may run into the next one.
    left = stop_session(proc)
    reader.join(timeout=10)  # a grandchild that escaped the session may hold the pipe: do not wait on it
    return Outcome(None if timed_out else proc.returncode, "".join(lines), timed_out,
                   round(time.perf_counter() - started, 1), 0 if timed_out else left)


def tail(text: str, limit: int) -> str:
    return text if len(text) <= limit else "..." + text[-limit:]


def known_missing(check: C.Check, probe: dict[str, Any] | None) -> bool:
    """Whether the environment probe listed the registry's encoders and `check`'s is not among them."""
    encoders = (probe or {}).get("encoders")
    return check.encoder is not None and isinstance(encoders, list) and check.encoder not in encoders


def run_check(check: C.Check, limit: float, *, env: dict[str, str], log: CappedLog,
              probe: dict[str, Any] | None) -> dict[str, Any]:
    """Run `check`'s commands in order within `limit` seconds and judge it (checks.py); the record
    the summary keeps. A command that fails ends the check (later ones depend on it)."""
    record: dict[str, Any] = {"name": check.name, "description": check.description, "limit_s": round(limit, 1),
                              "commands": [shlex.join(argv) for argv in check.commands]}
    if known_missing(check, probe):
        return {**record, "status": C.MISSING, "wall_s": 0.0, "exit": None, "left_running": 0, "output_tail": "",
                "figures": {"encoder": check.encoder, "registry": probe["encoders"]}}
    started, outputs, outcome, left_running = time.perf_counter(), [], None, 0
    for argv in check.commands:
        log.write(f"\n===== {check.name}: {shlex.join(argv)}\n")
        log.flush()
        outcome = run_command(list(argv), timeout=limit - (time.perf_counter() - started), env=env, cwd=REPO, log=log)
        outputs.append(outcome.output)
        left_running += outcome.left_running
        if outcome.timed_out or outcome.code != 0:
            break
    output = "".join(outputs)
    try:
        status, figures = check.evaluate(outcome.code if outcome.code is not None else -1, output)
    except Exception as err:  # noqa: BLE001 - a figure the output lacks must not end the run
        status, figures = C.FAIL, {"evaluate_error": f"{type(err).__name__}: {err}"}
    if outcome.timed_out:
        status = C.TIMEOUT
    return {**record, "status": status, "wall_s": round(time.perf_counter() - started, 1), "exit": outcome.code,
            "left_running": left_running,
            "figures": figures, "output_tail": tail(output, TAIL_PASS if status == C.PASS else TAIL_OTHER)}


def markdown(summary: dict[str, Any]) -> str:
    lines = [f"# GPU checks: {summary.get('device_name') or 'no GPU'} ({summary['mode']}), {summary['started_at']}",
             "", f"wall {summary['wall_s']:.0f} s, budget {summary['budget_s'] or 'none'}; "
             + ", ".join(f"{k} {v}" for k, v in summary["counts"].items()), "",
             "| check | status | wall s | limit s | key figures |", "|---|---|---|---|---|"]
    lines += [f"| {r['name']} | {r['status']} | {r['wall_s']:.0f} | {r['limit_s']:.0f} | {r['headline']} |"
              for r in summary["checks"]]
    return "\n".join(lines) + "\n"


def strict(value: Any) -> Any:
    """`value` with every NaN or infinity replaced by None, so summary.json is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: strict(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [strict(v) for v in value]
    return value


def write_summary(summary: dict[str, Any], out: Path) -> None:
    """OUT/summary.json and OUT/summary.md, each written whole then renamed (a kill leaves the last)."""
    counts = {status: sum(r["status"] == status for r in summary["checks"]) for status in C.STATUSES}
    summary["counts"] = {k: v for k, v in counts.items() if v}
    for name, text in (("summary.json", json.dumps(strict(summary), indent=1, allow_nan=False)),
                       ("summary.md", markdown(summary))):
        partial = out / f".{name}.partial"
        partial.write_text(text, encoding="utf-8")
        os.replace(partial, out / name)


def unpack_kit(kit: Path, dest: Path, repo: Path = REPO) -> dict[str, Any]:
    """Unpack kit.tar.xz into `dest` (skipped when `dest` already holds this very archive) and copy
    its .pyc files of the repository's own modules into `repo`; {"site", "unpack_s", "reused"}.

    The kit must be built for this Python's minor version: its .pyc files are valid for no other."""
    manifest = kit.parent / "manifest.json"
    if manifest.is_file():
        wanted = tuple(json.loads(manifest.read_text())["kit_python"])
        if wanted != sys.version_info[:2]:
            raise SystemExit(f"error: {kit} was built for Python {'.'.join(map(str, wanted))}, this is "
                             f"{sys.version.split()[0]}: run it with python{'.'.join(map(str, wanted))} (the device's "
                             "python3), or run without --kit on this machine")
    started, stamp = time.perf_counter(), dest / ".unpacked-from"
    key = f"{kit.resolve()} {kit.stat().st_size} {kit.stat().st_mtime_ns}"
    reused = stamp.is_file() and stamp.read_text() == key
    if not reused:
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        with tarfile.open(kit, "r:xz") as tar:
            tar.extractall(dest, filter="tar")  # "tar" keeps the modes: raylet and gcs_server stay executable
        stamp.write_text(key)
    if (dest / "repo").is_dir():
        shutil.copytree(dest / "repo", repo, dirs_exist_ok=True)
    return {"site": str(dest / "site"), "unpack_s": round(time.perf_counter() - started, 1), "reused": reused}


def checks_env(site: str | None) -> dict[str, str]:
    """The checks' environment: the kit's site directory and the repository first on PYTHONPATH
    (Ray's workers inherit it), unbuffered output so a killed check's last lines are in the log."""
    env = dict(os.environ)
    paths = [p for p in (site, str(REPO), env.get("PYTHONPATH")) if p]
    env.update(PYTHONPATH=os.pathsep.join(paths), PYTHONUNBUFFERED="1")
    return env


def select(checks: list[C.Check], only: str | None, limits: list[str]) -> list[C.Check]:
    """`--only` and `--limit NAME=SECONDS` applied; unknown names are refused with the valid ones."""
    names = [c.name for c in checks]
    wanted = [n.strip() for n in only.split(",") if n.strip()] if only else names
    overrides = {}
    for item in limits:
        name, _, seconds = item.partition("=")
        try:
            overrides[name] = float(seconds)
        except ValueError:
            raise SystemExit(f"error: --limit {item}: write NAME=SECONDS, e.g. --limit gpu_check=90") from None
    unknown = sorted((set(wanted) | set(overrides)) - set(names))
    if unknown:
        raise SystemExit(f"error: no check named {', '.join(unknown)}; the checks are: {', '.join(names)}")
    return [replace(c, limit_s=overrides.get(c.name, c.limit_s)) for c in checks if c.name in wanted]


def run_all(checks: list[C.Check], *, out: Path, env: dict[str, str], budget_s: float | None,
            summary: dict[str, Any]) -> dict[str, Any]:
    """Run `checks` in order, each within the smaller of its limit and what is left of `budget_s`,
    rewriting the summary after each; a check the budget leaves under MIN_START_S is skipped."""
    started = time.perf_counter()
    probe: dict[str, Any] | None = None
    with open(out / "checks.log", "a", encoding="utf-8") as file:  # main starts it empty
        log = CappedLog(file)
        for number, check in enumerate(checks, start=1):
            left = None if budget_s is None else budget_s - (time.perf_counter() - started)
            limit = check.limit_s if left is None else min(check.limit_s, left)
            if left is not None and left < min(check.limit_s, MIN_START_S):  # the budget, not its own limit
                result = {"name": check.name, "description": check.description, "status": C.SKIPPED,
                          "limit_s": max(limit, 0.0), "wall_s": 0.0, "exit": None, "left_running": 0, "figures": {},
                          "output_tail": f"not run: {max(left or 0, 0):.0f} s of the --budget-s {budget_s:g} were left"}
            else:
                result = run_check(check, limit, env=env, log=log, probe=probe)
            try:
                result["headline"] = check.headline(result["figures"]) if result["status"] != C.SKIPPED else ""
            except Exception as err:  # noqa: BLE001 - the table must not cost the summary
                result["headline"] = f"({type(err).__name__}: {err})"
            if check.name == "env" and isinstance(result["figures"], dict):
                probe = result["figures"]
                summary.update(device_name=probe.get("device_name"), python=probe.get("python"),
                               torch=probe.get("torch"), cuda=probe.get("cuda"), versions=probe.get("versions"))
            summary["checks"].append(result)
            summary["wall_s"] = round(time.perf_counter() - started, 1)
            write_summary(summary, out)
            print(f"[{number}/{len(checks)}] {check.name}: {result['status']} in {result['wall_s']:.0f} s (limit "
                  f"{result['limit_s']:.0f} s) {result['headline']}", flush=True)
    return summary


def main(args: argparse.Namespace) -> int:
    """`run` (see __main__.py for the flags): exit status 0 when every check passed or was missing."""
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    (out / "checks.log").write_text("", encoding="utf-8")
    kit = args.kit.resolve() if args.kit else None  # the checks run with the repository as their cwd
    kit_info = unpack_kit(kit, args.unpack_to) if kit else None
    sizes = C.SMOKE if args.cpu_smoke else C.GPU
    budget = args.budget_s if args.budget_s is not None else (None if args.cpu_smoke else GPU_BUDGET_S)
    manifest = kit.parent / "manifest.json" if kit and (kit.parent / "manifest.json").is_file() else None
    summary: dict[str, Any] = {
        "mode": "cpu-smoke" if args.cpu_smoke else "gpu", "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "budget_s": budget, "kit": kit_info, "runner_python": sys.version.split()[0], "wall_s": 0.0, "checks": [],
        "kit_manifest": {k: v for k, v in json.loads(manifest.read_text()).items()
                         if k in ("built_at", "wheels", "archive_bytes")} if manifest else None,
    }
    with tempfile.TemporaryDirectory(prefix="gpukit-") as work:
        encoders = tuple(n.strip() for n in args.encoders.split(",") if n.strip()) if args.encoders else C.ENCODER_NAMES
        checks = select(C.build_checks(sizes, Path(work), manifest=manifest, encoders=encoders), args.only, args.limits)
        print(f"{len(checks)} checks ({summary['mode']}), budget {budget or 'none'} s; writing {out}/summary.json"
              + (f"; kit unpacked in {kit_info['unpack_s']:.0f} s" if kit_info else ""), flush=True)
        run_all(checks, out=out, env=checks_env(kit_info["site"] if kit_info else None), budget_s=budget,
                summary=summary)
    print("\n" + markdown(summary), flush=True)
    return 0 if all(r["status"] in (C.PASS, C.MISSING) for r in summary["checks"]) else 1
