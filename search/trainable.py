"""The trial functions Ray runs: `run_trial` (a search trial: sampled params -> `TrialConfig` ->
`model.train.fit`) and `confirm_trial` (a confirm job: one config on one fold with one seed).

`report_checkpoint` is the one place that calls `tune.report` with a checkpoint: once per
evaluation, with the full training state, so a retried or resumed trial continues from its last
evaluation instead of starting over.
"""

from __future__ import annotations

import gc
import json
import logging
import tempfile
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch
from ray import tune

from model import metrics as M
from model.config import TrialConfig
from model.data import EncodedData
from model.train import Evaluation, default_device, fit
from rundir import keys as K
from rundir.confirm import JOB_SCORES, JobPlan
from rundir.io import atomic_write_json
from rundir.paths import TRIAL_STATE_FILE
from rundir.predictions import CHECKPOINT_PREDICTIONS
from spaces.space import SearchSpace

# Keys of a checkpoint's state beside `TrainState`'s (which `fit(resume=...)` ignores).
REPORT = "report"  # the metrics reported with the checkpoint
BEST = "best"  # confirm jobs: the best evaluation so far, {BEST_WEIGHTS, BEST_DEV_PROBS, BEST_METRICS}
BEST_WEIGHTS = "weights"  # its scored weights (a state_dict)
BEST_DEV_PROBS = "dev_probs"  # (N_dev, C) float32 tensor: its level-2 probabilities, in dev row order
BEST_METRICS = "metrics"  # its scores: JOB_SCORES and the epoch
# A trial that ran out of GPU memory while other processes held less than this share of the GPU
# would not fit even alone: it is recorded (OOM_RECORD, in the trial's directory) and not run again.
OTHERS_SHARE = 0.1
OOM_RECORD = "cuda_out_of_memory.json"


def trial_device() -> torch.device:
    """CUDA where Ray assigned this trial a GPU, else the CPU. The pinned Ray leaves
    CUDA_VISIBLE_DEVICES alone in a worker given no GPU (ray-project/ray#54868), so such a worker
    still sees every GPU of its node: `torch.cuda.is_available()` alone would put trials launched
    with --gpus-per-trial 0 on GPU 0, beside the trials Ray did give it, with no accounting."""
    return default_device() if ray.get_gpu_ids() else torch.device("cpu")


def trial_threads() -> int:
    """CPU threads for torch: the CPUs Ray reserved for this trial (at least 1)."""
    resources = tune.get_context().get_trial_resources()
    return max(1, int(resources.required_resources.get("CPU", 1)))


def load_state(checkpoint: tune.Checkpoint | None) -> dict | None:
    """The state a checkpoint holds (read on the driver too, for a confirm job's model)."""
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as directory:
        return torch.load(Path(directory) / TRIAL_STATE_FILE, weights_only=True, map_location="cpu")


def replayed(state: dict | None, *, ended: bool) -> bool:
    """Re-report the last result and return True when the trial has nothing left to train: its
    checkpoint is its final evaluation, or the run's records show it ended (`ended`) although Ray's
    last experiment snapshot, taken before a driver was killed, still had it running."""
    if state is not None and (state[REPORT][M.FINISHED] or ended):
        tune.report(state[REPORT])
        return True
    return False


def evaluation_metrics(evaluation: Evaluation, device: torch.device, *, left_gb: float | None = None
                       ) -> dict[str, Any]:
    """What a trial reports for one evaluation: its scores, per-class F1, device, node and the
    checkpoint score; on CUDA its peak memory and (`left_gb`, see `memory_left`) what earlier
    trials of its worker left."""
    metrics = {**evaluation.metrics, M.PER_CLASS_F1: evaluation.per_class_f1, K.DEVICE: str(device),
               K.NODE_ID: ray.get_runtime_context().get_node_id(),
               K.CHECKPOINT_SCORE: evaluation.metrics[M.LEVEL2_MACRO_F1] if evaluation.is_best else -1.0}
    if device.type == "cuda":
        metrics[K.GPU_MEM_PEAK_GB] = torch.cuda.max_memory_allocated(device) / 2**30
    if left_gb is not None:
        metrics[K.GPU_MEM_LEFT_GB] = left_gb
    return metrics


_trials_started = 0  # trials this worker process started (it is reused: search/driver.py REUSE_WORKERS)


