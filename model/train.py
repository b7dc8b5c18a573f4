"""The training loop every trial runs: `fit(cfg, data, on_eval)`.

An evaluation on the held-out fold at the end of every epoch, and every `eval_every` optimizer
steps when set. A trial's score is its best evaluation (as the competition solutions kept their
best checkpoint), and `on_eval` sees every evaluation together with a way to snapshot the full
training state (a `TrainState`), so a caller can checkpoint and later `resume`. Deterministic on
CPU for a given config and data; a resumed run continues bit for bit as if never interrupted.
"""

from __future__ import annotations

import copy
import math
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch.optim.lr_scheduler import LRScheduler
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import WeightedRandomSampler
from tqdm.auto import tqdm
from transformers import get_scheduler

from model import metrics as M
from model.adversarial import ADVERSARIAL
from model.config import TrialConfig
from model.data import EncodedData, EncodedSplit
from model.errors import ConfigError
from model.inference import autocast, batches, logits
from model.network import Classifier, build_model
from model.training_loss import TrainingLoss

# `schedule` names -> transformers' scheduler names. Its "constant" has no warmup; ours warms up
# for `warmup_ratio` of the steps like the other two.
SCHEDULER_NAMES = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}


@dataclass(frozen=True)
class Evaluation:
    """One evaluation on the dev fold."""

    epoch: float  # epochs trained: an integer at the end of an epoch, fractional with eval_every
    metrics: dict[str, Any]  # scalars under the keys of model.metrics, ready for tune.report
    per_class_f1: list[float]  # (num_labels,) level-2 F1 per label
    is_best: bool  # best level-2 macro-F1 so far
    is_last: bool  # fit ends after this one (budget spent or patience exhausted)
    # The full training state (`TrainState.to_dict()`) for `fit(resume=...)`. Call it inside
    # on_eval: it copies the live model and optimizer, which train on after on_eval returns.
    snapshot: Callable[[], dict] = field(repr=False, compare=False)
    # (N_dev, num_labels) float32 level-2 probabilities of the evaluated weights, in dev row order.
    dev_probabilities: np.ndarray = field(repr=False, compare=False)
    # The evaluated weights (the SWA average where it is scored, else the live model): a copy of
    # their state_dict on the CPU, loadable into `build_model(cfg, ...)`. Call it inside on_eval, like
    # snapshot. On the CPU so a caller that keeps the best weights (a confirm job) holds no second
    # copy of the model in GPU memory, which trials sharing the GPU need.
    scored_weights: Callable[[], dict] = field(repr=False, compare=False)


@dataclass(frozen=True)
class FitResult:
    best: Evaluation | None  # None only when `resume` was a state after the last evaluation
    history: list[Evaluation]
    seconds: float


def fit(cfg: TrialConfig, data: EncodedData, on_eval: Callable[[Evaluation], None] | None = None,
        *, device: torch.device | str | None = None, resume: dict | None = None,
        progress: bool = False) -> FitResult:
    """Train `cfg` on `data.train`, evaluating on `data.dev` at the end of every epoch and, with
    `eval_every`, every that many optimizer steps.

    `on_eval` is called once per evaluation. `resume` is a dict from `Evaluation.snapshot()`;
    training then continues after that evaluation exactly as if never interrupted (also from the
    middle of an epoch). `progress` shows a progress bar over each epoch's batches (on stderr).
    """
    started = time.perf_counter()
    device = prepare_device(device)
    seed_everything(cfg.seed)
    plan = StepPlan.of(cfg, train_rows=len(data.train))
    parts = build_parts(cfg, data, device=device, total_steps=plan.total_steps)
    start, best = 0, Best()
    if resume is not None:
        state = TrainState.from_dict(resume)
        state.restore(parts)
        start, best = state.step, state.best

    history: list[Evaluation] = []
    meter = TrainMeter()
    for step in train_steps(cfg, data, parts, plan, start=start, meter=meter, progress=progress):
        if not plan.evaluates_after(step):
            continue
        evaluation, best = run_evaluation(cfg, data, parts, plan, step=step, best=best, meter=meter)
        history.append(evaluation)
        if on_eval is not None:
            on_eval(evaluation)
        if evaluation.is_last:
            break
        meter.reset()

    best_evaluation = max(history, key=lambda e: (e.metrics[M.LEVEL2_MACRO_F1], -e.epoch)) if history else None
    return FitResult(best=best_evaluation, history=history, seconds=time.perf_counter() - started)


# --- the budget in optimizer steps ---


