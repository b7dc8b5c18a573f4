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
    first, last = (summary.curve[0], summary.curve[-1]) if summary.curve else ({}, {})
    print(f"pretrained {summary.steps} steps in {summary.seconds:.0f} s ({summary.tokens_per_s:.0f} tokens/s); "
          f"MLM loss {first.get('loss', float('nan')):.3f} -> {last.get('loss', float('nan')):.3f}, masked accuracy "
          f"{first.get('masked_acc', float('nan')):.3f} -> {last.get('masked_acc', float('nan')):.3f}")
    print(f"checkpoint: {out} (fine-tune with --set encoder={cfg.arch} --set checkpoint={out})")
    return summary
