"""`python -m benchmarks.gpu_kit build`: the kit that lets the lent GPU machine run the GPU checks.

The machine has Python 3.12 with torch, but not Ray, Optuna and a few others, and cannot download.
The build downloads the missing wheels for CPython 3.12 on x86-64 Linux (deps.py says which, each
pinned), unpacks them into one site directory, strips what a local Tune search does not use
(strip.py), compiles every .py of it and of the repository's own packages to 3.12 .pyc files (a
fresh Python spent 25 s importing wheels installed without them), and packs it all as OUT/kit.tar.xz
with OUT/manifest.json: what it holds, its sizes, and the command that runs the checks there.

Downloads are kept in the cache directory, so a second build downloads nothing. `fetch` is a
parameter of `build`: tests pass one that makes wheels offline.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from packaging.utils import parse_wheel_filename

from benchmarks.gpu_kit.deps import (
    DEVICE_PACKAGES,
    KIT_PYTHON,
    LOCK,
    KitError,
    Pin,
    normalize,
    read_lock,
    read_names,
    read_requirements,
    resolve,
)
from benchmarks.gpu_kit.strip import strip_site

REPO = Path(__file__).resolve().parents[2]
ARCHIVE, MANIFEST = "kit.tar.xz", "manifest.json"
CARRY_LIMIT = 64 * 2**20  # what travels to the device: working tree + carried paths
REPO_PACKAGES = ("model", "spaces", "rundir", "results", "search", "stages", "cli", "benchmarks")
# pip matches platform tags exactly: every manylinux tag a glibc 2.39 x86-64 machine (the device's
# Ubuntu 24.04, Python 3.12.3) accepts, newest first.
PLATFORMS = tuple(f"manylinux_2_{n}_x86_64" for n in range(39, 4, -1)) + (
    "manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64")
RUN_BUDGET_S = 480  # the checks' own budget on the device (runner.py); the run tool allows 600 s a command
RUN_TIMEOUT_S = 570  # the run tool's timeout_s: the budget, the unpacking and the environment probe, with room


def cached_wheel(cache: Path, pin: Pin) -> Path | None:
    """A wheel of `pin` already in `cache`, if any."""
    for wheel in sorted(cache.glob("*.whl")):
        name, version, _, _ = parse_wheel_filename(wheel.name)
        if normalize(name) == pin.name and str(version) == pin.version:
            return wheel
    return None


def pip_fetcher(cache: Path, *, log: Callable[[str], None] = print) -> Callable[[Pin], Path]:
    """A `fetch` for `resolve`: the cached wheel of a pin, else `pip download` of it into `cache`
    (binary wheels for CPython 3.12 on manylinux x86-64, without dependencies: resolve picks those)."""

    def fetch(pin: Pin) -> Path:
        wheel = cached_wheel(cache, pin)
        if wheel is not None:
            return wheel
        cache.mkdir(parents=True, exist_ok=True)
        platforms = [arg for tag in PLATFORMS for arg in ("--platform", tag)]
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                   "--python-version", f"{KIT_PYTHON[0]}.{KIT_PYTHON[1]}", "--implementation", "cp", *platforms,
                   "--dest", str(cache), pin.spec]
        log(f"downloading {pin.spec} (needed by {pin.needed_by})")
        done = subprocess.run(command, capture_output=True, text=True)
        wheel = cached_wheel(cache, pin)
        if done.returncode != 0 or wheel is None:
            raise KitError(f"pip could not download a CPython 3.12 manylinux x86-64 wheel of {pin.spec}: "
                           f"{done.stderr.strip()[-800:]}\nCheck the pin (requirements.txt or "
                           "benchmarks/gpu_kit/lock.txt) and that PyPI is reachable")
        return wheel

    return fetch


def unpack_wheel(wheel: Path, site: Path) -> int:
    """Extract a wheel into `site` as pip would install it (`*.data/purelib|platlib` at the top,
    other `*.data` parts dropped), keeping the files' modes: raylet and gcs_server must stay
    executable. Returns the number of files written."""
    written = 0
    with zipfile.ZipFile(wheel) as archive:
        for info in archive.infolist():
            parts = info.filename.split("/")
            if info.is_dir():
                continue
            if parts[0].endswith(".data"):
                if len(parts) < 3 or parts[1] not in ("purelib", "platlib"):
                    continue  # scripts, headers, data: nothing the checks run
                parts = parts[2:]
            target = site.joinpath(*parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info) as source, open(target, "wb") as sink:
                shutil.copyfileobj(source, sink)
            mode = (info.external_attr >> 16) & 0o777
            os.chmod(target, mode | 0o644 if mode else 0o644)
            written += 1
    return written


def python_version(python: str) -> tuple[int, int]:
    """(major, minor) of the interpreter `python`."""
    try:
        out = subprocess.run([python, "-c", "import sys; print(*sys.version_info[:2])"], capture_output=True,
                             text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as err:
        raise KitError(f"cannot run --python {python} ({err}); pass a Python {KIT_PYTHON[0]}.{KIT_PYTHON[1]}, "
                       "e.g. --python /root/.pyenv/versions/3.12.1/bin/python3.12") from None
    major, minor = (int(x) for x in out.split())
    return major, minor


def find_python(kit_python: tuple[int, int] = KIT_PYTHON) -> str:
    """A Python `kit_python` on this machine: `python3.X` on the PATH, else one pyenv installed."""
    name = f"python{kit_python[0]}.{kit_python[1]}"
    pattern = f".pyenv/versions/{kit_python[0]}.{kit_python[1]}.*/bin/{name}"
    candidates = [name, *sorted(str(p) for p in Path.home().glob(pattern))]
    for candidate in candidates:
        with contextlib.suppress(KitError):
            if python_version(candidate) == kit_python:
                return candidate
    raise KitError(f"no {name} found (tried {', '.join(candidates)}): install one (pyenv install 3.12, or the "
                   f"distribution's python3.12) and pass it as --python")


def compile_tree(python: str, root: Path, mode: str) -> list[str]:
    """Compile every .py under `root` with `python` (`compileall -j 0`), pycs in `mode`
    (unchecked-hash or checked-hash: both survive a copy, which changes every file's mtime). Returns
    the lines naming files that did not compile (vendored code for other Pythons; never imported)."""
    done = subprocess.run([python, "-m", "compileall", "-q", "-j", "0", "--invalidation-mode", mode, str(root)],
                          capture_output=True, text=True)
    return [line for line in done.stdout.splitlines() if line.startswith("***")]


def stage_repo(repo: Path, staging: Path) -> int:
    """Copy the .py files of the repository's packages to `staging` (for their .pyc files);
    return how many."""
    count = 0
    for package in REPO_PACKAGES:
        for source in sorted((repo / package).rglob("*.py")):
            relative = source.relative_to(repo)
            if "__pycache__" in relative.parts or relative.parts[:2] == ("benchmarks", "out"):
                continue
            target = staging / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
            count += 1
    return count


def pack(stage: Path, archive: Path, *, preset: int) -> int:
    """Pack `stage/site` (all of it) and the .pyc files of `stage/repo` into an xz tar at `archive`,
    members sorted, owner root; return its size in bytes."""

    def members() -> list[Path]:
        site = sorted(p for p in (stage / "site").rglob("*") if p.is_file())
        repo = sorted(p for p in (stage / "repo").rglob("*.pyc") if p.is_file())
        return site + repo

    def owned_by_root(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        return info

    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:xz", preset=preset) as tar:
        for path in members():
            tar.add(path, arcname=path.relative_to(stage).as_posix(), recursive=False, filter=owned_by_root)
    return archive.stat().st_size


def tree_bytes(root: Path) -> int:
    """Bytes of every regular file under `root`."""
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def working_tree_bytes(repo: Path) -> int:
    """Bytes of what the run tool sends besides the carried paths: tracked files and untracked ones
    git does not ignore (`git ls-files --cached --others --exclude-standard`)."""
    out = subprocess.run(["git", "-C", str(repo), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         capture_output=True, check=True).stdout
    paths = {repo / name for name in out.decode().split("\0") if name}
    return sum(p.stat().st_size for p in paths if p.is_file() and not p.is_symlink())


def check_size(kit_bytes: int, tree: int, limit: int = CARRY_LIMIT) -> None:
    """Refuse a kit that would not travel: the carried kit and the working tree share `limit`."""
    if kit_bytes + tree > limit:
        mib = 2**20
        raise KitError(f"the kit ({kit_bytes / mib:.1f} MiB) and the working tree ({tree / mib:.1f} MiB) come to "
                       f"{(kit_bytes + tree) / mib:.1f} MiB, over the {limit / mib:.0f} MiB the device takes: strip "
                       "more (benchmarks/gpu_kit/strip.py), pack with a higher --preset, or make the working tree "
                       "smaller (git status: large untracked files travel too)")


def run_command(out: Path, repo: Path = REPO) -> dict[str, object]:
    """The run tool's arguments that run the checks on the device with the kit in `out`."""
    carried = os.path.relpath(out, repo)
    command = (f"PYTHONUNBUFFERED=1 python3 -m benchmarks.gpu_kit run --kit {carried}/{ARCHIVE} --out \"$OUT\" "
               f"--budget-s {RUN_BUDGET_S}")
    return {"carry": [carried], "timeout_s": RUN_TIMEOUT_S, "command": command}


def stage_kit(resolution_wheels: list[Path], stage: Path, *, python: str, repo: Path) -> dict[str, object]:
    """Unpack, strip and compile the kit under `stage` (site/ and repo/); return what it did."""
    shutil.rmtree(stage, ignore_errors=True)
    site = stage / "site"
    files = sum(unpack_wheel(wheel, site) for wheel in resolution_wheels)
    unpacked = tree_bytes(site)
    stripped_files, stripped_bytes = strip_site(site)
    site_failures = compile_tree(python, site, "unchecked-hash")  # the kit never changes: no source check
    sources = stage_repo(repo, stage / "repo")
    # checked-hash: the device checks each .pyc against its source, so a kit built before an edit
    # costs a recompile of that module there, never a run of stale code.
    repo_failures = compile_tree(python, stage / "repo", "checked-hash")
    if repo_failures:
        raise KitError("the repository's own code does not compile under Python "
                       f"{KIT_PYTHON[0]}.{KIT_PYTHON[1]}:\n" + "\n".join(repo_failures))
    return {"files_unpacked": files, "unpacked_bytes": unpacked, "stripped_files": stripped_files,
            "stripped_bytes": stripped_bytes, "site_bytes": tree_bytes(site), "site_not_compiled": site_failures,
            "repo_sources": sources}


def build(out: Path, cache: Path, *, python: str, preset: int = 9, fetch: Callable[[Pin], Path] | None = None,
          repo: Path = REPO, limit: int = CARRY_LIMIT, kit_python: tuple[int, int] = KIT_PYTHON,
          log: Callable[[str], None] = print) -> dict[str, object]:
    """Build OUT/kit.tar.xz and OUT/manifest.json (module docstring); return the manifest.

    Wheels come from `fetch` (default: the download cache, then pip); `python` must be a Python
    `kit_python` (it compiles the .pyc files the device's Python will read). A kit that would not
    fit the device's carry limit together with the working tree is refused, and the previous kit,
    if any, is left in place."""
    if python_version(python) != kit_python:
        raise KitError(f"--python {python} is not Python {kit_python[0]}.{kit_python[1]} (the device's python3 is "
                       f"3.12.3 and .pyc files are valid per minor version): pass a 3.12, e.g. "
                       "--python /root/.pyenv/versions/3.12.1/bin/python3.12")
    check_out_dir(out, repo)
    (out / (ARCHIVE + ".partial")).unlink(missing_ok=True)  # an interrupted build's: it would travel too
    started, timings = time.perf_counter(), {}

    def lap(name: str) -> None:
        timings[name] = round(time.perf_counter() - started - sum(timings.values()), 1)

    resolution = resolve(read_requirements(repo / "requirements.txt"), read_names(DEVICE_PACKAGES), read_lock(LOCK),
                         fetch or pip_fetcher(cache / "wheels", log=log))
    lap("resolve_and_download_s")
    staged = stage_kit([wheel for _, wheel in resolution.wheels.values()], cache / "stage", python=python, repo=repo)
    lap("unpack_strip_compile_s")
    partial = out / (ARCHIVE + ".partial")
    archive_bytes = pack(cache / "stage", partial, preset=preset)
    lap("pack_s")
    tree = working_tree_bytes(repo)
    others = sum(p.stat().st_size for p in out.rglob("*") if p.is_file() and p.name not in (ARCHIVE, MANIFEST,
                                                                                            partial.name))
    carried = archive_bytes + others + 64 * 1024  # 64 KiB: the manifest, with room
    try:
        check_size(carried, tree, limit)
    except KitError:
        partial.unlink()
        raise
    os.replace(partial, out / ARCHIVE)
    shutil.rmtree(cache / "stage", ignore_errors=True)
    manifest = {
        "built_at": datetime.now(UTC).isoformat(timespec="seconds"), "kit_python": list(kit_python),
        "built_with": python, "xz_preset": preset,
        "wheels": [{"name": pin.name, "version": pin.version, "extras": sorted(pin.extras), "needed_by": pin.needed_by,
                    "wheel": wheel.name, "bytes": wheel.stat().st_size} for pin, wheel in resolution.wheels.values()],
        "device_requirements": resolution.device_requirements, "device_versions_used": resolution.notes,
        **staged, "archive_bytes": archive_bytes, "carried_bytes": carried, "working_tree_bytes": tree,
        "limit_bytes": limit,
        "timings": timings, "run": run_command(out, repo),
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return manifest


def check_out_dir(out: Path, repo: Path = REPO) -> None:
    """OUT must be a git-ignored folder inside the repository: the run tool carries only such paths
    (one that is not ignored travels anyway, as part of the working tree)."""
    try:
        relative = out.resolve().relative_to(repo)
    except ValueError:
        raise KitError(f"--out {out} is outside the repository {repo}: the run tool carries paths inside it only; "
                       "pass e.g. --out .gpukit") from None
    ignored = subprocess.run(["git", "-C", str(repo), "check-ignore", "-q", f"{relative.as_posix()}/"]).returncode == 0
    if not ignored:
        raise KitError(f"--out {relative} is not ignored by git: add `/{relative.as_posix()}/` to .gitignore (the run "
                       "tool carries ignored paths; an unignored one would travel twice)")


def device_requirements_line(requirements: list[dict[str, str]]) -> str:
    """The kit's requirements on the device's packages, one entry per requirement with its users."""
    users: dict[str, list[str]] = {}
    for item in requirements:
        users.setdefault(item["requirement"], []).append(item["needed_by"])
    return ", ".join(f"{req} ({', '.join(names)})" for req, names in users.items())


def report(manifest: dict) -> str:
    """What a build made, for the terminal: contents, sizes, timings and the run tool's arguments."""
    mib, run = 2**20, manifest["run"]
    used = [note.split("==")[0] for note in manifest["device_versions_used"]]
    lines = [f"kit for Python {'.'.join(map(str, manifest['kit_python']))}: {len(manifest['wheels'])} wheels",
             *(f"  {w['name']}=={w['version']}  (needed by {w['needed_by']})" for w in manifest["wheels"]),
             f"unpacked {manifest['unpacked_bytes'] / mib:.1f} MiB, stripped {manifest['stripped_bytes'] / mib:.1f} "
             f"MiB ({manifest['stripped_files']} files), compiled site {manifest['site_bytes'] / mib:.1f} MiB "
             f"(+ .pyc of {manifest['repo_sources']} repository modules); "
             f"{len(manifest['site_not_compiled'])} site files do not compile under 3.12 (never imported)",
             f"archive {manifest['archive_bytes'] / mib:.1f} MiB (xz preset {manifest['xz_preset']}); carried "
             f"{manifest['carried_bytes'] / mib:.1f} MiB + working tree {manifest['working_tree_bytes'] / mib:.1f} MiB "
             f"= {(manifest['carried_bytes'] + manifest['working_tree_bytes']) / mib:.1f} MiB of the "
             f"{manifest['limit_bytes'] / mib:.0f} MiB the device takes",
             "took " + ", ".join(f"{k.removesuffix('_s')} {v:.0f} s" for k, v in manifest["timings"].items()),
             "the device's own packages must meet (its environment probe checks): "
             + device_requirements_line(manifest["device_requirements"]),
             f"the device's own versions replace requirements.txt's pins of {', '.join(used)}",
             "run on the device with the run tool:",
             f"  carry: {json.dumps(run['carry'])}", f"  timeout_s: {run['timeout_s']}", f"  command: {run['command']}"]
    return "\n".join(lines)