@dataclass(frozen=True)
class StepPlan:
    """How a trial's budget divides into optimizer steps, the unit of `eval_every` and of resuming."""

    steps_per_epoch: int  # the last step of an epoch may sum fewer than grad_accum batches
    total_steps: int
    grad_accum: int
    eval_every: int  # 0: evaluate at epoch ends only

    @classmethod
    def of(cls, cfg: TrialConfig, *, train_rows: int) -> StepPlan:
        steps_per_epoch = math.ceil(math.ceil(train_rows / cfg.batch_size) / cfg.grad_accum)
        return cls(steps_per_epoch=steps_per_epoch, total_steps=steps_per_epoch * cfg.max_epochs,
                   grad_accum=cfg.grad_accum, eval_every=cfg.eval_every)

    def evaluates_after(self, step: int) -> bool:
        return step % self.steps_per_epoch == 0 or (self.eval_every > 0 and step % self.eval_every == 0)

    def epochs_at(self, step: int) -> float:
        """Epochs trained after `step` steps: an int at an epoch end (reports show 2, not 2.0),
        else rounded to 4 places."""
        epochs = step / self.steps_per_epoch
        return int(epochs) if epochs == int(epochs) else round(epochs, 4)

    def first_batch(self, epoch: int, *, start: int) -> int:
        """Index of the first batch of (1-based) `epoch` to train in a run that starts at step `start`.

        Nonzero only in the epoch a resumed run starts in. Exact, because every step of an epoch
        but its last takes grad_accum batches, and a mid-epoch start comes before the last step.
        """
        return max(0, start - (epoch - 1) * self.steps_per_epoch) * self.grad_accum


@dataclass(frozen=True)
class Best:
    """The best evaluation so far, by level-2 macro-F1, and how many evaluations came after it."""

    score: float = -math.inf
    epoch: float = 0.0
    since: int = 0  # evaluations since the best one: `patience` counts these

    def after(self, score: float, *, epoch: float) -> Best:
        """The record after one more evaluation. Only a higher score is a new best (on a tie the
        earlier evaluation stays best), and exactly then `since` is 0."""
        return Best(score=score, epoch=epoch, since=0) if score > self.score else replace(self, since=self.since + 1)


# --- what one fit trains with ---


class Attack(Protocol):
    """An `ADVERSARIAL` method (model/adversarial.py states the contract)."""

    def attack(self, loss_fn: Callable[[], torch.Tensor]) -> torch.Tensor | None: ...


@dataclass(frozen=True)
class Parts:
    """The objects one `fit` call trains with, from `build_parts`; `TrainState` snapshots them."""

    model: Classifier
    loss: TrainingLoss
    adversary: Attack | None  # None: `adversarial` is none
    optimizer: torch.optim.Optimizer
    scheduler: LRScheduler  # stepped once per optimizer step
    swa: AveragedModel | None  # None: SWA off (`swa_start` 0)
    device: torch.device


def build_parts(cfg: TrialConfig, data: EncodedData, *, device: torch.device, total_steps: int) -> Parts:
    """Model, training loss, adversary, AdamW and its learning-rate schedule, SWA average.

    Call right after `seed_everything`, and keep the order: building the model draws its initial
    weights from the global RNG, so building anything that draws before it changes every result.
    """
    model = build_model(cfg, vocab=data.vocab.tokens, max_seq_len=data.max_seq_len,
                        num_labels=data.num_labels, num_level1=len(data.labels.level1)).to(device)
    loss = TrainingLoss.from_config(cfg, class_counts=data.class_counts, level1_of=data.labels.level1_of).to(device)
    adversary = ADVERSARIAL.get_class(cfg.adversarial, field="adversarial").from_config(cfg, model=model)
    optimizer = torch.optim.AdamW(param_groups(model, cfg), lr=cfg.lr)
    scheduler = get_scheduler(SCHEDULER_NAMES[cfg.schedule], optimizer,
                              num_warmup_steps=int(cfg.warmup_ratio * total_steps), num_training_steps=total_steps)
    swa = AveragedModel(model) if cfg.swa_start > 0 else None
    return Parts(model=model, loss=loss, adversary=adversary, optimizer=optimizer, scheduler=scheduler, swa=swa,
                 device=device)


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


# --- the checkpoint ---


