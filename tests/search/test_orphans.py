"""Reaping what a SIGKILLed driver's local Ray left: only Ray processes holding files of a session
whose driver and core are gone (fake sessions and processes here; no Ray is started)."""

import subprocess
import sys
import time

import pytest

from search.orphans import dead_sessions, reap_orphans

HOLD = "import sys, time; f = open(sys.argv[1], 'a'); print('ready', flush=True); time.sleep(120)"


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture
def hold(tmp_path):
    """Start a process holding `session/logs/<name>` open; its argv marks it as Ray's or not."""
    started = []

    def start(session, *, ray: bool) -> subprocess.Popen:
        (session / "logs").mkdir(parents=True, exist_ok=True)
        title = str(tmp_path / ("ray" if ray else "other") / "agent.py")  # `/ray/` in argv: a Ray program
        proc = subprocess.Popen([sys.executable, "-c", HOLD, str(session / "logs" / "agent.log"), title],
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        started.append(proc)
        return proc
    yield start
    for proc in started:
        proc.kill()
        proc.wait()


def test_only_ray_processes_of_dead_sessions_are_ended(tmp_path, hold):
    root = tmp_path / "tmp-ray"
    dead = root / f"session_2026-01-01_00-00-00_000000_{dead_pid()}"
    live = root / f"session_2026-01-01_00-00-01_000000_{subprocess.os.getpid()}"  # its driver runs: this test
    orphan = hold(dead, ray=True)
    bystander = hold(dead, ray=False)  # e.g. `tail -f` on a log of the dead session
    running = hold(live, ray=True)
    assert dead_sessions(root) == [dead]
    ended = reap_orphans(root, grace_s=5)
    assert list(ended) == [orphan.pid]
    assert orphan.wait(timeout=10) is not None
    time.sleep(0.2)
    assert bystander.poll() is None and running.poll() is None


def test_a_session_whose_core_runs_is_alive(tmp_path):
    """`ray start --head` names the session after the CLI, which exits; its GCS server lives on."""
    root = tmp_path / "tmp-ray"
    session = root / f"session_2026-01-01_00-00-00_000000_{dead_pid()}"
    session.mkdir(parents=True)
    gcs = {1234: (1, 0, f"/x/ray/core/src/ray/gcs/gcs_server --log_dir={session}/logs")}
    assert dead_sessions(root, gcs) == []
    assert dead_sessions(root, {}) == [session]


DRIVER = """
import ray
from search.cluster import connect
connect(None)
print(ray.get_runtime_context().get_node_id(), flush=True)
import time; time.sleep(300)
"""


def _descendants(root: int) -> set[int]:
    from search.orphans import _processes

    table, found, grown = _processes(), {root}, True
    while grown:
        kids = {pid for pid, (ppid, _, _) in table.items() if ppid in found}
        grown = not kids <= found
        found |= kids
    return found - {root}


@pytest.mark.ray
def test_a_sigkilled_drivers_ray_is_reaped_by_the_next_local_start():
    """A real driver with a local Ray, killed with SIGKILL: the agents it leaves are ended by
    `reap_orphans`, which `connect` runs before the next local Ray starts."""
    import os
    import signal

    from search.cluster import REPO_ROOT
    from search.orphans import _pid_alive, ray_temp_root

    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "RAY_USAGE_STATS_ENABLED": "0"}
    driver = subprocess.Popen([sys.executable, "-c", DRIVER], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert driver.stdout.readline().strip()
        time.sleep(3)  # the raylet starts its agents
        left = _descendants(driver.pid)
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    session = next(ray_temp_root().glob(f"session_*_{driver.pid}"))
    deadline = time.monotonic() + 60
    while session not in dead_sessions() and time.monotonic() < deadline:
        time.sleep(0.5)  # the GCS server and raylet follow their driver
    ended = reap_orphans(only=session)  # other sessions' orphans are not this test's to end
    assert ended and set(ended) <= left, "only the dead driver's processes are ended"
    assert not [pid for pid in left if _pid_alive(pid)], "the killed driver's Ray left processes behind"


def test_connect_reaps_before_it_starts_a_local_ray(monkeypatch):
    import search.cluster as cluster

    calls = []
    monkeypatch.setattr(cluster, "reap_orphans", lambda: calls.append("reap") or {})
    monkeypatch.setattr(cluster.ray, "is_initialized", lambda: False)
    monkeypatch.setattr(cluster.ray, "init", lambda **kwargs: calls.append("init"))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert cluster.connect(None) and calls == ["reap", "init"]
