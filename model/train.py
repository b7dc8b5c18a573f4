"""The training loop every trial runs: `fit(cfg, data, on_eval)`.

One evaluation per epoch on the held-out fold. A trial's score is its best evaluation (as the
competition solutions kept their best checkpoint), and `on_eval` sees every evaluation together
with a way to snapshot the full training state, so a caller can checkpoint and later `resume`.
Deterministic on CPU for a given config and data.
"""

from __future__ import annotations

import copy
import math
import random
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import (
    get_constant_schedule_with_warmup,
    get_cosine_schedule_with_warmup,
    get_linear_schedule_with_warmup,
)

from model import metrics as M
from model.config import TrialConfig
from model.data import EncodedData, EncodedSplit
from model.network import Classifier, build_model
from model.objective import Objective

SCHEDULES = {
    "cosine": get_cosine_schedule_with_warmup,
    "linear": get_linear_schedule_with_warmup,
    "constant": lambda opt, num_warmup_steps, num_training_steps: get_constant_schedule_with_warmup(
        opt, num_warmup_steps),
}


@dataclass(frozen=True)
class Evaluation:
    """One evaluation on the dev fold."""

    epoch: int
    metrics: dict[str, Any]  # scalars under the keys of model.metrics, ready for tune.report
    per_class_f1: list[float]  # (num_labels,) level-2 F1 per label
    is_best: bool  # best level-2 macro-F1 so far
    is_last: bool  # fit ends after this one (budget spent or patience exhausted)
    # The full training state, for `fit(resume=...)`; call it inside on_eval (it copies live objects).
    state: Callable[[], dict] = field(repr=False, compare=False)


