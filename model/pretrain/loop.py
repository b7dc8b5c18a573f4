"""The pretraining loop: `run_loop` on one worker (data parallel when the caller wraps the model),
`pretrain` in this process.

Exact resume: the data order is a function of (seed, epoch) and a batch's masks of (seed, epoch,
batch), so a run continued from a checkpoint (model, optimizer, scheduler, RNG states, step, the
unfinished loss-curve window) sees the same batches and, on CPU, ends with the same weights bit
for bit as a run never interrupted.

Data parallel: `--batch-size` is the global batch: every worker masks the same global batch and
trains on every `world`-th row of it (DistributedSampler's interleaved assignment), with the loss
normalised by the global count of masked tokens, so the optimisation (steps, schedule, masks) is
the same for any number of workers. The caller wraps the model (DDP) and stores checkpoints
(`CheckpointStore`); search/pretrain_distributed.py does that with Ray Train.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from model.errors import ConfigError
from model.filemode import as_if_opened
from model.inference import autocast
from model.masking import IGNORE_INDEX, mask_spans
from model.pretrain.checkpoints import CheckpointStore, open_output
from model.pretrain.config import RECORD_FILE, PretrainConfig, check_fingerprint, fingerprint
from model.pretrain.data import PretrainData, prepare_corpus
from model.pretrain.mlm import MaskedLM, build_mlm
from model.provenance import git_revision, versions
from model.threads import use_threads
from model.train import bucketed_batches, optimizer_step, prepare_device


def steps_per_epoch(cfg: PretrainConfig, rows: int) -> int:
    """Optimizer steps per epoch: full batches (the N mod batch_size rows left over are different
    ones each epoch) grouped by grad_accum."""
    steps = rows // cfg.batch_size // cfg.grad_accum
    if steps < 1:
        raise ConfigError(f"the corpus has {rows} documents, fewer than one step's --batch-size {cfg.batch_size} x "
                          f"--grad-accum {cfg.grad_accum}; lower them or add documents")
    return steps


def total_steps(cfg: PretrainConfig, per_epoch: int) -> int | None:
    """The run's steps; None under a time budget (it stops when the time is spent)."""
    if cfg.steps is not None:
        return cfg.steps
    if cfg.epochs is not None:
        return max(1, round(cfg.epochs * per_epoch))
    return None


def epoch_batches(lengths: np.ndarray, cfg: PretrainConfig, epoch: int) -> list[np.ndarray]:
    """The global batches (row indices) of 0-based `epoch`: a function of (seed, epoch) only.
    Every batch holds exactly batch_size rows of similar length."""
    rng = np.random.default_rng([cfg.seed, epoch])
    order = rng.permutation(len(lengths))
    order = order[: len(order) - len(order) % cfg.batch_size]
    return bucketed_batches(lengths, batch_size=cfg.batch_size, rng=rng, order=order)


@dataclass(frozen=True)
class Batch:
    ids: torch.Tensor  # (b, L) this worker's rows, masked
    mask: torch.Tensor  # (b, L) bool, True at real tokens
    labels: torch.Tensor  # (b, L) IGNORE_INDEX except at masked positions
    global_masked: int  # masked positions in the whole global batch (all workers)
    tokens: int  # real tokens in this worker's rows


def make_batch(data: PretrainData, rows: np.ndarray, cfg: PretrainConfig, *, epoch: int, micro: int,
               rank: int = 0, world: int = 1) -> Batch:
    """Mask global batch `micro` of `epoch` (masks seeded by (seed, epoch, micro)) and keep this
    worker's rows: every `world`-th from `rank`."""
    width = int(data.lengths[rows].max())
    masked = mask_spans(data.ids[rows, :width], rng=np.random.default_rng([cfg.seed, epoch, micro]),
                        mask_id=data.mask_id, vocab_size=len(data.vocab), special_ids=data.special_ids,
                        mask_prob=cfg.mask_prob, ngram_max=cfg.ngram_max)
    mine = np.arange(len(rows))[rank::world]
    lengths = data.lengths[rows][mine]
    return Batch(ids=torch.from_numpy(masked.inputs[mine]),
                 mask=torch.arange(width)[None, :] < torch.from_numpy(lengths)[:, None].long(),
                 labels=torch.from_numpy(masked.labels[mine]),
                 global_masked=int((masked.labels != IGNORE_INDEX).sum()), tokens=int(lengths.sum()))


def build_optimizer(model: nn.Module, cfg: PretrainConfig) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases and normalisation weights (1-d tensors), as BERT."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.999), eps=1e-6)


