"""Which wheels the GPU kit carries: pure functions over requirements, wheel metadata and the
device's package list (no downloads, no files but the ones named).

The lent GPU machine has its own Python 3.12 with torch and much of the scientific stack
(device-packages.txt) and cannot download anything. The kit carries every package that
requirements.txt needs and the machine lacks, and what those need in turn, each pinned: a
requirement of requirements.txt at its own pin, a dependency of one at lock.txt's pin. A package the
machine has is never carried (its build is the one its own packages were compiled against); where
requirements.txt pins another version of it, or a carried package asks for a version range of it,
that is recorded in the kit's manifest and checked on the machine (benchmarks/gpu_kit/probe.py).
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import InvalidRequirement, Requirement

HERE = Path(__file__).resolve().parent
DEVICE_PACKAGES = HERE / "device-packages.txt"
LOCK = HERE / "lock.txt"
KIT_PYTHON = (3, 12)  # the device's python3 is 3.12.3; .pyc files are valid per minor version

# The environment markers of the device's interpreter (PEP 508), for `python_version < "3.12"` and
# `sys_platform == "win32"` lines in wheel metadata.
DEVICE_MARKERS = {
    "python_version": "3.12", "python_full_version": "3.12.3", "implementation_name": "cpython",
    "implementation_version": "3.12.3", "platform_python_implementation": "CPython", "os_name": "posix",
    "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64", "platform_release": "",
    "platform_version": "",
}


class KitError(Exception):
    """The kit cannot be built or run as asked; the message says how to fix it."""


def normalize(name: str) -> str:
    """A distribution name as PEP 503 compares them: `PyYAML`, `pyyaml` and `py_yaml` are one."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_names(path: Path) -> frozenset[str]:
    """The normalized package names of a one-name-per-line file (`#` starts a comment)."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text(encoding="utf-8").splitlines())
    return frozenset(normalize(line) for line in lines if line)


def read_requirements(path: Path) -> list[Requirement]:
    """The requirements of a requirements file, in file order; `-r`/`-c` includes and comments are
    skipped (the kit reads requirements.txt alone: requirements-dev.txt's tools never run there)."""
    found = []
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        try:
            found.append(Requirement(line))
        except InvalidRequirement as err:
            raise KitError(f"{path} line {number}: {line!r} is not a requirement ({err}); "
                           "write NAME==VERSION") from None
    return found


def pinned_version(req: Requirement) -> str | None:
    """The version of a `NAME==VERSION` requirement, else None."""
    specs = list(req.specifier)
    if len(specs) == 1 and specs[0].operator == "==" and "*" not in specs[0].version:
        return specs[0].version
    return None


def read_lock(path: Path) -> dict[str, str]:
    """{normalized name: version} of a file of `NAME==VERSION` lines."""
    lock = {}
    for req in read_requirements(path):
        version = pinned_version(req)
        if version is None:
            raise KitError(f"{path}: {req} is not pinned; write it as {req.name}==VERSION")
        lock[normalize(req.name)] = version
    return lock


@dataclass(frozen=True)
class Pin:
    """One wheel the kit carries: `name==version`, the extras asked of it, and who needs it."""

    name: str  # normalized
    version: str
    extras: frozenset[str]
    needed_by: str  # "requirements.txt" or the normalized name of the package that needs it

    @property
    def spec(self) -> str:
        return f"{self.name}=={self.version}"


def applies(req: Requirement, extras: Iterable[str]) -> bool:
    """Whether `req` (a Requires-Dist line) holds on the device when its package is installed with
    `extras`: its marker is true for no extra or for one of them."""
    if req.marker is None:
        return True
    marker: Marker = req.marker
    return any(marker.evaluate({**DEVICE_MARKERS, "extra": extra}) for extra in ("", *sorted(extras)))


def requires_dist(metadata: str, extras: Iterable[str]) -> list[Requirement]:
    """The Requires-Dist entries of a wheel's METADATA text that apply on the device with `extras`."""
    extras = frozenset(extras)
    found = []
    for line in metadata.splitlines():
        if not line.startswith("Requires-Dist:"):
            if line == "":  # the headers end at the first blank line; the description follows
                break
            continue
        req = Requirement(line.split(":", 1)[1].strip())
        if applies(req, extras):
            found.append(req)
    return found


# Requirements no GPU check needs, left out of the kit to keep it under the carry limit.
NOT_CARRIED = {"gensim": "only `embed` uses it; the encoder checks train from random-init embeddings"}


def top_level_pins(requirements: list[Requirement], device: frozenset[str]) -> tuple[list[Pin], list[str]]:
    """The requirements the device lacks, as pins, and notes on those it has at another pin.

    Every requirement the kit carries must be pinned `==` in requirements.txt (a range would make
    the kit depend on the day it is built)."""
    pins, notes = [], []
    for req in requirements:
        name, version = normalize(req.name), pinned_version(req)
        if name in NOT_CARRIED:
            notes.append(f"{name}: not carried ({NOT_CARRIED[name]})")
            continue
        if name in device:
            if version is not None:
                notes.append(f"{name}=={version} (requirements.txt): the device's own version is used")
            continue
        if version is None:
            raise KitError(f"requirements.txt has {req} unpinned, and the device lacks {name}: pin it as "
                           f"{req.name}==VERSION so the kit is the same whenever it is built")
        pins.append(Pin(name, version, frozenset(req.extras), "requirements.txt"))
    return pins, notes


def dependency_pin(req: Requirement, needed_by: str, lock: dict[str, str]) -> Pin:
    """The pin of a dependency the device lacks: lock.txt's version, which must satisfy `req`."""
    name = normalize(req.name)
    if name not in lock:
        raise KitError(f"{needed_by} needs {req}, which the device lacks and benchmarks/gpu_kit/lock.txt does not "
                       f"pin: add a line {name}==VERSION there (a version that satisfies it, e.g. what `pip show "
                       f"{name}` reports in the project's venv)")
    version = lock[name]
    if not req.specifier.contains(version, prereleases=True):
        raise KitError(f"{needed_by} needs {req}, but benchmarks/gpu_kit/lock.txt pins {name}=={version}: change "
                       "the pin to a version in that range")
    return Pin(name, version, frozenset(req.extras), needed_by)


def wheel_metadata(wheel: Path) -> str:
    """The METADATA text of a wheel (a zip with one `*.dist-info/METADATA`)."""
    import zipfile

    with zipfile.ZipFile(wheel) as archive:
        names = [n for n in archive.namelist() if n.count("/") == 1 and n.endswith(".dist-info/METADATA")]
        if len(names) != 1:
            raise KitError(f"{wheel} holds {len(names)} */.dist-info/METADATA files, not one: delete it from the "
                           "download cache and build again")
        return archive.read(names[0]).decode("utf-8")


@dataclass
class Resolution:
    """What the kit carries and what it asks of the device."""

    wheels: dict[str, tuple[Pin, Path]]  # normalized name -> (pin, wheel file), in resolution order
    device_requirements: list[dict[str, str]]  # {"requirement": "typing-extensions>=4.16", "needed_by": ...}
    notes: list[str]  # requirements.txt pins the device's own version replaces


def resolve(requirements: list[Requirement], device: frozenset[str], lock: dict[str, str],
            fetch: Callable[[Pin], Path]) -> Resolution:
    """Every wheel the kit carries, breadth first from the requirements the device lacks.

    `fetch(pin)` returns the wheel file of a pin (downloading it, or from a cache: the only I/O
    besides reading the wheels' METADATA). A package asked for with new extras is looked at again
    for the dependencies those extras add. A requirement of a device package is recorded, not
    fetched: the device's version must satisfy it, which only the device can tell."""
    top, notes = top_level_pins(requirements, device)
    pins = {**lock, **{pin.name: pin.version for pin in top}}  # a carried package may need another one
    queue, wheels, extras_seen = deque(top), {}, {}
    device_reqs: dict[tuple[str, str], dict[str, str]] = {}
    while queue:
        pin = queue.popleft()
        seen = extras_seen.get(pin.name)
        if seen is not None and pin.extras <= seen:
            continue
        if pin.name not in wheels:
            wheels[pin.name] = (pin, fetch(pin))
        extras_seen[pin.name] = (seen or frozenset()) | pin.extras
        for req in requires_dist(wheel_metadata(wheels[pin.name][1]), extras_seen[pin.name]):
            name = normalize(req.name)
            if name in device:
                text = f"{name}{req.specifier}"
                device_reqs.setdefault((text, pin.name), {"requirement": text, "needed_by": pin.name})
            else:
                queue.append(dependency_pin(req, pin.name, pins))
    return Resolution(wheels=wheels, device_requirements=list(device_reqs.values()), notes=notes)
