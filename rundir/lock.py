"""One driver per run: the lock a driver holds on RUN_DIR while it writes there.

Two drivers on one run would corrupt its study, records and Ray state. A driver takes an exclusive
`flock` on RUN_DIR/.driver.lock (released by the OS however the process ends) and writes its pid
there for `status` and for the refusal a second driver gets.
"""

from __future__ import annotations

import contextlib
import fcntl
import os

from model.errors import ConfigError
from rundir.paths import RunFiles


def driver_pid(files: RunFiles) -> int | None:
    """The pid of the driver holding the run's lock, or None when no driver is running on it."""
    if not files.driver_lock.exists():
        return None
    with open(files.driver_lock) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = handle.read().strip()
            return int(text) if text.isdigit() else -1
        fcntl.flock(handle, fcntl.LOCK_UN)
        return None


@contextlib.contextmanager
def run_lock(files: RunFiles):
    """Hold RUN_DIR's driver lock: two drivers on one run would corrupt it. The OS releases the
    lock when the process dies, however it dies."""
    handle = open(files.driver_lock, "a+")  # held, and locked, for the whole block
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise ConfigError(f"another driver (pid {driver_pid(files)}) is running on {files.root}; wait for it "
                          "or stop it first") from None
    try:
        handle.truncate(0)
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield
    finally:
        handle.truncate(0)  # no stale pid: and a command that failed leaves the file as it found it
        handle.close()
