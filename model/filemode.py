"""The mode a new file should get: what `open()` gives (0666 less the umask).

Why: `tempfile.mkstemp`, `mkdtemp` and safetensors' writer create 0600/0700 files whatever the umask,
so files written through them and renamed into place would be unreadable to teammates on a shared
cluster or to a web server serving the report. Callers chmod such files with these modes.
"""

from __future__ import annotations

import os
from pathlib import Path


def umask() -> int:
    """The process's umask (reading it means setting it, so it is set straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    return 0o666 & ~umask()


def dir_mode() -> int:
    return 0o777 & ~umask()


def as_if_opened(path: Path) -> None:
    """Give a file (or directory) the mode `open()` (or `mkdir`) would have given it."""
    path.chmod(dir_mode() if path.is_dir() else file_mode())
