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

import torch
from ray import tune

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


def run_trial(config: dict[str, Any], *, data: EncodedData, space: SearchSpace,
              overrides: dict[str, Any]) -> None:
    cfg = space.config(config["params"], **overrides)
    logging.getLogger("ray.train").setLevel(logging.WARNING)  # no line per saved checkpoint
    torch.set_num_threads(trial_threads())
    device = default_device()  # CUDA only where Ray assigned this trial a GPU

    def report(evaluation: Evaluation) -> None:
        metrics = {**evaluation.metrics, "device": str(device)}
        with tempfile.TemporaryDirectory() as tmp:
            torch.save(evaluation.state(), Path(tmp) / STATE_FILE)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(tmp))

    fit(cfg, data, report, device=device, resume=load_state(tune.get_checkpoint()))
