"""Reap what a killed driver's local Ray left behind.

A driver that starts a local Ray (`ray.init(address="local")`) owns a session,
/tmp/ray/session_<date>_<pid>, <pid> being the driver's. When the driver is killed with SIGKILL,
Ray 2.60's GCS server, raylet and workers go with it, but the raylet's two agents
(`ray::DashboardAgent`, `ray::RuntimeEnvAgent`) are reparented to init and live on for a minute or
two (seen with Ray 2.60 on Linux), one pair per killed driver, so a crash loop or quick relaunches
pile them up. Their command line is rewritten (it no longer names the session); what still ties
them to it is their open log files in <session>/logs.

`reap_orphans()` (called before a driver starts a new local Ray, so a resume or the next launch cleans
up) ends exactly those processes: ones holding files of a session whose driver pid is gone and
whose GCS server and raylet are gone, that are Ray's (`ray::...` or a program of Ray's package)
and that belong to this user. A session started by `ray start` (its pid is the exited CLI, but its
GCS server lives), a session still starting or running (its driver lives), and every other process
are left alone.
Linux only (it reads /proc); elsewhere it does nothing.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

PROC = Path("/proc")
CORE = ("gcs_server", "raylet")  # a session whose core runs is alive, whoever started it


def ray_temp_root() -> Path:
    """Where Ray keeps its sessions on Linux ($RAY_TMPDIR, else /tmp) + /ray."""
    return Path(os.environ.get("RAY_TMPDIR") or "/tmp") / "ray"


def _pid_alive(pid: int) -> bool:
    """Running (a zombie is dead: it waits only for its parent to collect it)."""
    try:
        return (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _is_ray(cmdline: str) -> bool:
    """A Ray process: a worker or agent (`ray::Name`, its rewritten title) or a program from Ray's package."""
    return cmdline.startswith("ray::") or f"{os.sep}ray{os.sep}" in cmdline


def _processes() -> dict[int, tuple[int, int, str]]:
    """{pid: (parent pid, uid, command line)} of the processes /proc shows."""
    table = {}
    if not PROC.is_dir():  # not Linux: nothing to read, nothing reaped
        return table
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            uid = entry.stat().st_uid
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile, or not readable
        table[int(entry.name)] = (ppid, uid, cmdline)
    return table


def _open_under(pid: int, root: str) -> bool:
    """Whether process `pid` holds a file under directory `root`."""
    try:
        fds = list((PROC / str(pid) / "fd").iterdir())
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(fd).startswith(root):
                return True
        except OSError:
            continue
    return False


def dead_sessions(root: Path | None = None, processes: dict[int, tuple[int, int, str]] | None = None) -> list[Path]:
    """Session directories whose driver (the pid ending the name) and core processes are gone."""
    root = root or ray_temp_root()
    processes = processes if processes is not None else _processes()
    dead = []
    for session in sorted(root.glob("session_*_*")):
        pid = session.name.rsplit("_", 1)[1]
        if session.is_symlink() or not pid.isdigit() or _pid_alive(int(pid)):
            continue
        if any(session.name in cmd and any(core in cmd for core in CORE) for _, _, cmd in processes.values()):
            continue
        dead.append(session)
    return dead


def orphans(root: Path | None = None, *, only: Path | None = None) -> dict[int, str]:
    """{pid: command line} of this user's Ray processes that hold files of a dead session (`only`:
    of that session, if it is dead). Not only children of init: under a subreaper such as
    `systemd --user` orphans are adopted by it."""
    processes = _processes()
    sessions = [str(s) + os.sep for s in dead_sessions(root, processes) if only in (None, s)]
    me = os.getuid()
    return {pid: cmd.strip() for pid, (_, uid, cmd) in processes.items()
            if uid == me and pid != os.getpid() and _is_ray(cmd) and _pid_alive(pid)
            and any(_open_under(pid, s) for s in sessions)}


def reap_orphans(root: Path | None = None, *, only: Path | None = None, grace_s: float = 3.0) -> dict[int, str]:
    """End the orphans of dead local sessions (SIGTERM, then SIGKILL after `grace_s`); returns them."""
    found = orphans(root, only=only)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in found:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(_pid_alive(pid) for pid in found):
            time.sleep(0.1)
        if not any(_pid_alive(pid) for pid in found):
            break
    return found


if __name__ == "__main__":
    for pid, cmd in reap_orphans().items():
        print(f"ended {pid} {cmd}")
