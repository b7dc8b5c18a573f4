"""Failing trials: retried from their checkpoint, or ended as ERROR while the search goes on."""

import functools
import subprocess
import sys
import weakref

import optuna
import pytest
import ray
import torch

from model.config import TrialConfig
from results.export import run_leaderboard
from rundir.settings import Settings
from search import trainable
from search.driver import launch, resume
from search.session import RestoreFailed
from search.trainable import run_trial
from tests.search.failing_trials import flaky_trial, out_of_memory_trial
from tests.search.test_launch import SPACE

pytestmark = pytest.mark.ray


def test_flaky_trial_retries_and_broken_trial_errors(tmp_path, local_ray):
    (tmp_path / "space.yaml").write_text(SPACE)
    settings = Settings(space=str(tmp_path / "space.yaml"), synthetic_rows=600, max_seq_len=32, folds=3,
                        num_samples=4, max_epochs=2, grace_period=2, max_failures=2,
                        storage_path=str(tmp_path / "runs"), name="fail", seed=0)
    trial_fn = functools.partial(flaky_trial, marker_dir=str(tmp_path))
    trial_fn.__name__ = "run_trial"  # Ray names the trainable after it: the fixed code's resume restores it
    files, frame = launch(settings, out=lambda _: None, trial_fn=trial_fn)
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

    # The cause is fixed: `resume --retry-errored` continues trial 2 under the same Ray id.
    broken_id = rows.loc[2, "trial_id"]
    proc = subprocess.run([sys.executable, "-m", "search", "resume", str(files.root), "--retry-errored"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "retrying errored trial 2" in proc.stdout
    after = run_leaderboard(files.root)
    row = after.set_index("trial_id").loc[broken_id]
    assert row["status"] == "completed" and row["epochs"] == 2 and row["optuna_number"] == 4
    assert set(after["status"]) == {"completed"} and len(after) == 4
    study = optuna.load_study(study_name="fail", storage=files.study_url)
    states = {t.number: t.state.name for t in study.trials}
    assert states == {0: "COMPLETE", 1: "COMPLETE", 2: "FAIL", 3: "COMPLETE", 4: "COMPLETE"}
    assert study.trials[4].params == study.trials[2].params and study.trials[4].user_attrs["retry_of"] == 2
    assert study.trials[4].value == row["level2_macro_f1"]


def test_a_restore_ray_cannot_do_is_an_error_and_changes_nothing(tmp_path, local_ray):
    """Launched with another trial function (Ray registers trainables by name), the run cannot be
    restored; Ray would then start a new experiment over it. The resume must refuse instead."""
    (tmp_path / "space.yaml").write_text(SPACE)
    settings = Settings(space=str(tmp_path / "space.yaml"), synthetic_rows=400, max_seq_len=32, folds=3,
                        num_samples=1, max_epochs=1, grace_period=1, storage_path=str(tmp_path), name="r")
    files, _ = launch(settings, out=lambda _: None, trial_fn=functools.partial(run_trial))
    ray.shutdown()
    states = sorted(files.ray_dir.glob("experiment_state-*.json"))
    ours = {path: path.read_bytes() for path in (files.run_json, files.trials_json, files.driver_lock)}
    with pytest.raises(RestoreFailed, match=r"Ray could not restore the experiment .*Unknown trainable"):
        resume(files.root, num_samples=2, out=lambda _: None)
    assert sorted(files.ray_dir.glob("experiment_state-*.json")) == states
    # Not the budget, not the `resumed` list, not the driver's pid: the refused resume left them as they were.
    assert {path: path.read_bytes() for path in ours} == ours
    assert len(run_leaderboard(files.root)) == 1


def test_a_refused_retry_of_errored_trials_leaves_the_study_and_records_as_they_were(tmp_path, local_ray):
    (tmp_path / "space.yaml").write_text(SPACE)
    settings = Settings(space=str(tmp_path / "space.yaml"), synthetic_rows=400, max_seq_len=32, folds=3,
                        num_samples=3, max_epochs=1, grace_period=1, max_failures=0, storage_path=str(tmp_path),
                        name="e")
    files, frame = launch(settings, out=lambda _: None, trial_fn=functools.partial(flaky_trial,
                                                                                  marker_dir=str(tmp_path)))
    assert sorted(frame["status"]) == ["completed", "error", "error"]
    ray.shutdown()
    ours = {path: path.read_bytes() for path in (files.run_json, files.trials_json, files.study_db)}
    said = []
    with pytest.raises(RestoreFailed):  # another trial function: Ray cannot restore the experiment
        resume(files.root, retry_errored=True, out=said.append)
    assert any("retrying errored trial" in line for line in said)  # the study had been written to
    assert {path: path.read_bytes() for path in ours} == ours
    study = optuna.load_study(study_name="e", storage=files.study_url)
    assert sorted(t.state.name for t in study.trials) == ["COMPLETE", "FAIL", "FAIL"]


def test_an_out_of_memory_the_trial_causes_alone_is_not_run_again_by_rays_retries(tmp_path, local_ray):
    (tmp_path / "space.yaml").write_text(SPACE)
    settings = Settings(space=str(tmp_path / "space.yaml"), synthetic_rows=400, max_seq_len=32, folds=3,
                        num_samples=2, max_epochs=1, grace_period=1, max_failures=2,
                        storage_path=str(tmp_path / "runs"), name="oom")
    files, frame = launch(settings, out=lambda _: None,
                          trial_fn=functools.partial(out_of_memory_trial, marker_dir=str(tmp_path)))
    assert list(frame["status"]) == ["error", "error"]
    for number in (0, 1):
        assert (tmp_path / f"trial-{number}-starts").read_text() == "xxx"  # 1 attempt + max_failures retries
        assert (tmp_path / f"trial-{number}-fits").read_text() == "x"  # ... of which only the first trained
    for error in frame["error"]:
        assert error.startswith("search.trainable.TrialOutOfMemory: CUDA out of memory on cuda:0")
        assert error.endswith("Other processes held 0.5 of the GPU's 16.0 GiB, so the trial does not fit on it "
                              "even alone: its retries on this GPU are not run.")


def fake_gpu(monkeypatch, *, total_gib: float, free_gib: float, reserved_gib: float, calls: list) -> None:
    gib = 2**30
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device: calls.append(("reset", device)))
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append(("empty_cache",)))
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (int(free_gib * gib), int(total_gib * gib)))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device: int(reserved_gib * gib))


