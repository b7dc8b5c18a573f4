"""Crash-safe writes give files the mode the umask asks for (issue 12: mkstemp made them 0600)."""

import os
import stat
from contextlib import contextmanager

import pytest

from model.filemode import as_if_opened
from rundir.io import atomic_write_bytes, atomic_write_json, atomic_write_text


@contextmanager
def umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
@pytest.mark.parametrize("write", [
    lambda p: atomic_write_bytes(p, b"x"), lambda p: atomic_write_text(p, "x"), lambda p: atomic_write_json(p, [1]),
])
def test_atomic_writes_respect_the_umask(tmp_path, mask, expected, write):
    with umask(mask):
        write(tmp_path / "new.json")
        (tmp_path / "old.json").write_text("old")
        write(tmp_path / "old.json")  # replacing a file gives the new one the umask's mode too
    assert mode(tmp_path / "new.json") == mode(tmp_path / "old.json") == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.json", "old.json"]  # no temporary left


@pytest.mark.parametrize("mask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750)])
def test_as_if_opened_fixes_mkstemp_and_mkdtemp_modes(tmp_path, mask, file_mode, dir_mode):
    (tmp_path / "f").touch(mode=0o600)
    (tmp_path / "d").mkdir(mode=0o700)
    with umask(mask):
        as_if_opened(tmp_path / "f")
        as_if_opened(tmp_path / "d")
    assert (mode(tmp_path / "f"), mode(tmp_path / "d")) == (file_mode, dir_mode)
