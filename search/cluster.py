"""Connecting to Ray: a local instance, or a running cluster whose nodes get this checkout's code.

Storage: trial checkpoints and Ray's experiment state go to `--storage-path`. On a cluster every
node writes there, so it must be a directory mounted at the same path on every node (NFS and the
like) or a cloud URI (s3://, gs://, ...); `check_shared_storage` proves the former before a trial
starts. The run's own files (run record, study, leaderboard) stay with the driver: in RUN_DIR for a
local path, in ./runs/<name> when the storage is a URI (an SQLite study cannot live on S3).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from model.errors import ConfigError
from rundir.paths import is_uri
from search.orphans import reap_orphans

REPO_ROOT = Path(__file__).resolve().parent.parent
# Never shipped to the workers: outputs, data, environments, caches.
CODE_EXCLUDES = [".git", "runs", "data", ".venv*", "**/__pycache__", ".pytest_cache", ".ruff_cache", "*.db"]


# Environment of every Ray worker. A warm worker takes its next trial only once the last one's
# thread has ended (Tune's FunctionTrainable.reset_config); Tune waits 2 s for that by default, and
# on a loaded node the end of a trial (its last checkpoint, freeing its memory) can take longer.
# Reuse then fails, and Ray 2.60's Tune loses the trial it meant to start there ("Trials did not complete:
# ... Could not fetch metrics"): measured on the 2-core machine with both cores busy.
WORKER_ENV = {"TUNE_FUNCTION_THREAD_TIMEOUT_S": "120"}


def code_runtime_env() -> dict:
    """Ship this checkout to every node (Ray's working_dir), so nodes need only the requirements."""
    return {"working_dir": str(REPO_ROOT), "excludes": CODE_EXCLUDES, "env_vars": dict(WORKER_ENV)}


def connect(address: str | None) -> bool:
    """Join the cluster at `address` (auto, HOST:PORT or ray://HOST:PORT; default: $RAY_ADDRESS,
    which `ray job submit` sets) or else start a new local Ray, never silently joining a cluster
    that happens to run on this machine. Returns False when this process was already connected
    (then there is nothing to stop)."""
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address is None:
        ended = reap_orphans()  # the Ray agents an earlier driver left when it was killed
        if ended:
            print(f"note: ended {len(ended)} Ray process(es) left by a killed driver's local Ray: "
                  + ", ".join(f"{pid} {cmd.split()[0]}" for pid, cmd in ended.items()))
        # Local workers share this disk: pointing them at the checkout is enough, wherever the
        # driver was started from.
        path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)
        ray.init(address="local", include_dashboard=False, logging_level="WARNING",
                 runtime_env={"env_vars": {"PYTHONPATH": path, **WORKER_ENV}})
        return True
    check_reachable(address)
    try:
        ray.init(address=address, runtime_env=code_runtime_env(), logging_level="WARNING")
    except (ConnectionError, RuntimeError, ValueError) as err:
        raise ConfigError(f"cannot connect to a Ray cluster at --address {address}: {err}. Start one with "
                          "`ray start --head` (and `ray start --address HEAD:6379` on the other nodes) or "
                          "`ray up cluster/aws-gpu.yaml`; `--address auto` joins the one on this machine") from None
    return True


CONNECT_TIMEOUT_S = 10  # a cluster's head that does not answer a TCP connection within this is refused


def check_reachable(address: str, *, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Fail within `timeout` seconds, naming the address, when nothing listens at HOST:PORT (or
    ray://HOST:PORT): `ray.init` would otherwise wait for a dead cluster for minutes. `auto` (the
    cluster on this machine) is left to Ray."""
    import socket

    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if address == "auto" or not sep or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as err:
        raise ConfigError(f"no Ray cluster answers at --address {address} ({err.strerror or err}, waited up to "
                          f"{timeout:g} s): start it (`ray start --head`), check the host and port, or leave out "
                          "--address to run on a local Ray") from None


@ray.remote(num_cpus=0)
def _exists(path: str) -> bool:
    return Path(path).exists()


def nodes_seeing(path: Path, nodes: list[dict], *, timeout: float = 120) -> dict[str, bool]:
    """{node IP: whether `path` exists there}, asked of every node by a task pinned to it."""
    refs = {node["NodeManagerAddress"] + f" ({node['NodeID'][:8]})":
            _exists.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False))
            .remote(str(path)) for node in nodes}
    return dict(zip(refs, ray.get(list(refs.values()), timeout=timeout), strict=True))


def check_shared_storage(storage_path: str, nodes: list[dict]) -> None:
    """On a multi-node cluster, fail unless every node sees `storage_path` (a URI always passes)."""
    alive = [n for n in nodes if n.get("Alive", True)]
    if len(alive) < 2 or is_uri(storage_path):
        return
    root = Path(storage_path).resolve()
    root.mkdir(parents=True, exist_ok=True)
    marker = root / f".shared-storage-check-{uuid.uuid4().hex}"
    marker.write_text("written by the driver\n")
    try:
        seen = nodes_seeing(marker, alive)
    finally:
        marker.unlink(missing_ok=True)
    blind = [node for node, ok in seen.items() if not ok]
    if blind:
        raise ConfigError(
            f"--storage-path {storage_path} is not shared: node(s) {', '.join(blind)} cannot see it. Every "
            "node writes its checkpoints there, so a multi-node run needs a directory mounted at the same "
            "path on all nodes (NFS, EFS, ...) or a cloud URI such as s3://bucket/runs")
