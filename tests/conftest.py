from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import pandas as pd
import pytest

from model.config import TrialConfig
from model.data import SPECIAL_TOKENS, EncodedData, prepare_data
from model.synthetic import synthesize

# Every Ray this test session starts, in the test process or in a command a test runs, keeps its
# session directory here (Ray honours $RAY_TMPDIR), so `_ray_marker_is_truthful` sees which tests
# start Ray without seeing other processes' Rays. Short: Ray's sockets live under it, and a Unix
# socket path may not exceed 107 bytes.
RAY_ROOT = Path(tempfile.gettempdir()) / f"rt{os.getpid()}"
os.environ["RAY_TMPDIR"] = str(RAY_ROOT)


def _ray_sessions() -> set[str]:
    return {p.name for p in (RAY_ROOT / "ray").glob("session_*")}


# Fixtures that start Ray: a test using one is a `ray` test.
RAY_FIXTURES = {"local_ray", "finished_run"}
_SESSIONS_BEFORE = pytest.StashKey[set]()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test on a fixture that starts Ray is a `ray` test; a `ray` test is slow."""
    for item in items:
        if RAY_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.ray)
        if item.get_closest_marker("ray") is not None:
            item.add_marker(pytest.mark.slow)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    item.stash[_SESSIONS_BEFORE] = _ray_sessions()  # before any fixture of the test is set up


@pytest.fixture(autouse=True)
def _ray_marker_is_truthful(request: pytest.FixtureRequest):
    """Fail a test that starts Ray (itself, through a fixture, or in a command it runs) without the
    `ray` marker: `pytest -m "not slow"` promises a loop that never starts Ray."""
    yield
    started = _ray_sessions() - request.node.stash.get(_SESSIONS_BEFORE, set())
    if started and request.node.get_closest_marker("ray") is None:
        pytest.fail(f"{request.node.nodeid} started Ray but is not marked: add @pytest.mark.ray")


TINY = dict(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32)

# A small search space for end-to-end tests: a model that learns in seconds, a conditional parameter.
E2E_SPACE = """
fixed: {hidden_size: 32, num_layers: 1, num_heads: 2, intermediate_size: 64, pooler: mean, batch_size: 16}
params:
  lr:          {float: [1.0e-5, 1.0e-2], log: true}
  loss:        {choice: [ce, focal]}
  focal_gamma: {float: [1.0, 3.0], when: {loss: focal}}
"""


def write_tiny_bert(directory: Path, *, vocab_size: int = 24, positions: int = 512) -> Path:
    """A real, tiny BERT checkpoint directory (config.json, model.safetensors, vocab.txt of the
    special tokens and "5", "6", ...): what preflight reads and checks."""
    from transformers import BertConfig, BertModel

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = BertConfig(vocab_size=vocab_size, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=16, max_position_embeddings=positions)
    BertModel(config, add_pooling_layer=False).save_pretrained(directory)
    (directory / "vocab.txt").write_text("\n".join(toy_vocab(vocab_size)) + "\n")
    return directory


def toy_vocab(size: int) -> tuple[str, ...]:
    """A run vocabulary of `size` tokens: the special tokens, then "5", "6", ..."""
    return SPECIAL_TOKENS + tuple(str(i) for i in range(len(SPECIAL_TOKENS), size))


@pytest.fixture(scope="session")
def small_frame() -> pd.DataFrame:
    return synthesize(1200, seed=0)[0]


@pytest.fixture(scope="session")
def small_data(small_frame) -> EncodedData:
    return prepare_data(small_frame, folds=4, fold=0, seed=0, max_seq_len=48, source="test")


@pytest.fixture
def tiny_cfg() -> TrialConfig:
    return TrialConfig(**TINY, max_epochs=2, lr=3e-3, batch_size=32)


def write_csv(path, rows: list[dict] | str) -> str:
    """Write rows (or raw text) as a CSV file and return its path."""
    if isinstance(rows, str):
        path.write_text(rows, encoding="utf-8")
    else:
        pd.DataFrame(rows).to_csv(path, index=False)
    return str(path)


# A line a Ray worker printed, as Ray forwards it to the driver's stderr: "(run_trial pid=25606) ...",
# coloured on a terminal. A module's Ray stays up between its tests, so a worker of an earlier test
# (shutting down, a reused one unwinding) may print into a later test's captured stderr.
_RAY_WORKER_LINE = re.compile(r"^(?:\x1b\[[0-9;]*m)?\((?:[\w.:-]+ )?pid=\d+(?:, ip=[^)]*)?\)")


def own_err(capsys: pytest.CaptureFixture) -> str:
    """What the test's own process wrote to stderr: the captured text less the lines Ray forwarded
    from its workers."""
    lines = capsys.readouterr().err.splitlines(keepends=True)
    return "".join(line for line in lines if not _RAY_WORKER_LINE.match(line))


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray (2 CPUs) for one module's in-process end-to-end tests (its tests are marked `ray`)."""
    import ray  # here: the fast loop (`-m "not slow"`) never needs it

    ray.shutdown()
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()
