"""The trial function Ray runs: sampled params -> `TrialConfig` -> `model.train.fit`.

`report` (inside `run_trial`) is the one place that calls `tune.report`: once per evaluation,
with a checkpoint of the full training state, so a retried or resumed trial continues from its
last evaluation instead of starting over.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from model import metrics as M
from model.data import EncodedData
from model.train import Evaluation, default_device, fit
from spaces.space import SearchSpace

STATE_FILE = "state.pt"


def trial_threads() -> int:
    """CPU threads for torch: the CPUs Ray reserved for this trial (at least 1)."""
    resources = tune.get_context().get_trial_resources()
    return max(1, int(resources.required_resources.get("CPU", 1)))


def load_state(checkpoint: tune.Checkpoint | None) -> dict | None:
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as directory:
        return torch.load(Path(directory) / STATE_FILE, weights_only=True, map_location="cpu")


def run_trial(config: dict[str, Any], *, data: EncodedData, space: SearchSpace, overrides: dict[str, Any],
              ended: frozenset[str] = frozenset()) -> None:
    """Train one trial, or continue it from its checkpoint.

    `ended`: ids of trials the run's records show as ended although Ray's last experiment snapshot
    (taken before a driver was killed) still had them running. Such a trial, and one whose
    checkpoint is its final evaluation, only reports that evaluation again and returns, so the
    restored search records its end without training it further.
    """
    cfg = space.config(config[M.PARAMS], **overrides)
    logging.getLogger("ray.train").setLevel(logging.WARNING)  # no line per saved checkpoint
    state = load_state(tune.get_checkpoint())
    if state is not None and (state["report"][M.FINISHED] or tune.get_context().get_trial_id() in ended):
        tune.report(state["report"])
        return
    torch.set_num_threads(trial_threads())
    device = default_device()  # CUDA only where Ray assigned this trial a GPU

    def report(evaluation: Evaluation) -> None:
        metrics = {**evaluation.metrics, M.PER_CLASS_F1: evaluation.per_class_f1, M.DEVICE: str(device),
                   M.NODE_ID: ray.get_runtime_context().get_node_id(),
                   M.CHECKPOINT_SCORE: evaluation.metrics[M.LEVEL2_MACRO_F1] if evaluation.is_best else -1.0}
        if device.type == "cuda":
            metrics[M.GPU_MEM_PEAK_GB] = torch.cuda.max_memory_allocated(device) / 2**30
        with tempfile.TemporaryDirectory() as tmp:
            torch.save({**evaluation.snapshot(), "report": metrics}, Path(tmp) / STATE_FILE)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(tmp))

    fit_explaining_oom(cfg, data, report, device=device, resume=state)


def fit_explaining_oom(cfg, data: EncodedData, on_eval, *, device: torch.device, resume: dict | None) -> None:
    """`fit`, with a CUDA out-of-memory turned into an error that says what to change."""
    try:
        fit(cfg, data, on_eval, device=device, resume=resume)
    except torch.cuda.OutOfMemoryError as err:
        raise TrialOutOfMemory(out_of_memory_message(cfg, device, err)) from err


class TrialOutOfMemory(RuntimeError):
    """The trial's model and batch do not fit in its GPU's memory."""


def out_of_memory_message(cfg, device: torch.device, err: BaseException) -> str:
    first = str(err).strip().splitlines()[0] if str(err).strip() else "out of memory"
    return (f"CUDA out of memory on {device} (encoder {cfg.encoder}, hidden {cfg.hidden_size}, batch_size "
            f"{cfg.batch_size}): lower batch_size or --max-seq-len, or give each trial a whole GPU "
            f"(--gpus-per-trial 1). Fractional GPUs share memory with no isolation. [{first}]")