def warmup_steps(cfg: PretrainConfig, per_epoch: int) -> int:
    if cfg.warmup_steps is not None:
        return cfg.warmup_steps
    total = total_steps(cfg, per_epoch)
    return round(cfg.warmup_ratio * (total if total is not None else per_epoch))


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: PretrainConfig, per_epoch: int):
    """Linear warmup, then linear decay to 0 at the last step; under a time budget (no known last
    step) the rate stays constant after warmup, and --warmup-ratio is a fraction of one epoch."""
    from transformers import get_constant_schedule_with_warmup, get_linear_schedule_with_warmup

    warmup, total = warmup_steps(cfg, per_epoch), total_steps(cfg, per_epoch)
    if total is None:
        return get_constant_schedule_with_warmup(optimizer, num_warmup_steps=warmup)
    return get_linear_schedule_with_warmup(optimizer, num_warmup_steps=warmup, num_training_steps=total)


def _gather(value: Any, world: int) -> list[Any]:
    """`value` of every worker (rank order); just [value] without a process group."""
    import torch.distributed as dist

    if world == 1 or not (dist.is_available() and dist.is_initialized()):
        return [value]
    out: list[Any] = [None] * world
    dist.all_gather_object(out, value)
    return out


def _all_sum(values: list[float], world: int, device: torch.device) -> list[float]:
    """`values` summed over the workers. The tensor lives on the workers' training device: NCCL,
    the process group Ray Train starts for GPU workers, reduces CUDA tensors only."""
    import torch.distributed as dist

    if world == 1 or not (dist.is_available() and dist.is_initialized()):
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def _worker_seed(seed: int, rank: int) -> int:
    return int(np.random.SeedSequence([seed, rank, 7]).generate_state(1)[0])


@dataclass
class Progress:
    """Where a run stands; all of it goes into a checkpoint."""

    step: int = 0
    curve: list[dict] = field(default_factory=list)  # {step, loss, masked_acc} per log window
    window: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])  # loss sum, correct, masked (all workers)
    tokens: float = 0.0  # real tokens trained on (all workers)
    seconds: float = 0.0  # training time
    starts: list[int] = field(default_factory=list)  # the step each session of the run started from


@dataclass(frozen=True)
class Summary:
    steps: int
    curve: list[dict]
    seconds: float
    tokens_per_s: float
    finished: bool
    record: dict  # what pretrain.json holds

    @classmethod
    def from_record(cls, record: dict) -> Summary:
        return cls(steps=record["steps"], curve=record["loss_curve"], seconds=record["wall_time_s"],
                   tokens_per_s=record["tokens_per_s"] or 0.0, finished=record["finished"], record=record)


def run_loop(data: PretrainData, cfg: PretrainConfig, store: CheckpointStore, *, device: torch.device,
             rank: int = 0, world: int = 1, wrap: Callable[[nn.Module], nn.Module] = lambda m: m,
             save_every: int = 0, progress: bool = False, on_step: Callable[[int], None] | None = None,
             run_info: dict | None = None) -> Summary:
    """Pretrain on this worker until the budget is spent, continuing from `store.load()` if it has a
    checkpoint; save every `save_every` steps (0: only at the end) and at the end.

    `wrap` turns the model (already on `device`) into what trains: itself, or a DDP wrapper;
    `on_step(step)` runs after each optimizer step and its save; `run_info` goes into pretrain.json.
    """
    from tqdm.auto import tqdm

    if cfg.batch_size < world:
        raise ConfigError(f"--batch-size {cfg.batch_size} is smaller than the {world} workers; each needs a row")
    loop = _Loop.start(data, cfg, store, device=device, rank=rank, world=world, wrap=wrap, run_info=run_info)
    if loop.finished():  # a finished run started again: nothing to train
        return loop.summary()

    loop.run.starts.append(loop.run.step)
    bar = tqdm(total=loop.total, initial=loop.run.step, unit="step", desc=f"pretrain {cfg.arch}",
               disable=not progress or rank != 0, dynamic_ncols=True)
    _train(loop, bar, save_every=save_every, on_step=on_step)
    bar.close()
    return loop.summary()


