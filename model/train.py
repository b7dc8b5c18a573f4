"""The training loop every trial runs: `fit(cfg, data, on_eval)`.

An evaluation on the held-out fold at the end of every epoch, and every `eval_every` optimizer
steps when set. A trial's score is its best evaluation (as the
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
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import WeightedRandomSampler
from tqdm.auto import tqdm
from transformers import (
    get_constant_schedule_with_warmup,
    get_cosine_schedule_with_warmup,
    get_linear_schedule_with_warmup,
)

from model import metrics as M
from model.adversarial import ADVERSARIAL
from model.config import TrialConfig
from model.data import EncodedData, EncodedSplit
from model.network import Classifier, build_model
from model.training_loss import TrainingLoss

SCHEDULES = {
    "cosine": get_cosine_schedule_with_warmup,
    "linear": get_linear_schedule_with_warmup,
    "constant": lambda opt, num_warmup_steps, num_training_steps: get_constant_schedule_with_warmup(
        opt, num_warmup_steps),
}


@dataclass(frozen=True)
class Evaluation:
    """One evaluation on the dev fold."""

    epoch: float  # epochs trained: an integer at the end of an epoch, fractional with eval_every
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
                     bucket_batches: int = 50, order: np.ndarray | None = None) -> list[np.ndarray]:
    """Shuffled batches (arrays of row indices), each holding rows of similar length.

    Rows (`order`, default a permutation of all rows) are cut into chunks of `bucket_batches`
    batches, sorted by length inside each chunk and cut into batches, and the batches are
    shuffled. With dynamic padding this trims most pad tokens (texts range 8..334 tokens) while
    batches stay random across chunks.
    """
    order = rng.permutation(len(lengths)) if order is None else order
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


def param_groups(model: Classifier, cfg: TrialConfig) -> list[dict]:
    """AdamW groups: embeddings (`embedding_lr`), the encoder (`lr`) and everything after it -
    sequence layer, pooler, heads (`head_lr`); 0 means `lr`. No weight decay on biases and
    normalisation weights (1-d tensors), as in BERT fine-tuning."""
    embeddings = {id(p) for p in model.encoder.embeddings.parameters()}
    encoder = {id(p) for p in model.encoder.parameters()}
    rates = {"embeddings": cfg.embedding_lr or cfg.lr, "encoder": cfg.lr, "head": cfg.head_lr or cfg.lr}
    buckets: dict[tuple[str, bool], list[torch.nn.Parameter]] = {}
    for param in model.parameters():
        part = "embeddings" if id(param) in embeddings else "encoder" if id(param) in encoder else "head"
        buckets.setdefault((part, param.ndim >= 2), []).append(param)
    return [{"params": params, "lr": rates[part], "weight_decay": cfg.weight_decay if decay else 0.0,
             "name": f"{part}{'' if decay else '/no_decay'}"} for (part, decay), params in buckets.items()]


def epoch_batches(cfg: TrialConfig, data: EncodedData, epoch: int) -> list[np.ndarray]:
    """The batches of one epoch; a function of (seed, epoch) only, so a resumed run sees the same.

    `sampler: weighted` draws len(train) rows with replacement, a row's chance proportional to
    1/sqrt(rows of its label), which lifts rare labels without repeating them excessively.
    """
    rng = np.random.default_rng([cfg.seed, epoch])
    order = None
    if cfg.sampler == "weighted":
        weights = data.class_counts[data.train.labels].astype(np.float64) ** -0.5
        generator = torch.Generator().manual_seed(int(rng.integers(2**31)))
        sampler = WeightedRandomSampler(weights, num_samples=len(weights), replacement=True, generator=generator)
        order = np.fromiter(sampler, dtype=np.int64, count=len(weights))
    return bucketed_batches(data.train.lengths, batch_size=cfg.batch_size, rng=rng, order=order)


def fit(cfg: TrialConfig, data: EncodedData, on_eval: Callable[[Evaluation], None] | None = None,
        *, device: torch.device | str | None = None, resume: dict | None = None,
        progress: bool = False) -> FitResult:
    """Train `cfg` on `data.train`, evaluating on `data.dev` at the end of every epoch and, with
    `eval_every`, every that many optimizer steps.

    `on_eval` is called once per evaluation. `resume` is a state from `Evaluation.state()`;
    training then continues after that evaluation exactly as if never interrupted (also from the
    middle of an epoch). `progress` shows a progress bar over each epoch's batches (on stderr).
    """
    started = time.perf_counter()
    device = torch.device(device) if device is not None else default_device()
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    seed_everything(cfg.seed)
    model = build_model(cfg, vocab=data.vocab.tokens, max_seq_len=data.max_seq_len,
                        num_labels=data.num_labels, num_level1=len(data.labels.level1)).to(device)
    training_loss = TrainingLoss.from_config(cfg, class_counts=data.class_counts,
                                             level1_of=data.labels.level1_of).to(device)
    adversary = ADVERSARIAL.get_class(cfg.adversarial, field="adversarial").from_config(cfg, model=model)
    optimizer = torch.optim.AdamW(param_groups(model, cfg), lr=cfg.lr)
    micro_per_epoch = math.ceil(len(data.train) / cfg.batch_size)
    steps_per_epoch = math.ceil(micro_per_epoch / cfg.grad_accum)
    total_steps = steps_per_epoch * cfg.max_epochs
    scheduler = SCHEDULES[cfg.schedule](optimizer, num_warmup_steps=int(cfg.warmup_ratio * total_steps),
                                        num_training_steps=total_steps)
    swa = AveragedModel(model) if cfg.swa_start > 0 else None
    level1_of = data.labels.level1_of
    history: list[Evaluation] = []
    step, best_score, best_epoch, since_best = 0, -math.inf, 0.0, 0
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        if swa is not None and resume.get("swa") is not None:
            swa.load_state_dict(resume["swa"])
        torch.set_rng_state(resume["torch_rng"])
        step, best_score, best_epoch = resume["step"], resume["best_score"], resume["best_epoch"]
        since_best = resume["since_best"]

    def forward_loss(ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with _autocast(device):
            out = model(ids, mask)
        return training_loss(out, labels, model.class_embeddings) / cfg.grad_accum

    def run_evaluation(train_loss: float, samples_per_s: float) -> Evaluation:
        nonlocal best_score, best_epoch, since_best
        epoch = step / steps_per_epoch
        epoch = int(epoch) if epoch == int(epoch) else round(epoch, 4)
        if swa is not None and epoch >= cfg.swa_start:
            swa.update_parameters(model)
        scored = swa.module if swa is not None and swa.n_averaged.item() > 0 else model
        scores = evaluate(scored, data.dev, level1_of=level1_of, batch_size=2 * cfg.batch_size, device=device)
        model.train()
        is_best = scores[M.LEVEL2_MACRO_F1] > best_score
        if is_best:
            best_score, best_epoch, since_best = scores[M.LEVEL2_MACRO_F1], epoch, 0
        else:
            since_best += 1
        is_last = step >= total_steps or (cfg.patience > 0 and since_best >= cfg.patience)
        report = {
            M.EPOCH: epoch, M.STEP: step,
            **{key: scores[key] for key in (M.LEVEL2_MACRO_F1, M.LEVEL1_MACRO_F1, M.ACCURACY, M.DEV_LOSS,
                                            M.WORST5_F1)},
            "train_loss": train_loss, "train_samples_per_s": samples_per_s,
            M.BEST_LEVEL2_MACRO_F1: best_score, M.BEST_EPOCH: best_epoch, M.FINISHED: is_last,
        }
        state_at = (step, best_score, best_epoch, since_best)

        def snapshot() -> dict:
            # Deep copies: state_dict() tensors alias the live parameters, which train on.
            return copy.deepcopy({
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "torch_rng": torch.get_rng_state(),
                "swa": swa.state_dict() if swa is not None else None, "epoch": epoch, "step": state_at[0],
                "best_score": state_at[1], "best_epoch": state_at[2], "since_best": state_at[3]})

        evaluation = Evaluation(epoch=epoch, metrics=report, per_class_f1=scores["per_class_f1"],
                                is_best=is_best, is_last=is_last, state=snapshot)
        history.append(evaluation)
        if on_eval is not None:
            on_eval(evaluation)
        return evaluation

    finished = step >= total_steps
    while not finished:
        epoch_index = step // steps_per_epoch + 1  # 1-based epoch holding the next step
        groups = epoch_batches(cfg, data, epoch_index)
        attack_draws = np.random.default_rng([cfg.seed, epoch_index, 1]).random(len(groups))
        first = (step % steps_per_epoch) * cfg.grad_accum  # micro-batches of this epoch already done
        model.train()
        optimizer.zero_grad(set_to_none=True)
        loss_sum, seen, clock = 0.0, 0, time.perf_counter()
        bar = tqdm(zip(range(first, len(groups)), batches(data.train, groups[first:], device), strict=True),
                   total=len(groups) - first, desc=f"epoch {epoch_index}", unit="batch", leave=False,
                   disable=not progress)
        for micro, (ids, mask, labels) in bar:
            loss = forward_loss(ids, mask, labels)
            loss.backward()
            if adversary is not None and attack_draws[micro] < cfg.adv_rate:
                adversary.attack(lambda ids=ids, mask=mask, labels=labels: forward_loss(ids, mask, labels))
            loss_sum += loss.item() * cfg.grad_accum * len(labels)
            seen += len(labels)
            if (micro + 1) % cfg.grad_accum and micro + 1 < len(groups):
                continue
            if cfg.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            at_epoch_end = step % steps_per_epoch == 0
            if at_epoch_end or (cfg.eval_every and step % cfg.eval_every == 0):
                speed = seen / max(time.perf_counter() - clock, 1e-9)
                if run_evaluation(loss_sum / max(seen, 1), speed).is_last:
                    finished = True
                    break
                loss_sum, seen, clock = 0.0, 0, time.perf_counter()
            if at_epoch_end:
                break

    best = max(history, key=lambda e: (e.metrics[M.LEVEL2_MACRO_F1], -e.epoch)) if history else None
    return FitResult(best=best, history=history, seconds=time.perf_counter() - started)