def test_an_out_of_memory_caused_by_other_processes_is_left_to_rays_retries(monkeypatch, tmp_path):
    fits = []

    def oom(*args, **kwargs):
        fits.append(1)
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(trainable, "fit", oom)
    record, cuda = tmp_path / trainable.OOM_RECORD, torch.device("cuda:0")
    # Neighbours hold 8 of 16 GiB: the trial may fit once they are gone, so nothing is recorded.
    fake_gpu(monkeypatch, total_gib=16, free_gib=1, reserved_gib=7, calls=[])
    with pytest.raises(trainable.TrialOutOfMemory) as raised:
        trainable.fit_explaining_oom(TrialConfig(), None, None, device=cuda, resume=None, record=record)
    assert "not run" not in str(raised.value) and not record.exists()
    # Alone on the GPU (1 GiB held by others: under 10%): recorded, and a retry does not train again ...
    fake_gpu(monkeypatch, total_gib=16, free_gib=0.5, reserved_gib=14.5, calls=[])
    with pytest.raises(trainable.TrialOutOfMemory, match="its retries on this GPU are not run") as first:
        trainable.fit_explaining_oom(TrialConfig(), None, None, device=cuda, resume=None, record=record)
    with pytest.raises(trainable.TrialOutOfMemory) as again:
        trainable.fit_explaining_oom(TrialConfig(), None, None, device=cuda, resume=None, record=record)
    assert str(again.value) == str(first.value) and len(fits) == 2
    # ... unless it runs on a GPU with more memory.
    fake_gpu(monkeypatch, total_gib=80, free_gib=79, reserved_gib=0, calls=[])
    with pytest.raises(trainable.TrialOutOfMemory):
        trainable.fit_explaining_oom(TrialConfig(), None, None, device=cuda, resume=None, record=record)
    assert len(fits) == 3


