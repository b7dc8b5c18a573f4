"""Provenance of a run's outputs: library versions, the code's git revision, file digests.

Every record the project writes (run.json, pretrain.json, a vectors checkpoint's record) says with
what it was made through these helpers, so they agree on what a revision and a version are.
"""

from __future__ import annotations

import hashlib
import platform
import subprocess
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def versions(packages: Sequence[str]) -> dict[str, str]:
    """{"python": ..., package: its installed version} for each installed one of `packages` (distribution
    names, e.g. "scikit-learn"); read from the installed metadata, so nothing is imported."""
    found = {"python": platform.python_version()}
    for name in packages:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def git_revision(root: Path = REPO_ROOT) -> str | None:
    """The checkout's commit, with `+dirty` when it has uncommitted changes; None outside a checkout."""
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True,
                               timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (rev + ("+dirty" if dirty else "")) or None


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes, read in blocks (corpus files can be large)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