@dataclass(frozen=True)
class FitResult:
    best: Evaluation
    history: list[Evaluation]
    seconds: float


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def batches(split: EncodedSplit, groups: Iterable[np.ndarray], device: torch.device
            ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Yield (ids (B, L), mask (B, L), labels (B,)) per group of row indices, L = its longest row.

    The arrays are already padded to max_seq_len and live in memory, so slicing them is all a
    DataLoader with a padding collate would do, without its worker overhead.
    """
    for idx in groups:
        width = int(split.lengths[idx].max())
        ids = torch.from_numpy(split.ids[idx, :width].astype(np.int64))
        mask = torch.arange(width)[None, :] < torch.from_numpy(split.lengths[idx])[:, None]
        labels = torch.from_numpy(split.labels[idx])
        yield (ids.to(device, non_blocking=True), mask.to(device, non_blocking=True),
               labels.to(device, non_blocking=True))


def bucketed_batches(lengths: np.ndarray, *, batch_size: int, rng: np.random.Generator,
                     bucket_batches: int = 50) -> list[np.ndarray]:
    """Shuffled batches (arrays of row indices), each holding rows of similar length.

    Rows are shuffled, cut into chunks of `bucket_batches` batches, sorted by length inside each
    chunk and cut into batches, and the batches are shuffled. With dynamic padding this trims most
    pad tokens (texts range 8..334 tokens) while batches stay random across chunks.
    """
    order = rng.permutation(len(lengths))
    chunk = batch_size * bucket_batches
    groups = []
    for piece in np.split(order, range(chunk, len(order), chunk)):
        piece = piece[np.argsort(lengths[piece], kind="stable")]
        groups += np.split(piece, range(batch_size, len(piece), batch_size))
    return [groups[i] for i in rng.permutation(len(groups))]


def _autocast(device: torch.device):
    # bf16 autocast on CUDA (no loss scaling needed); full precision on CPU.
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


@torch.no_grad()
def evaluate(model: Classifier, split: EncodedSplit, *, level1_of: np.ndarray, batch_size: int,
             device: torch.device) -> dict[str, Any]:
    """Metrics of `model` on `split`; `dev_loss` is plain cross-entropy whatever the training loss,
    so it compares across trials."""
    model.eval()
    order = np.argsort(split.lengths, kind="stable")  # similar lengths together: less padding
    groups = np.split(order, range(batch_size, len(order), batch_size))
    preds, loss_sum = np.empty(len(split), dtype=np.int64), 0.0
    for idx, (ids, mask, labels) in zip(groups, batches(split, groups, device), strict=True):
        with _autocast(device):
            logits = model(ids, mask).logits.float()
        loss_sum += F.cross_entropy(logits, labels, reduction="sum").item()
        preds[idx] = logits.argmax(-1).cpu().numpy()
    out = M.classification_metrics(split.labels, preds, level1_of=level1_of)
    out[M.DEV_LOSS] = loss_sum / len(split)
    return out


def _optimizer(model: Classifier, cfg: TrialConfig) -> torch.optim.Optimizer:
    # No weight decay on biases and normalisation weights (1-d tensors), as in BERT fine-tuning.
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)


def fit(cfg: TrialConfig, data: EncodedData, on_eval: Callable[[Evaluation], None] | None = None,
        *, device: torch.device | str | None = None, resume: dict | None = None,
        progress: bool = False) -> FitResult:
    """Train `cfg` on `data.train`, evaluating on `data.dev` after every epoch.

    `on_eval` is called once per evaluation. `resume` is a state from `Evaluation.state()`;
    training then continues after that evaluation's epoch exactly as if never interrupted.
    `progress` shows a progress bar over each epoch's batches (on stderr).
    """
    started = time.perf_counter()
    device = torch.device(device) if device is not None else default_device()
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    seed_everything(cfg.seed)
    model = build_model(cfg, vocab_size=len(data.vocab), max_seq_len=data.max_seq_len,
                        num_labels=data.num_labels, num_level1=len(data.labels.level1)).to(device)
    objective = Objective.from_config(cfg, class_counts=data.class_counts,
                                      level1_of=data.labels.level1_of).to(device)
    optimizer = _optimizer(model, cfg)
    steps_per_epoch = math.ceil(len(data.train) / cfg.batch_size)
    total_steps = steps_per_epoch * cfg.max_epochs
    scheduler = SCHEDULES[cfg.schedule](optimizer, num_warmup_steps=int(cfg.warmup_ratio * total_steps),
                                        num_training_steps=total_steps)
    level1_of = data.labels.level1_of
    history: list[Evaluation] = []
    start_epoch, best_score, best_epoch = 1, -math.inf, 0
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        torch.set_rng_state(resume["torch_rng"])
        start_epoch = resume["epoch"] + 1
        best_score, best_epoch = resume["best_score"], resume["best_epoch"]

    for epoch in range(start_epoch, cfg.max_epochs + 1):
        model.train()
        # The shuffle depends on (seed, epoch) only, so a resumed run sees the same batches.
        groups = bucketed_batches(data.train.lengths, batch_size=cfg.batch_size,
                                  rng=np.random.default_rng([cfg.seed, epoch]))
        train_loss, seen, epoch_started = 0.0, 0, time.perf_counter()
        steps = tqdm(batches(data.train, groups, device), total=len(groups), desc=f"epoch {epoch}",
                     unit="batch", leave=False, disable=not progress)
        for ids, mask, labels in steps:
            with _autocast(device):
                out = model(ids, mask)
            loss = objective(out, labels, model.class_embeddings)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            optimizer.step()
            scheduler.step()
            train_loss += loss.item() * len(labels)
            seen += len(labels)

        scores = evaluate(model, data.dev, level1_of=level1_of, batch_size=2 * cfg.batch_size,
                          device=device)
        is_best = scores[M.LEVEL2_MACRO_F1] > best_score
        if is_best:
            best_score, best_epoch = scores[M.LEVEL2_MACRO_F1], epoch
        stale = epoch - best_epoch
        is_last = epoch == cfg.max_epochs or (cfg.patience > 0 and stale >= cfg.patience)
        report = {
            M.EPOCH: epoch,
            M.LEVEL2_MACRO_F1: scores[M.LEVEL2_MACRO_F1],
            M.LEVEL1_MACRO_F1: scores[M.LEVEL1_MACRO_F1],
            M.ACCURACY: scores[M.ACCURACY],
            M.DEV_LOSS: scores[M.DEV_LOSS],
            M.WORST5_F1: scores[M.WORST5_F1],
            "train_loss": train_loss / max(seen, 1),
            "train_samples_per_s": seen / max(time.perf_counter() - epoch_started, 1e-9),
            M.BEST_LEVEL2_MACRO_F1: best_score,
            M.BEST_EPOCH: best_epoch,
            M.FINISHED: is_last,
        }

        def snapshot(epoch=epoch, best_score=best_score, best_epoch=best_epoch) -> dict:
            # Deep copies: state_dict() tensors alias the live parameters, which train on.
            return copy.deepcopy({
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "torch_rng": torch.get_rng_state(),
                "epoch": epoch, "best_score": best_score, "best_epoch": best_epoch})

        evaluation = Evaluation(epoch=epoch, metrics=report, per_class_f1=scores["per_class_f1"],
                                is_best=is_best, is_last=is_last, state=snapshot)
        history.append(evaluation)
        if on_eval is not None:
            on_eval(evaluation)
        if is_last:
            break

    best = max(history, key=lambda e: (e.metrics[M.LEVEL2_MACRO_F1], -e.epoch)) if history else None
    return FitResult(best=best, history=history, seconds=time.perf_counter() - started)
