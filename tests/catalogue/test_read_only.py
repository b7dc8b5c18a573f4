"""Read-only places (issue 26, item 4): a command whose run directory or output directory cannot be
written is refused before any work, with exit status 2 and one error line naming the directory,
and nothing changes (no half-written file, no lock, no report folder).

The directories are made read-only with chmod. Root writes through chmod (as on a read-only mount
that os.access cannot see), so under root the write probe is also made to fail the way the kernel
would (PermissionError), for the read-only directories only: the same refusal, from the same check.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

import pytest

import rundir.io
from tests.catalogue.conftest import pretrain_argv

NOT_WRITABLE = ["is not writable", "Permission denied", "nothing was changed"]


@pytest.fixture
def read_only(monkeypatch):
    """`read_only(path)`: make the directory (and the ones under it) read-only for this test."""
    roots: list[Path] = []

    def inside(directory) -> bool:
        return any(Path(directory).absolute() == r or r in Path(directory).absolute().parents for r in roots)

    def make(path: Path) -> Path:
        path.mkdir(exist_ok=True)
        roots.append(path.absolute())
        for directory in [path, *(p for p in path.rglob("*") if p.is_dir())]:
            directory.chmod(directory.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
        return path

    if os.geteuid() == 0:
        probe, temporary = rundir.io._probe, tempfile.TemporaryFile

        def failing_probe(directory):
            if inside(directory):
                raise PermissionError(13, "Permission denied")
            return probe(directory)

        def failing_temporary(*args, dir=None, **kwargs):  # noqa: A002 - tempfile's own name
            if dir is not None and inside(dir):
                raise PermissionError(13, "Permission denied")
            return temporary(*args, dir=dir, **kwargs)

        monkeypatch.setattr(rundir.io, "_probe", failing_probe)
        monkeypatch.setattr(tempfile, "TemporaryFile", failing_temporary)
    yield make
    for root in roots:
        for directory in [root, *(p for p in root.rglob("*") if p.is_dir())]:
            directory.chmod(directory.stat().st_mode | stat.S_IWUSR)


def test_ensemble_on_a_read_only_confirm_directory(refused, read_only, confirmed_copy):
    root = read_only(confirmed_copy / "confirm")
    refused(["ensemble", confirmed_copy], [str(root), *NOT_WRITABLE, "ensemble writes there"], watch=(confirmed_copy,))


def test_report_on_a_read_only_run(refused, read_only, run_copy):
    read_only(run_copy)
    refused(["report", run_copy], [str(run_copy), *NOT_WRITABLE, "report writes there"], watch=(run_copy,))


def test_confirm_on_a_read_only_run(refused, read_only, run_copy):
    read_only(run_copy)
    refused(["confirm", run_copy, "--top", "1", "--folds", "2"], [str(run_copy), *NOT_WRITABLE, "confirm writes"],
            watch=(run_copy,))


def test_resume_of_a_read_only_run(refused, read_only, run_copy):
    read_only(run_copy)
    refused(["resume", run_copy, "--num-samples", "3"], [str(run_copy), *NOT_WRITABLE, "resume writes"],
            watch=(run_copy,))


@pytest.mark.parametrize("flag", ["--out", "--probs"])
def test_predict_into_a_read_only_directory(refused, read_only, confirmed_copy, tmp_path, flag):
    test_csv = tmp_path / "test.csv"
    test_csv.write_text("id,text\n0,1 2 3\n")
    shut = read_only(tmp_path / "shut")
    outputs = {"--out": tmp_path / "submission.csv", "--probs": tmp_path / "probs.npy", flag: shut / "file"}
    argv = ["predict", confirmed_copy, "--data", test_csv, "--out", outputs["--out"], "--probs", outputs["--probs"],
            "--no-progress"]
    refused(argv, [str(shut), *NOT_WRITABLE, flag], watch=(confirmed_copy, shut, *outputs.values()))


def test_export_into_a_read_only_directory(refused, read_only, run_copy, tmp_path):
    shut = read_only(tmp_path / "shut")
    refused(["export", run_copy, "--out", shut / "leaderboard.csv"], [str(shut), *NOT_WRITABLE, "--out"],
            watch=(run_copy, shut))


def test_pretrain_into_a_read_only_directory(refused, read_only, pretrain_corpus, tmp_path):
    shut = read_only(tmp_path / "shut")
    refused(pretrain_argv(pretrain_corpus, shut / "ckpt"), ["--out", str(shut), "is not writable",
                                                             "nothing was changed"], watch=(shut,))