@dataclass
class _Loop:
    """The parts of one worker's pretraining loop and where it stands (`run`)."""

    data: PretrainData
    cfg: PretrainConfig
    store: CheckpointStore
    raw: MaskedLM  # the model itself: what is saved and clipped
    model: nn.Module  # what trains: `raw` or its DDP wrapper
    optimizer: torch.optim.Optimizer
    scheduler: Any
    device: torch.device
    rank: int
    world: int
    run: Progress
    per_epoch: int
    total: int | None
    current: dict  # this run's fingerprint
    info: dict  # run_info, for pretrain.json

    @classmethod
    def start(cls, data: PretrainData, cfg: PretrainConfig, store: CheckpointStore, *, device: torch.device,
              rank: int, world: int, wrap: Callable[[nn.Module], nn.Module], run_info: dict | None) -> _Loop:
        """Build the model, optimizer and scheduler, and continue from the store's checkpoint if any."""
        per_epoch = steps_per_epoch(cfg, len(data))
        total = total_steps(cfg, per_epoch)
        current = fingerprint(cfg, data.files)
        torch.manual_seed(cfg.seed)  # the same initial weights on every worker and in every run
        raw = build_mlm(cfg, vocab_size=len(data.vocab)).to(device)
        optimizer = build_optimizer(raw, cfg)
        scheduler = build_scheduler(optimizer, cfg, per_epoch)
        run = _restore(store.load(), cfg, current, raw, optimizer, scheduler, device=device, rank=rank)
        model = wrap(raw)
        model.train()
        return cls(data=data, cfg=cfg, store=store, raw=raw, model=model, optimizer=optimizer, scheduler=scheduler,
                   device=device, rank=rank, world=world, run=run, per_epoch=per_epoch, total=total,
                   current=current, info=dict(run_info or {}))

    def snapshot(self) -> dict | None:
        """The full state (rank 0; every worker must call it: the RNG states are gathered)."""
        cuda = self.device.type == "cuda"
        torch_states = _gather(torch.get_rng_state(), self.world)
        cuda_states = _gather(torch.cuda.get_rng_state(self.device) if cuda else None, self.world)
        if self.rank != 0:
            return None
        return {"model": self.raw.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "progress": asdict(self.run), "fingerprint": self.current,
                "rng": {"python": random.getstate(), "numpy": numpy_rng_state(), "torch": torch_states,
                        "cuda": cuda_states if cuda else None}}

    def record(self, finished: bool) -> dict:
        """What pretrain.json holds."""
        run, cfg, data = self.run, self.cfg, self.data
        return {
            "format": 1, "arch": cfg.arch, "finished": finished, "steps": run.step,
            "epochs": round(run.step / self.per_epoch, 4), "steps_per_epoch": self.per_epoch,
            "total_steps": self.total, "started_at_steps": run.starts,
            "loss_curve": run.curve, "wall_time_s": round(run.seconds, 2),
            "tokens_per_s": round(run.tokens / run.seconds, 1) if run.seconds > 0 else None,
            "tokens_seen": int(run.tokens), "vocab_size": len(data.vocab), "documents": len(data),
            "corpus": data.files, "flags": cfg.to_dict(), "workers": self.world, "device": self.device.type,
            "versions": versions(("torch", "transformers", "numpy", "ray")), "git_revision": git_revision(),
            **self.info,
        }

    def save(self, finished: bool) -> None:
        """A checkpoint (every worker calls it); rank 0 also exports the model directory."""
        state = self.snapshot()
        run = self.run

        def export(directory: Path) -> None:
            self.raw.save(directory)
            for written in directory.iterdir():  # safetensors writes model.safetensors 0600
                as_if_opened(written)
            (directory / "vocab.txt").write_text("\n".join(self.data.vocab.tokens) + "\n", encoding="utf-8")
            (directory / RECORD_FILE).write_text(json.dumps(self.record(finished), indent=1), encoding="utf-8")

        last = run.curve[-1] if run.curve else {}
        metrics = {"step": run.step, "loss": last.get("loss", math.nan), "masked_acc": last.get("masked_acc", math.nan),
                   "tokens_per_s": run.tokens / run.seconds if run.seconds > 0 else 0.0}
        self.store.save(step=run.step, state=state, export=export if self.rank == 0 else None, metrics=metrics)

    def finished(self) -> bool:
        if self.total is not None:
            return self.run.step >= self.total
        return self.run.seconds >= self.cfg.time_budget * 60

    def logs_now(self) -> bool:
        """Whether the step just taken ends a loss-curve window."""
        return self.run.step % self.cfg.log_every == 0 or (self.total is not None and self.run.step >= self.total)

    def summary(self) -> Summary:
        run = self.run
        return Summary(steps=run.step, curve=run.curve, seconds=run.seconds,
                       tokens_per_s=run.tokens / max(run.seconds, 1e-9), finished=True, record=self.record(True))


