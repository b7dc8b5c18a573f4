"""The bad-input catalogue (issue 12): every case is refused the same way.

`refused(argv, needles, watch=...)` runs the CLI in-process and asserts what a user must see for any
bad input: exit status 2, an `error:` line on stderr that contains every needle (the file, line or
flag at fault and the fix), no traceback, and nothing under `watch` changed (files and folders,
bytes and modes; a failed command leaves no file behind). Each module of this folder holds one
area's cases (data, space, flags, run files), parametrized, so the catalogue is counted by pytest.

`finished_run` is one real tiny search shared by the whole session; a case that damages a run works
on its own copy (`run_copy`).
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from cli.main import main
from rundir.settings import Settings
from tests.conftest import E2E_SPACE, own_err


def snapshot(*roots: Path) -> dict[str, tuple[int, str]]:
    """{path: (mode, sha256 or 'dir')} of everything under the roots (and the roots themselves)."""
    seen: dict[str, tuple[int, str]] = {}
    for root in roots:
        if not root.exists():
            seen[str(root)] = (0, "absent")
            continue
        for path in [root, *sorted(root.rglob("*"))]:
            mode = path.lstat().st_mode
            digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
            seen[str(path)] = (mode, digest)
    return seen


@pytest.fixture
def refused(capsys):
    def check(argv: list[str], needles: list[str] | tuple[str, ...], watch: tuple[Path, ...] = ()) -> str:
        before = snapshot(*watch)
        with pytest.raises(SystemExit) as exc:
            main([str(a) for a in argv])
        err = own_err(capsys)
        assert exc.value.code == 2, f"exit status {exc.value.code}, stderr:\n{err}"
        assert "Traceback" not in err, err
        assert "error:" in err, err
        for needle in needles:
            assert needle in err, f"{needle!r} not in:\n{err}"
        assert snapshot(*watch) == before, "a refused command changed files"
        return err
    return check


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory) -> Path:
    """A finished 2-trial, 1-epoch search on tiny synthetic data (a real Ray run, ~20 s)."""
    import ray

    from search.driver import launch

    root = tmp_path_factory.mktemp("catalogue")
    (root / "space.yaml").write_text(E2E_SPACE)
    settings = Settings(space=str(root / "space.yaml"), synthetic_rows=600, max_seq_len=32, folds=4,
                        num_samples=2, max_epochs=1, grace_period=1, reduction_factor=2,
                        storage_path=str(root / "runs"), name="done", seed=0)
    ray.shutdown()
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    try:
        files, _ = launch(settings, argv=["launch", "--name", "done"], out=lambda line: None)
    finally:
        ray.shutdown()
    return files.root


@pytest.fixture
def run_copy(finished_run, tmp_path) -> Path:
    """A private copy of the finished run, for cases that damage it."""
    return Path(shutil.copytree(finished_run, tmp_path / "run", symlinks=True))


@pytest.fixture(scope="session")
def confirmed_run(finished_run, tmp_path_factory) -> Path:
    """A copy of the finished run after `confirm --top 1 --folds 2` (real Ray jobs) and `ensemble`:
    every file the stages after the search write, for cases that damage them (`confirmed_copy`)."""
    import ray

    from stages.confirm.run import confirm
    from stages.ensemble import run_ensemble

    run = Path(shutil.copytree(finished_run, tmp_path_factory.mktemp("confirmed") / "done", symlinks=True))
    ray.shutdown()
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    try:
        outcome = confirm(run, top=1, folds=2, seeds=1, argv=["confirm", str(run)], out=lambda line: None)
    finally:
        ray.shutdown()
    assert outcome.finished, outcome.table
    run_ensemble(run, max_members=4, out=lambda line: None)
    return run


@pytest.fixture
def confirmed_copy(confirmed_run, tmp_path) -> Path:
    """A private copy of the confirmed run (its own directory name, so its paths differ from the original's)."""
    return Path(shutil.copytree(confirmed_run, tmp_path / "run", symlinks=True))


PRETRAIN_TINY = ["--hidden-size", "16", "--num-layers", "1", "--num-heads", "2", "--intermediate-size", "32",
                 "--max-seq-len", "32", "--batch-size", "8", "--steps", "3", "--save-every", "0", "--threads", "1",
                 "--no-progress"]


@pytest.fixture(scope="session")
def pretrain_corpus(tmp_path_factory) -> Path:
    from model.synthetic import synthesize

    path = tmp_path_factory.mktemp("corpus") / "train.csv"
    synthesize(240, seed=3)[0].to_csv(path, index=False)
    return path


def pretrain_argv(corpus: Path, out: Path, *extra: str) -> list[str]:
    return ["pretrain", "--corpus", str(corpus), "--out", str(out), *PRETRAIN_TINY, *extra]


@pytest.fixture(scope="session")
def pretrained(pretrain_corpus, tmp_path_factory) -> Path:
    """A tiny finished pretraining checkpoint (3 steps, no Ray, a few seconds)."""
    import torch

    out = tmp_path_factory.mktemp("pretrained") / "ckpt"
    threads = torch.get_num_threads()
    try:
        main(pretrain_argv(pretrain_corpus, out))
    finally:
        torch.set_num_threads(threads)
    return out


@pytest.fixture
def pretrained_copy(pretrained, tmp_path) -> Path:
    return Path(shutil.copytree(pretrained, tmp_path / "ckpt", symlinks=True))
