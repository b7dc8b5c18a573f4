"""A driver's Ray session: starting or joining Ray, how many trials fit at once, warm workers,
and restores that must not fail silently. Shared by the search (driver.py) and the confirm jobs
(confirm_jobs.py).
"""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import os
from pathlib import Path

import optuna
import pyarrow.fs
import ray

from model.errors import UserError
from rundir.settings import Settings
from search import internals
from search.cluster import connect


class RestoreFailed(UserError, RuntimeError):
    """A stopped search or confirm stage cannot be continued (Ray could not restore its experiment)."""


def concurrency(settings: Settings) -> int:
    """The number of trials the cluster holds at once (at least 1), or --max-concurrent."""
    if settings.max_concurrent is not None:
        return settings.max_concurrent
    total = ray.cluster_resources()
    slots = int(total.get("CPU", 1) // settings.cpus_per_trial)
    if settings.gpus_per_trial > 0:
        slots = min(slots, int(total.get("GPU", 0) // settings.gpus_per_trial))
    return max(1, slots)


# Warm workers: a trial's worker process is kept for the next trial of the same resources, so only
# a slot's first trial pays the start-up (a Ray worker, torch and transformers imports: ~4 s per
# trial on a 2-core machine). Each trial still builds its model, optimizer and data loader anew,
# restores its checkpoint on resume, and frees its GPU memory at its end (search/trainable.py).
REUSE_WORKERS = True


@contextlib.contextmanager
def ray_session(address: str | None, *, log_dir: Path | None = None):
    """Ray for the block: the cluster at `address`, else a new local one (shut down after). Unless
    SEARCH_VERBOSE=1 (`--verbose`), what Ray logs in this process goes to `log_dir`/ray.log (held
    until `log_dir` exists: a launch creates RUN_DIR inside the block; `RAY_LOG.attach` names it)."""
    quiet_ray()
    RAY_LOG.start()
    if log_dir is not None:
        RAY_LOG.attach(log_dir)
    try:
        started = connect(address)
        try:
            yield
        finally:
            if started:
                ray.shutdown()
    finally:
        RAY_LOG.stop()


VERBOSE_ENV = "SEARCH_VERBOSE"  # 1: Ray's own lines (banners, warnings) on the terminal, as Ray prints them


class RayLog:
    """Ray's log lines in this process (a token-authentication note, "performance bottleneck" hints,
    experiment paths) go to RUN_DIR/ray.log instead of the terminal, where the project's own lines
    are the only ones. Lines from before RUN_DIR exists are held and written when it is attached."""

    def __init__(self) -> None:
        self.held: logging.handlers.MemoryHandler | None = None  # until a RUN_DIR is attached
        self.file: logging.FileHandler | None = None  # RUN_DIR/ray.log, once attached
        self.terminal: list[logging.Handler] = []
        self.depth = 0

    def start(self) -> None:
        self.depth += 1
        if self.depth > 1 or os.environ.get(VERBOSE_ENV) == "1":
            return
        logger = logging.getLogger("ray")
        # Ray's own handler (a StreamHandler subclass) writes to the terminal; files stay as they are.
        self.terminal = [h for h in logger.handlers
                         if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)]
        for handler in self.terminal:
            logger.removeHandler(handler)
        self.held = logging.handlers.MemoryHandler(capacity=100_000, flushLevel=logging.CRITICAL + 1)
        logger.addHandler(self.held)
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created" line either

    def attach(self, log_dir: Path) -> None:
        """Write the held lines to `log_dir`/ray.log (appended), and every later one as it comes (a
        driver killed later still leaves its lines there)."""
        if self.held is None or self.file is not None:
            return
        self.file = logging.FileHandler(Path(log_dir) / "ray.log", encoding="utf-8")
        self.file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        self.held.setTarget(self.file)
        self.held.flush()
        logger = logging.getLogger("ray")
        logger.removeHandler(self.held)
        logger.addHandler(self.file)

    def stop(self) -> None:
        self.depth -= 1
        if self.depth > 0 or self.held is None:
            return
        logger = logging.getLogger("ray")
        logger.removeHandler(self.held)
        self.held.close()  # not attached: the held lines are dropped
        if self.file is not None:
            logger.removeHandler(self.file)
            self.file.close()
        for handler in self.terminal:
            logger.addHandler(handler)
        self.held, self.file, self.terminal = None, None, []


RAY_LOG = RayLog()


def _raise_restore_failed(cause: BaseException | None) -> None:
    raise RestoreFailed(f"Ray could not restore the experiment ({cause!r}); nothing was changed. Either the "
                        "code changed incompatibly since the launch (the trial function, say): resume with the "
                        "code that launched the run; or RUN_DIR/ray is damaged: restore it from a backup or "
                        "another copy of the run")


def restore_must_succeed():
    """Make a failed restore an error. Ray's TuneController logs the failure and starts a new
    experiment in the same directory, whose newer state file would then hide the real one from
    every later resume; `internals.on_restore_failure` raises before anything is written."""
    return internals.on_restore_failure(_raise_restore_failed)


def experiment_has_state(storage: str, name: str) -> bool:
    """Whether Ray's experiment `name` under `storage` (a path or URI) has saved its state."""
    fs, path = pyarrow.fs.FileSystem.from_uri(storage)
    listing = fs.get_file_info(pyarrow.fs.FileSelector(f"{path}/{name}", allow_not_found=True))
    return any(Path(info.path).name.startswith("experiment_state-") for info in listing)


def quiet_ray() -> None:
    """Environment defaults for the driver process (read by Ray when it starts and while it runs)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if os.environ.get(VERBOSE_ENV) != "1":
        # Tune's console reporter (the configuration box, "View detailed results here", a TensorBoard
        # hint into Ray's temp folder): the project prints its own progress lines.
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Trials checkpoint at every evaluation on purpose (to resume); Ray's warning that this forces frequent
    # experiment snapshots is noise here.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
