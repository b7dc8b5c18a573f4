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
