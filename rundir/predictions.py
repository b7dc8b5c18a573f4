"""RUN_DIR/predictions/: each trial's best-evaluation predictions on the dev rows, for the noise
the leaderboard shows (results/noise.py).

    dev.npz        y (N,) int16: the dev rows' level-2 label indices; num_labels: how many there are
    <trial>.npy    (N,) int16: the trial's predicted label of each dev row at its best evaluation

The search's driver writes them (search/driver.py the labels at launch, search/callbacks.py a
trial's predictions whenever its best evaluation improves), from what the trial leaves in its
checkpoint. Plain arrays: read with allow_pickle=False.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from rundir.io import atomic_write_bytes
from rundir.paths import RunFiles

# The file a trial's checkpoint directory holds beside state.pt when it is its best evaluation.
CHECKPOINT_PREDICTIONS = "dev_predictions.npy"


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def write_dev_labels(files: RunFiles, y: np.ndarray, *, num_labels: int) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, y=np.asarray(y, dtype=np.int16), num_labels=np.asarray(num_labels))
    atomic_write_bytes(files.predictions_dir / "dev.npz", buffer.getvalue())


def write_trial_predictions(files: RunFiles, trial_id: str, pred: np.ndarray) -> None:
    atomic_write_bytes(files.predictions_dir / f"{trial_id}.npy", _npy(np.asarray(pred, dtype=np.int16)))


def read_predictions(files: RunFiles) -> tuple[np.ndarray, int, dict[str, np.ndarray]] | None:
    """(y, num_labels, {trial id: predictions}), or None when the run has none (launched before
    they were kept, or no trial evaluated yet). A file that cannot be read is left out."""
    dev = files.predictions_dir / "dev.npz"
    if not dev.is_file():
        return None
    try:
        with np.load(dev, allow_pickle=False) as data:
            y, num_labels = data["y"].astype(np.int64), int(data["num_labels"])
    except (OSError, ValueError, KeyError):
        return None
    preds = {}
    for path in sorted(files.predictions_dir.glob("*.npy")):
        try:
            pred = np.load(path, allow_pickle=False).astype(np.int64)
        except (OSError, ValueError):
            continue
        if pred.shape == y.shape and (pred >= 0).all() and (pred < num_labels).all():
            preds[path.stem] = pred
    return y, num_labels, preds


def copy_from_checkpoint(files: RunFiles, trial_id: str, checkpoint_dir: Path) -> bool:
    """Keep the predictions a trial's best checkpoint holds; False when it holds none."""
    source = Path(checkpoint_dir) / CHECKPOINT_PREDICTIONS
    if not source.is_file():
        return False
    write_trial_predictions(files, trial_id, np.load(source, allow_pickle=False))
    return True