def memory_left(device: torch.device) -> float | None:
    """GiB of CUDA memory torch holds in this worker as a trial starts: what the trials it ran
    before left behind (0 when `fit_explaining_oom` gave it all back, however they ended). None on
    the CPU and for a worker's first trial."""
    global _trials_started
    _trials_started += 1
    if device.type != "cuda" or _trials_started == 1:
        return None
    return torch.cuda.memory_reserved(device) / 2**30


def report_checkpoint(metrics: dict[str, Any], state: dict[str, Any], *, dev_predictions: np.ndarray | None = None
                      ) -> None:
    """`tune.report(metrics)` with a checkpoint holding `state` and the metrics, and (a best
    evaluation's) `dev_predictions`, the predicted label of each dev row, which the driver keeps for
    the leaderboard's noise (rundir/predictions.py)."""
    with tempfile.TemporaryDirectory() as tmp:
        torch.save({**state, REPORT: metrics}, Path(tmp) / TRIAL_STATE_FILE)
        if dev_predictions is not None:
            np.save(Path(tmp) / CHECKPOINT_PREDICTIONS, dev_predictions.astype(np.int16), allow_pickle=False)
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(tmp))


def run_trial(config: dict[str, Any], *, data: EncodedData, space: SearchSpace, overrides: dict[str, Any],
              ended: frozenset[str] = frozenset()) -> None:
    """Train one trial, or continue it from its checkpoint.

    `ended`: ids of trials the run's records show as ended although Ray's last experiment snapshot
    (taken before a driver was killed) still had them running. Such a trial, and one whose
    checkpoint is its final evaluation, only reports that evaluation again and returns, so the
    restored search records its end without training it further.
    """
    cfg = space.config(config[K.PARAMS], **overrides)
    logging.getLogger("ray.train").setLevel(logging.WARNING)  # no line per saved checkpoint
    state = load_state(tune.get_checkpoint())
    if replayed(state, ended=tune.get_context().get_trial_id() in ended):
        return
    torch.set_num_threads(trial_threads())
    device = trial_device()
    left = memory_left(device)

    def report(evaluation: Evaluation) -> None:
        predictions = evaluation.dev_probabilities.argmax(axis=1) if evaluation.is_best else None
        report_checkpoint(evaluation_metrics(evaluation, device, left_gb=left), evaluation.snapshot(),
                          dev_predictions=predictions)

    fit_explaining_oom(cfg, data, report, device=device, resume=state, record=oom_record())


def confirm_trial(config: dict[str, Any], *, folds: list[EncodedData], jobs: dict[str, JobPlan],
                  ended: frozenset[str] = frozenset(), announce: bool = False) -> None:
    """Train one confirm job (`config[K.JOB]`), or continue it from its checkpoint.

    `jobs[job_id]` holds the job's full `TrialConfig` (as a dict: its seed and budget included)
    and its `fold`, an index into `folds` (one `EncodedData` per fold, each with its own
    vocabulary). Every checkpoint holds the training state and the best evaluation so far
    (`BEST`: its scored weights, dev probabilities and scores), so a resumed job keeps its best;
    the driver writes the fold model and its held-out probabilities from the final checkpoint.
    `ended`: jobs the stage's records show as completed (Ray's last experiment snapshot, taken
    before a driver was killed, may still have them running, or not know them at all). Such a job,
    and one whose checkpoint is its final evaluation, returns without training or reporting: Tune
    then ends the trial on its last result without logging it again (no FIFO scheduler or grid
    needs a result), so a job's progress.csv holds each evaluation once.
    `announce` (`confirm --race`): report once before training, a result with no epoch; the worker
    waits for the driver's answer, and RaceScheduler stops a job whose member was raced out.
    """
    job_id = config[K.JOB]
    job = jobs[job_id]
    cfg = TrialConfig.from_dict(job.config)
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    state = load_state(tune.get_checkpoint())
    if job_id in ended or (state is not None and state[REPORT][M.FINISHED]):
        return
    if announce:
        tune.report({K.JOB: job_id})
    torch.set_num_threads(trial_threads())
    device = trial_device()
    left = memory_left(device)
    best = state.get(BEST) if state is not None else None

    def report(evaluation: Evaluation) -> None:
        nonlocal best
        if evaluation.is_best:
            best = {BEST_WEIGHTS: evaluation.scored_weights(),
                    BEST_DEV_PROBS: torch.from_numpy(evaluation.dev_probabilities),
                    BEST_METRICS: {M.EPOCH: evaluation.epoch,
                                   **{key: evaluation.metrics[key] for key in JOB_SCORES}}}
        report_checkpoint(evaluation_metrics(evaluation, device, left_gb=left), {**evaluation.snapshot(), BEST: best})

    fit_explaining_oom(cfg, folds[job.fold], report, device=device, resume=state, record=oom_record())


