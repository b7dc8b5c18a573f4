"""`python -m search pretrain`: masked-language-model pretraining of an encoder checkpoint.

In this process (model/pretrain/, no Ray) by default; data-parallel on a Ray cluster with Ray
Train (search/pretrain_distributed.py) when an address or a number of workers is given. Either way
`out` ends up a checkpoint directory that spaces fine-tune with `encoder: bert` (or `nezha`) and
`checkpoint: OUT`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from model.pretrain.config import PretrainConfig
from model.pretrain.loop import Summary


@dataclass(frozen=True)
class RayTrain:
    """Where and how data-parallel pretraining runs (`--address`, `--num-workers`, ...)."""

    address: str | None
    num_workers: int
    cpus_per_worker: float
    gpus_per_worker: float
    storage_path: str | None
    max_failures: int


def run_pretrain(cfg: PretrainConfig, corpus: Sequence[str], out: str | Path, *, resume: bool, save_every: int,
                 device: str | None, threads: int | None, progress: bool, command: list[str],
                 ray_train: RayTrain | None = None) -> Summary:
    """Pretrain here, or with Ray Train given `ray_train`; print what was learned and how to use it."""
    if ray_train is not None:
        from search.pretrain_distributed import pretrain_distributed

        summary = pretrain_distributed(
            cfg, corpus, out, address=ray_train.address, num_workers=ray_train.num_workers,
            cpus_per_worker=ray_train.cpus_per_worker, gpus_per_worker=ray_train.gpus_per_worker,
            storage_path=ray_train.storage_path, max_failures=ray_train.max_failures, save_every=save_every,
            threads=threads, resume=resume, command=command)
    else:
        from model.pretrain.loop import pretrain

        summary = pretrain(cfg, corpus, out, resume=resume, save_every=save_every, device=device, threads=threads,
                           progress=progress, command=command)
    for warning in learning_warnings(summary):
        print(f"warning: {warning}")
    first, last = (summary.curve[0], summary.curve[-1]) if summary.curve else ({}, {})
    print(f"pretrained {summary.steps} steps in {summary.seconds:.0f} s ({summary.tokens_per_s:.0f} tokens/s); "
          f"MLM loss {first.get('loss', float('nan')):.3f} -> {last.get('loss', float('nan')):.3f}, masked accuracy "
          f"{first.get('masked_acc', float('nan')):.3f} -> {last.get('masked_acc', float('nan')):.3f}")
    print(f"checkpoint: {out} (fine-tune with --set encoder={cfg.arch} --set checkpoint={out})")
    return summary


MIN_LOSS_DROP = 0.02  # a loss that fell by less than this share of its first value has not learned
SPECIAL_TOKENS = 5  # [PAD] [UNK] [CLS] [SEP] [MASK]


def learning_warnings(summary: Summary) -> list[str]:
    """Why the checkpoint may have learned nothing, in plain words: a vocabulary of one token, a
    corpus smaller than a batch, a loss curve of one point, or a loss that did not go down."""
    record, curve, warnings = summary.record, summary.curve, []
    vocab, documents = record.get("vocab_size"), record.get("documents")
    if vocab is not None and vocab <= SPECIAL_TOKENS + 1:
        warnings.append(f"the corpus has {vocab - SPECIAL_TOKENS} distinct token(s): there is nothing to predict "
                        "from context, so the checkpoint learns nothing; pretrain on the task's texts")
    if documents is not None and documents < record.get("flags", {}).get("batch_size", 0):
        warnings.append(f"the corpus has {documents} documents, fewer than one batch: pretraining on so little text "
                        "memorises it; add the test texts or more unlabeled text")
    if len(curve) < 2:
        warnings.append(f"{summary.steps} step(s) give {len(curve)} point(s) of the loss curve: too short to learn "
                        "anything or to tell whether it did; train longer (--steps, --epochs) or lower --log-every")
    elif curve[-1]["loss"] > curve[0]["loss"] * (1 - MIN_LOSS_DROP):
        warnings.append(f"the MLM loss did not go down ({curve[0]['loss']:.3f} -> {curve[-1]['loss']:.3f} over "
                        f"{summary.steps} steps): the checkpoint has learned next to nothing; train longer (--steps, "
                        "--epochs), on more text, or with another --lr")
    return warnings