def cpu_copy(value: Any) -> Any:
    """A copy of a nest of state_dicts (dicts, lists, tuples) with every tensor on the CPU.

    A snapshot is held while training goes on (until the caller has saved it): on the CPU it takes
    none of the GPU memory that the trials sharing the GPU need, and it loads on any machine.
    `load_state_dict` moves the tensors back to their module's or parameter's device.
    """
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):  # a module's state_dict is an OrderedDict with `_metadata` (versions)
        copied = OrderedDict((key, cpu_copy(item)) for key, item in value.items())
        if hasattr(value, "_metadata"):
            copied._metadata = copy.deepcopy(value._metadata)
        return copied if isinstance(value, OrderedDict) else dict(copied)
    if type(value) in (list, tuple):
        return type(value)(cpu_copy(item) for item in value)
    return copy.deepcopy(value)


@dataclass(frozen=True)
class TrainState:
    """Everything `fit` needs to go on exactly as if never interrupted: the one thing a checkpoint holds.

    `to_dict` gives only tensors, numbers, None, dicts and lists, so `torch.load(weights_only=True)`
    reads it back; its keys are the checkpoint format. `from_dict` ignores keys it does not know (a
    caller may store its own beside them) and reads checkpoints from before `cuda_rng` existed.
    """

    model: dict[str, torch.Tensor]  # state_dict()s, copied to the CPU: the live tensors train on
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    swa: dict[str, Any] | None  # None: SWA off
    torch_rng: torch.Tensor  # the CPU generator: dropout on CPU
    cuda_rng: list[torch.Tensor]  # one generator per CUDA device: dropout on a GPU; [] without CUDA
    epoch: float  # epochs trained, for readers of a checkpoint; `step` is what resuming uses
    step: int  # optimizer steps taken
    best: Best

    @classmethod
    def capture(cls, parts: Parts, *, step: int, epoch: float, best: Best) -> TrainState:
        model, optimizer, scheduler, swa = cpu_copy((
            parts.model.state_dict(), parts.optimizer.state_dict(), parts.scheduler.state_dict(),
            parts.swa.state_dict() if parts.swa is not None else None))
        cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
        return cls(model=model, optimizer=optimizer, scheduler=scheduler, swa=swa, torch_rng=torch.get_rng_state(),
                   cuda_rng=cuda_rng, epoch=epoch, step=step, best=best)

    def restore(self, parts: Parts) -> None:
        """Load this state into freshly built `parts` and the global random generators."""
        parts.model.load_state_dict(self.model)
        # A copy: load_state_dict keeps the moment tensors that already sit on the right device,
        # and training would update them in place, changing this state under its owner.
        parts.optimizer.load_state_dict(copy.deepcopy(self.optimizer))
        parts.scheduler.load_state_dict(self.scheduler)
        if parts.swa is not None and self.swa is not None:
            parts.swa.load_state_dict(self.swa)
        torch.set_rng_state(self.torch_rng)
        if self.cuda_rng and torch.cuda.is_available():
            # As many devices as this process sees: a resume on fewer GPUs than the checkpoint's
            # process saw still runs (exact on the devices both saw).
            torch.cuda.set_rng_state_all(self.cuda_rng[:torch.cuda.device_count()])

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "optimizer": self.optimizer, "scheduler": self.scheduler, "swa": self.swa,
                "torch_rng": self.torch_rng, "cuda_rng": self.cuda_rng, "epoch": self.epoch, "step": self.step,
                "best_score": self.best.score, "best_epoch": self.best.epoch, "since_best": self.best.since}

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> TrainState:
        required = ("model", "optimizer", "scheduler", "torch_rng", "epoch", "step", "best_score", "best_epoch",
                    "since_best")
        missing = [key for key in required if key not in state]
        if missing:
            raise ValueError(f"resume state lacks {missing}: pass the dict that Evaluation.snapshot() returned "
                             "(or a checkpoint saved from one)")
        return cls(model=state["model"], optimizer=state["optimizer"], scheduler=state["scheduler"],
                   swa=state.get("swa"), torch_rng=state["torch_rng"], cuda_rng=list(state.get("cuda_rng", [])),
                   epoch=state["epoch"], step=state["step"],
                   best=Best(score=state["best_score"], epoch=state["best_epoch"], since=state["since_best"]))


def scored_weights(state: dict) -> dict:
    """The weights a checkpointed evaluation scored: the SWA average once it holds any (as
    model.train.score does), else the live model."""
    swa = state.get("swa")
    if swa is not None and int(swa["n_averaged"]) > 0:
        return {k.removeprefix("module."): v for k, v in swa.items() if k.startswith("module.")}
    return state["model"]


# --- training steps ---