def oom_record() -> Path:
    """Where this trial notes an out-of-memory that running it again cannot avoid: its directory on
    the node, which Ray's retries of the trial on that node share."""
    return Path(tune.get_context().get_trial_dir()) / OOM_RECORD


def fit_explaining_oom(cfg, data: EncodedData, on_eval, *, device: torch.device, resume: dict | None,
                       record: Path | None = None) -> None:
    """`fit`, with a CUDA out-of-memory (or a cuBLAS/cuDNN allocation failure) turned into an
    error that says what to change.

    Ray retries a failed trial (--max-failures) whatever the error. An out-of-memory while other
    processes held under OTHERS_SHARE of the GPU is the trial's own: it would not fit even alone,
    and each retry would only fill the GPU again beside the trials sharing it. Such a one is noted
    in `record`, and the retries end at once with the same error, unless they run on a GPU with
    more memory. One that other processes' memory caused (trials sharing the GPU) is retried.

    Workers are reused between trials (search/driver.py REUSE_WORKERS), so a trial starts with the
    peak-memory counter reset and, however it ends, gives its GPU memory back: the next trial of
    this worker, and the trials of other workers sharing the GPU, get it.
    """
    if device.type == "cuda":
        refuse_known_oom(record, device)
        release_memory(device)  # whatever an earlier trial of this worker left, should any be left
        torch.cuda.reset_peak_memory_stats(device)
    try:
        fit(cfg, data, on_eval, device=device, resume=resume)
    except BaseException as err:  # an error, or Ray ending the trial (ASHA stops it by raising in tune.report)
        release_memory(device, err)
        if not is_out_of_memory(err):
            raise
        message = out_of_memory_message(cfg, device, err)
        if record is not None:
            free, total = torch.cuda.mem_get_info(device)
            others = total - free - torch.cuda.memory_reserved(device)  # reserved: ours, cached blocks included
            if others < OTHERS_SHARE * total:
                message += (f" Other processes held {others / 2**30:.1f} of the GPU's {total / 2**30:.1f} GiB, "
                            "so the trial does not fit on it even alone: its retries on this GPU are not run.")
                atomic_write_json(record, {"message": message, "total_bytes": total})
        raise TrialOutOfMemory(message) from err
    release_memory(device)


# cuBLAS and cuDNN report a failed allocation as a plain RuntimeError with their own status.
OUT_OF_MEMORY_STATUSES = ("CUBLAS_STATUS_ALLOC_FAILED", "CUDNN_STATUS_ALLOC_FAILED")


def is_out_of_memory(err: BaseException) -> bool:
    return isinstance(err, torch.cuda.OutOfMemoryError) or (
        isinstance(err, RuntimeError) and any(status in str(err) for status in OUT_OF_MEMORY_STATUSES))


def refuse_known_oom(record: Path | None, device: torch.device) -> None:
    """Raise the recorded out-of-memory of an earlier attempt of this trial, unless this GPU has
    more memory than the one it ran out of."""
    if record is None or not record.is_file():
        return
    noted = json.loads(record.read_text(encoding="utf-8"))
    if torch.cuda.mem_get_info(device)[1] <= noted["total_bytes"]:
        raise TrialOutOfMemory(noted["message"])


def release_memory(device: torch.device, err: BaseException | None = None) -> None:
    """Free what the finished trial left: its tensors (a reference cycle may hold a model) and, on
    CUDA, the blocks torch's caching allocator keeps reserved.

    `err`: the exception the trial is ending with. Its traceback holds `fit`'s frames, and with them
    the model, optimizer and batches, for as long as it propagates: their locals are cleared first,
    or nothing would be freed until Ray had handled the exception, long after this worker's memory
    was needed by the trials sharing its GPU.
    """
    if err is not None:
        traceback.clear_frames(err.__traceback__)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


class TrialOutOfMemory(RuntimeError):
    """The trial's model and batch do not fit in its GPU's memory."""


def out_of_memory_message(cfg, device: torch.device, err: BaseException) -> str:
    first = str(err).strip().splitlines()[0] if str(err).strip() else "out of memory"
    return (f"CUDA out of memory on {device} (encoder {cfg.encoder}, hidden {cfg.hidden_size}, batch_size "
            f"{cfg.batch_size}): lower batch_size or --max-seq-len, or give each trial a whole GPU "
            f"(--gpus-per-trial 1). Fractional GPUs share memory with no isolation. [{first}]")