def numpy_rng_state() -> tuple:
    """NumPy's global RNG state with its key array as a list: a checkpoint of plain data, which
    `torch.load(weights_only=True)` reads without allowing NumPy's pickled arrays."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return kind, keys.tolist(), pos, has_gauss, cached


def _restore(state: dict | None, cfg: PretrainConfig, current: dict, raw: nn.Module,
             optimizer: torch.optim.Optimizer, scheduler: Any, *, device: torch.device, rank: int) -> Progress:
    """Load a checkpoint's model, optimizer, scheduler and RNG states (or, with none, seed this
    worker's dropout); the run's progress."""
    if state is None:
        torch.manual_seed(_worker_seed(cfg.seed, rank))  # dropout differs across workers
        return Progress()
    check_fingerprint(state["fingerprint"], current, where="the checkpoint")
    try:
        raw.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        run = Progress(**state["progress"])
        rng = state["rng"]
        random.setstate(rng["python"])
        np.random.set_state(rng["numpy"])
    except (RuntimeError, KeyError, ValueError, TypeError) as err:
        raise ConfigError(f"the checkpoint's state.pt is damaged (it does not fit the run its fingerprint names: "
                          f"{type(err).__name__}: {(str(err) or '-').splitlines()[0][:160]}); nothing was changed. "
                          "Delete the output directory (or pass a new --out) and run the same command again") from None
    if rank < len(rng["torch"]):
        torch.set_rng_state(rng["torch"][rank])
    else:
        torch.manual_seed(_worker_seed(cfg.seed + run.step, rank))
    if device.type == "cuda" and rng.get("cuda") and rank < len(rng["cuda"]):
        torch.cuda.set_rng_state(rng["cuda"][rank], device)
    return run


@dataclass
class _Pending:
    """This worker's statistics since the last log or checkpoint: loss sum, correct, masked, tokens."""

    clock: float = field(default_factory=time.perf_counter)
    local: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0, 0.0])

    def reset(self) -> None:
        self.clock, self.local = time.perf_counter(), [0.0, 0.0, 0.0, 0.0]


def _train(loop: _Loop, bar: Any, *, save_every: int, on_step: Callable[[int], None] | None) -> None:
    """The steps until the budget is spent: log windows, checkpoints and `on_step` after each step."""
    cfg, run = loop.cfg, loop.run
    pending = _Pending()
    done = False
    while not done:
        epoch = run.step // loop.per_epoch
        batches = epoch_batches(loop.data.lengths, cfg, epoch)
        first = (run.step % loop.per_epoch) * cfg.grad_accum
        for micro in range(first, loop.per_epoch * cfg.grad_accum):
            boundary = (micro + 1) % cfg.grad_accum == 0
            _micro_step(loop, pending, batches[micro], epoch=epoch, micro=micro, boundary=boundary)
            if not boundary:
                continue
            _optimizer_step(loop)
            bar.update(1)
            if loop.logs_now():
                done = _log_window(loop, pending, bar)
            if done or (save_every and run.step % save_every == 0):
                _fold_pending(run, pending.local, pending.clock, loop.rank, loop.world, loop.device)
                pending.reset()
                loop.save(finished=done)
            if on_step is not None:
                on_step(run.step)
            if done:
                break


def _micro_step(loop: _Loop, pending: _Pending, rows: np.ndarray, *, epoch: int, micro: int,
                boundary: bool) -> None:
    """Forward and backward of one micro-batch (DDP syncs gradients at a step's last one only)."""
    cfg, device, model, world = loop.cfg, loop.device, loop.model, loop.world
    batch = make_batch(loop.data, rows, cfg, epoch=epoch, micro=micro, rank=loop.rank, world=world)
    sync = contextlib.nullcontext() if boundary or not hasattr(model, "no_sync") else model.no_sync()
    with sync:
        with autocast(device):
            loss_sum, correct, count = model(batch.ids.to(device, non_blocking=True),
                                             batch.mask.to(device, non_blocking=True),
                                             batch.labels.to(device, non_blocking=True))
        # DDP averages gradients over workers: scale so the result is the global mean over masked tokens
        (loss_sum * world / max(batch.global_masked, 1) / cfg.grad_accum).backward()
    pending.local[0] += loss_sum.item()
    pending.local[1] += correct.item()
    pending.local[2] += count.item()
    pending.local[3] += batch.tokens


def _optimizer_step(loop: _Loop) -> None:
    optimizer_step(loop.raw, loop.optimizer, loop.scheduler, max_grad_norm=loop.cfg.max_grad_norm)
    loop.run.step += 1