def train_steps(cfg: TrialConfig, data: EncodedData, parts: Parts, plan: StepPlan, *, start: int,
                meter: TrainMeter, progress: bool) -> Iterator[int]:
    """Train from optimizer step `start` to the end of the budget, yielding the step count after
    each optimizer step; the caller may evaluate and checkpoint at a yield, or stop.

    The batches and attack draws of an epoch depend on (seed, epoch) only, so a run started at
    `start` from a checkpoint trains on exactly what an uninterrupted run would. `meter` restarts
    at each epoch and collects every batch's training loss.
    """
    step = start
    for epoch in range(start // plan.steps_per_epoch + 1, cfg.max_epochs + 1):
        groups = epoch_batches(cfg, data, epoch)
        attack_draws = np.random.default_rng([cfg.seed, epoch, 1]).random(len(groups))  # (batches,) in [0, 1)
        first = plan.first_batch(epoch, start=start)
        frozen = embeddings_frozen(cfg, epoch)
        parts.model.train()
        parts.optimizer.zero_grad(set_to_none=True)
        meter.reset()
        batch_stream = batches(data.train, groups[first:], parts.device, truncation=parts.model.truncation)
        bar = tqdm(zip(range(first, len(groups)), batch_stream, strict=True), total=len(groups) - first,
                   desc=f"epoch {epoch}", unit="batch", leave=False, disable=not progress)
        for index, batch in bar:
            loss = train_batch(parts, batch, grad_accum=cfg.grad_accum, attack=attack_draws[index] < cfg.adv_rate)
            meter.add(loss.item() * cfg.grad_accum, rows=len(batch[2]))
            if (index + 1) % cfg.grad_accum and index + 1 < len(groups):
                continue  # accumulate: the epoch's last batch always ends a step
            optimizer_step(parts.model, parts.optimizer, parts.scheduler, max_grad_norm=cfg.max_grad_norm,
                           frozen=parts.model.encoder.word_embeddings.weight if frozen else None)
            step += 1
            yield step


def embeddings_frozen(cfg: TrialConfig, epoch: int) -> bool:
    """Whether the word embeddings stay as they are in (1-based) `epoch`: the first
    `freeze_embeddings` epochs. A function of the epoch alone, so a run resumed from a snapshot
    (also mid-epoch) freezes exactly where an uninterrupted one does."""
    return epoch <= cfg.freeze_embeddings


def train_batch(parts: Parts, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor], *, grad_accum: int,
                attack: bool) -> torch.Tensor:
    """Forward and backward one batch, and the adversary's pass when `attack`. Returns the loss as
    backpropagated: divided by `grad_accum`, so that the gradients of a step average its batches."""
    ids, mask, labels = batch  # (B, L), (B, L), (B,)

    def loss_fn() -> torch.Tensor:
        with autocast(parts.device):
            out = parts.model(ids, mask)
        return parts.loss(out, labels, parts.model.class_embeddings) / grad_accum

    loss = loss_fn()
    loss.backward()
    if attack and parts.adversary is not None:
        parts.adversary.attack(loss_fn)
    return loss


def optimizer_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: LRScheduler, *,
                   max_grad_norm: float, frozen: torch.nn.Parameter | None = None) -> None:
    """One optimizer step, of fine-tuning (`train_steps`) and of MLM pretraining (model/pretrain/):
    clip (`max_grad_norm` > 0), step the optimizer and its schedule, clear the accumulated gradients.

    `frozen`: a parameter (the word embeddings while `freeze_embeddings` lasts) whose gradient is
    dropped before clipping and stepping, so AdamW leaves it exactly as it is (it skips a parameter
    without a gradient: no update, no weight decay, no moment) and it takes no share of the clipping
    norm. The gradient is still computed during the backward pass: adversarial training (FGM, PGD)
    needs it for its direction, so an attack perturbs frozen embeddings as it does trained ones.
    """
    if frozen is not None:
        frozen.grad = None
    if max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)


class TrainMeter:
    """Mean training loss and rows per second over the batches since the last `reset`."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.loss_sum, self.rows, self.started = 0.0, 0, time.perf_counter()

    def add(self, loss: float, *, rows: int) -> None:
        """`loss`: the mean loss over the batch's `rows` rows."""
        self.loss_sum += loss * rows
        self.rows += rows

    def read(self) -> tuple[float, float]:
        """(mean training loss per row, rows per second), 0 loss before any batch."""
        return self.loss_sum / max(self.rows, 1), self.rows / max(time.perf_counter() - self.started, 1e-9)


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


# --- evaluation ---


