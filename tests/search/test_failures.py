"""Failing trials: retried from their checkpoint, or ended as ERROR while the search goes on."""

import functools

import optuna
import pytest
import torch

from model.config import TrialConfig
from search import trainable
from search.driver import launch
from search.settings import Settings
from tests.search.failing_trials import flaky_trial
from tests.search.test_launch import SPACE

pytestmark = pytest.mark.e2e


def test_flaky_trial_retries_and_broken_trial_errors(tmp_path, local_ray):
    (tmp_path / "space.yaml").write_text(SPACE)
    settings = Settings(space=str(tmp_path / "space.yaml"), synthetic_rows=600, max_seq_len=32, folds=3,
                        num_samples=4, max_epochs=2, grace_period=2, max_failures=2,
                        storage_path=str(tmp_path / "runs"), name="fail", seed=0)
    files, frame = launch(settings, out=lambda _: None,
                          trial_fn=functools.partial(flaky_trial, marker_dir=str(tmp_path)))
    rows = frame.set_index("optuna_number")
    assert rows.loc[1, "status"] == "completed" and rows.loc[1, "epochs"] == 2  # retried, then done
    assert rows.loc[2, "status"] == "error"
    assert rows.loc[2, "error"] == "ValueError: injected: trial 2 always fails"
    assert (tmp_path / "trial-2-attempts").read_text() == "xxx"  # 1 attempt + max_failures retries
    assert set(rows.drop(index=2)["status"]) == {"completed"}
    assert frame.iloc[-1]["optuna_number"] == 2  # errors rank last
    study = optuna.load_study(study_name="fail", storage=files.study_url)
    states = {t.number: t.state.name for t in study.trials}
    assert states == {0: "COMPLETE", 1: "COMPLETE", 2: "FAIL", 3: "COMPLETE"}


def test_cuda_out_of_memory_is_reported_as_such(monkeypatch):
    def oom(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(trainable, "fit", oom)
    cfg = TrialConfig(batch_size=64)
    with pytest.raises(trainable.TrialOutOfMemory, match=r"CUDA out of memory on cuda:0 .*batch_size 64\): "
                       r"lower batch_size .*\[CUDA out of memory. Tried to allocate 2.00 GiB\]"):
        trainable.fit_explaining_oom(cfg, None, None, device=torch.device("cuda:0"), resume=None)
