"""What the GPU kit leaves out of the unpacked wheels, and what it must never leave out.

Ray's wheel is 200 MB unpacked; its Java jars, RLlib, Serve, Ray LLM and the dashboard's web
frontend are not used by a Tune search on a local Ray started with `include_dashboard=False`
(search/cluster.py). What a local Tune search does use was read off `sys.modules` of the driver and
of the trial workers during a tiny Tune + OptunaSearch + ASHA run (Ray 2.60): ray.tune, ray.train,
ray.air, ray.data (Tune imports it), ray.autoscaler, ray.dashboard (raylet starts the dashboard
agent, which loads ray.dashboard.modules, and the runtime-env agent), ray.experimental, ray.util,
ray.widgets, plus the raylet, gcs_server and _raylet.so binaries. `KEEP` lists those; a test checks
that no strip rule removes any of them. A tiny Tune search on the stripped tree is the real proof
(benchmarks/gpu_kit/smoke312.py).
"""

from __future__ import annotations

import shutil
from pathlib import Path, PurePosixPath

# Directories (relative to the site directory) removed whole, each with the reason it is unused.
STRIP_DIRS: dict[str, str] = {
    "ray/jars": "Java workers and the cross-language API; trials are Python",
    "ray/rllib": "reinforcement learning; Tune imports it only for an unknown trainable name, guarded",
    "ray/serve": "model serving",
    "ray/llm": "Ray LLM serving and batch inference",
    "ray/dashboard/client": "the dashboard's web frontend; the dashboard head is not started",
    "ray/tune/examples": "example scripts",
    "ray/train/examples": "example scripts",
    "ray/air/examples": "example scripts",
}
# File suffixes removed anywhere: type stubs and Cython declarations, never read at run time.
STRIP_SUFFIXES: tuple[str, ...] = (".pyi", ".pxd")

# Paths a local Ray Tune search needs (module docstring); no rule may remove them or what is in them.
KEEP: tuple[str, ...] = (
    "ray/__init__.py", "ray/_raylet.so", "ray/core/src/ray/raylet/raylet", "ray/core/src/ray/gcs/gcs_server",
    "ray/core/libjemalloc.so", "ray/core/generated", "ray/_private", "ray/_private/runtime_env/agent",
    "ray/_common", "ray/thirdparty_files", "ray/tune", "ray/train", "ray/air", "ray/data", "ray/autoscaler",
    "ray/dashboard/agent.py", "ray/dashboard/modules", "ray/dashboard/dashboard.py", "ray/experimental",
    "ray/util", "ray/widgets", "ray/cloudpickle", "ray/runtime_env", "ray/scripts",
    "optuna", "sqlalchemy", "alembic", "pydantic", "pydantic_core", "jsonschema", "tensorboardX",
)


def stripped(relative: str) -> bool:
    """Whether the file or directory at `relative` (POSIX, relative to the site directory) is left
    out of the kit."""
    path = PurePosixPath(relative)
    if path.suffix in STRIP_SUFFIXES:
        return True
    return any(path == PurePosixPath(d) or PurePosixPath(d) in path.parents for d in STRIP_DIRS)


def kept_paths_stripped() -> list[str]:
    """The `KEEP` paths that some rule removes (there must be none). A rule may remove a folder
    inside a kept one (ray/tune/examples): `KEEP` names what must be there, not all of it."""
    return [keep for keep in KEEP if stripped(keep)]


def strip_site(site: Path) -> tuple[int, int]:
    """Remove what `stripped` names under `site`; return (files removed, bytes removed)."""
    files = size = 0
    for directory in STRIP_DIRS:
        target = site / directory
        if target.is_dir():
            found = [p for p in target.rglob("*") if p.is_file()]
            files, size = files + len(found), size + sum(p.stat().st_size for p in found)
            shutil.rmtree(target)
    for suffix in STRIP_SUFFIXES:
        for path in site.rglob(f"*{suffix}"):
            if path.is_file():
                files, size = files + 1, size + path.stat().st_size
                path.unlink()
    return files, size