def run_evaluation(cfg: TrialConfig, data: EncodedData, parts: Parts, plan: StepPlan, *, step: int, best: Best,
                   meter: TrainMeter) -> tuple[Evaluation, Best]:
    """Evaluate after optimizer step `step`: the `Evaluation` to report, and the best record after it."""
    train_loss, samples_per_s = meter.read()  # before evaluating: only training time counts
    epoch = plan.epochs_at(step)
    scores, dev_logits, scored = score(cfg, data, parts, epoch=epoch)
    best = best.after(scores[M.LEVEL2_MACRO_F1], epoch=epoch)
    is_last = step >= plan.total_steps or (cfg.patience > 0 and best.since >= cfg.patience)
    report = {
        M.EPOCH: epoch, M.STEP: step,
        **{key: scores[key] for key in (M.LEVEL2_MACRO_F1, M.LEVEL1_MACRO_F1, M.ACCURACY, M.DEV_LOSS, M.WORST5_F1)},
        M.TRAIN_LOSS: train_loss, M.TRAIN_SAMPLES_PER_S: samples_per_s,
        M.BEST_LEVEL2_MACRO_F1: best.score, M.BEST_EPOCH: best.epoch, M.FINISHED: is_last,
    }

    def snapshot() -> dict:
        return TrainState.capture(parts, step=step, epoch=epoch, best=best).to_dict()

    def scored_weights() -> dict:
        return cpu_copy(scored.state_dict())

    evaluation = Evaluation(epoch=epoch, metrics=report, per_class_f1=scores[M.PER_CLASS_F1],
                            is_best=best.since == 0, is_last=is_last, snapshot=snapshot,
                            dev_probabilities=torch.softmax(dev_logits, dim=-1).numpy(),
                            scored_weights=scored_weights)
    return evaluation, best


def score(cfg: TrialConfig, data: EncodedData, parts: Parts, *, epoch: float
          ) -> tuple[dict[str, Any], torch.Tensor, Classifier]:
    """Metrics and dev logits at `epoch` of the weights a trial reports, and that model: the SWA
    average once it holds any (the live weights join it from `swa_start` on, at every evaluation),
    else the live model."""
    if parts.swa is not None and epoch >= cfg.swa_start:
        parts.swa.update_parameters(parts.model)
    scored = parts.swa.module if parts.swa is not None and parts.swa.n_averaged.item() > 0 else parts.model
    scores, dev_logits = evaluate(scored, data.dev, level1_of=data.labels.level1_of,
                                  batch_size=2 * cfg.batch_size, device=parts.device)
    parts.model.train()  # evaluate() put it in eval mode (when scored), and training goes on
    return scores, dev_logits, scored


@torch.no_grad()
def evaluate(model: Classifier, split: EncodedSplit, *, level1_of: np.ndarray, batch_size: int,
             device: torch.device) -> tuple[dict[str, Any], torch.Tensor]:
    """Metrics of `model` on `split`, and its (N, num_labels) level-2 logits. `dev_loss` is plain
    cross-entropy whatever the training loss, so it compares across trials."""
    out = logits(model, split, batch_size=batch_size, device=device)
    labels = torch.tensor(split.labels)  # a copy: arrays from Ray's object store are read-only
    # Summed per batch of `logits`' order, as the loss of one batch at a time always was.
    order = np.argsort(split.lengths, kind="stable")
    loss_sum = sum(F.cross_entropy(out[idx], labels[idx], reduction="sum").item()
                   for idx in map(torch.from_numpy, np.split(order, range(batch_size, len(order), batch_size))))
    scores = M.classification_metrics(split.labels, out.argmax(-1).numpy(), level1_of=level1_of)
    scores[M.DEV_LOSS] = loss_sum / len(split)
    return scores, out


# --- device and randomness ---


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def prepare_device(device: torch.device | str | None) -> torch.device:
    """`device` (a user's --device), default CUDA when available; on CUDA, TF32 matmuls (bf16
    autocast does the rest). A CUDA device this process cannot see is a ConfigError."""
    try:
        device = torch.device(device) if device is not None else default_device()
    except RuntimeError:
        raise ConfigError(f"--device {device} is not a device: pass cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}, but this machine has no CUDA device torch can use (torch "
                          f"{torch.__version__}): pass --device cpu, or leave --device out")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ConfigError(f"--device {device}, but torch sees {torch.cuda.device_count()} CUDA device(s): "
                          f"pass one of cuda:0..cuda:{torch.cuda.device_count() - 1}")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