def test_cuda_out_of_memory_is_reported_as_such(monkeypatch):
    def oom(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    calls = []
    monkeypatch.setattr(trainable, "fit", oom)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device: calls.append(("reset", device)))
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append(("empty_cache",)))
    cfg = TrialConfig(batch_size=64)
    with pytest.raises(trainable.TrialOutOfMemory, match=r"CUDA out of memory on cuda:0 .*batch_size 64\): "
                       r"lower batch_size .*\[CUDA out of memory. Tried to allocate 2.00 GiB\]"):
        trainable.fit_explaining_oom(cfg, None, None, device=torch.device("cuda:0"), resume=None)
    # The worker is reused by the next trial: it starts with what an earlier trial may have left
    # given back and the peak counter reset, and ends giving its own memory back.
    assert calls == [("empty_cache",), ("reset", torch.device("cuda:0")), ("empty_cache",)]


def test_a_cublas_allocation_failure_is_an_out_of_memory_too(monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`")

    monkeypatch.setattr(trainable, "fit", fail)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device: None)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    with pytest.raises(trainable.TrialOutOfMemory, match=r"CUDA out of memory on cuda:0 .*lower batch_size .*"
                       r"\[CUDA error: CUBLAS_STATUS_ALLOC_FAILED"):
        trainable.fit_explaining_oom(TrialConfig(), None, None, device=torch.device("cuda:0"), resume=None)
    monkeypatch.setattr(trainable, "fit", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("a bug")))
    with pytest.raises(RuntimeError, match="^a bug$"):  # any other error stays what it is
        trainable.fit_explaining_oom(TrialConfig(), None, None, device=torch.device("cuda:0"), resume=None)


@pytest.mark.parametrize("ending", [
    torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    RuntimeError("a bug in a loss"),
    SystemExit(0),  # how Ray ends a trial ASHA stopped: raised inside tune.report
])
def test_the_model_is_freed_before_the_memory_is_given_back_however_the_trial_ends(monkeypatch, ending):
    # While the exception propagates, its traceback holds fit's frames and their model: unless those
    # are cleared, the caching allocator's blocks are still in use when empty_cache runs.
    models, alive_at_release = [], []

    def fit_until(*args, **kwargs):
        model = torch.nn.Linear(4, 4)  # the trial's model, a local of fit's frame
        models.append(weakref.ref(model))
        raise ending

    def release(device, err=None):
        real_release(torch.device("cpu"), err)  # clears the frames and collects; no CUDA here
        alive_at_release.append(bool(models) and models[-1]() is not None)

    real_release = trainable.release_memory
    monkeypatch.setattr(trainable, "fit", fit_until)
    monkeypatch.setattr(trainable, "release_memory", release)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device: None)
    with pytest.raises((type(ending), trainable.TrialOutOfMemory)):
        trainable.fit_explaining_oom(TrialConfig(), None, None, device=torch.device("cuda:0"), resume=None)
    assert alive_at_release == [False, False]  # at the start (no model yet), and once the trial ended


def test_a_trial_trains_on_cuda_only_where_ray_gave_it_a_gpu(monkeypatch):
    # Ray leaves CUDA_VISIBLE_DEVICES alone in a worker given no GPU: it still sees the node's GPUs.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(ray, "get_gpu_ids", lambda: [])
    assert trainable.trial_device() == torch.device("cpu")
    monkeypatch.setattr(ray, "get_gpu_ids", lambda: [0])
    assert trainable.trial_device() == torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert trainable.trial_device() == torch.device("cpu")


def test_memory_left_is_what_a_reused_worker_still_holds_as_a_trial_starts(monkeypatch):
    monkeypatch.setattr(trainable, "_trials_started", 0)
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device: 3 * 2**30)
    cuda = torch.device("cuda:0")
    assert trainable.memory_left(cuda) is None  # the worker's first trial: nothing before it
    assert trainable.memory_left(cuda) == 3.0
    assert trainable.memory_left(torch.device("cpu")) is None