def _log_window(loop: _Loop, pending: _Pending, bar: Any) -> bool:
    """Close a loss-curve window (summed over workers) and add its point; whether the run is done."""
    run = loop.run
    now = time.perf_counter()
    elapsed = now - pending.clock
    summed = _all_sum(pending.local + [elapsed if loop.rank == 0 else 0.0], loop.world, loop.device)
    pending.clock, pending.local = now, [0.0, 0.0, 0.0, 0.0]
    run.seconds += summed[4]
    run.tokens += summed[3]
    run.window = [a + b for a, b in zip(run.window, summed[:3], strict=True)]
    loss = run.window[0] / max(run.window[2], 1)
    acc = run.window[1] / max(run.window[2], 1)
    run.curve.append({"step": run.step, "loss": round(loss, 5), "masked_acc": round(acc, 5)})
    bar.set_postfix(loss=f"{loss:.3f}", acc=f"{acc:.3f}", tok_s=f"{summed[3] / max(summed[4], 1e-9):.0f}")
    run.window = [0.0, 0.0, 0.0]
    return loop.finished()


def _fold_pending(run: Progress, local: list[float], clock: float, rank: int, world: int,
                  device: torch.device) -> None:
    """Before a checkpoint: move the statistics since the last log into the run's (checkpointed)
    window, so a resumed run's next loss-curve point is the same as an uninterrupted run's."""
    summed = _all_sum(local + [time.perf_counter() - clock if rank == 0 else 0.0], world, device)
    run.window = [a + b for a, b in zip(run.window, summed[:3], strict=True)]
    run.tokens += summed[3]
    run.seconds += summed[4]


def memory_estimate(cfg: PretrainConfig, vocab_size: int) -> tuple[int, int]:
    """(parameters, bytes) a training step needs, roughly: fp32 weights, gradients and
    AdamW's two moments (16 bytes a parameter), and one micro-batch's activations (per layer about
    34 x tokens x hidden plus 5 x heads x tokens x length, fp32; and the MLM logits over the vocabulary)."""
    h, s, n, layers = cfg.hidden_size, cfg.max_seq_len, cfg.batch_size, cfg.num_layers
    per_layer = 4 * h * h + 2 * h * cfg.intermediate_size + 9 * h + cfg.intermediate_size
    params = vocab_size * h + s * h + layers * per_layer + h * h + vocab_size
    activations = layers * (34 * n * s * h + 5 * cfg.num_heads * n * s * s) * 4 + 2 * n * s * vocab_size * 4
    return params, 16 * params + activations


def machine_memory(device: torch.device) -> tuple[int, str]:
    """(bytes, what) of the memory training on `device` can use: the GPU's, else the machine's RAM."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory, f"{device} memory"
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "the machine's memory"


def check_memory(cfg: PretrainConfig, vocab_size: int, device: torch.device) -> None:
    """Refuse, before any work, a model and batch that cannot fit (rather than dying in the allocator)."""
    params, need = memory_estimate(cfg, vocab_size)
    have, what = machine_memory(device)
    if need > have:
        gib = 2 ** 30
        raise ConfigError(f"--hidden-size {cfg.hidden_size}, --num-layers {cfg.num_layers}, --max-seq-len "
                          f"{cfg.max_seq_len} and --batch-size {cfg.batch_size} over a vocabulary of {vocab_size} "
                          f"tokens need about {need / gib:.1f} GiB to train ({params / 1e6:.0f}M parameters), but "
                          f"{what} is {have / gib:.1f} GiB; lower them (or --batch-size with --grad-accum)")


def pretrain(cfg: PretrainConfig, corpus: Sequence[str | Path], out: str | Path, *, resume: bool = False,
             save_every: int = 500, device: str | torch.device | None = None, threads: int | None = None,
             progress: bool = False, on_step: Callable[[int], None] | None = None,
             command: Sequence[str] | None = None) -> Summary:
    """Pretrain in this process (see the module docstring); `out` ends up a checkpoint directory.

    Running it again on the same `out` continues from the last checkpoint (with `resume=True` a
    missing checkpoint is an error); a finished run returns at once."""
    out = Path(out)
    device = prepare_device(device)  # a --device this machine lacks is refused before anything is written
    data = prepare_corpus(corpus, cfg)
    check_memory(cfg, len(data.vocab), device)
    store = open_output(out, fingerprint(cfg, data.files), resume=resume)
    out.mkdir(parents=True, exist_ok=True)
    use_threads(threads)
    info = {"save_every": save_every, "threads": torch.get_num_threads(),
            "command": list(command) if command is not None else None}
    return run_loop(data, cfg, store, device=device, save_every=save_every, progress=progress, on_step=on_step,
                    run_info=info)
