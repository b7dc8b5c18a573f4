"""Data-parallel pretraining on a Ray cluster: Ray Train's `TorchTrainer` runs model/pretrain.py's
`run_loop` on every worker (DDP through `ray.train.torch.prepare_model`: gloo on CPU, NCCL on GPU).

- The driver reads and encodes the corpus once and puts it in Ray's object store; workers need
  no data files.
- `--batch-size` is the global batch: every worker masks the same global batch and trains on its
  interleaved share of the rows (see model/pretrain.py), so the run computes the same steps,
  schedule and masks as a single-process run, whatever the number of workers.
- Every worker calls `ray.train.report(metrics)` at each checkpoint step; rank 0 attaches the
  checkpoint (state.pt with model, optimizer, scheduler, every worker's RNG state and the step;
  plus the exported config, weights, vocab.txt and pretrain.json), which Ray persists under
  `--storage-path` (shared by every node: NFS or a cloud URI). A failed worker group restarts from
  it (`--max-failures`); running the same command again continues from it (Ray Train restores a
  run by its name and storage path, and `ray.train.get_checkpoint()` hands the state back).
- At the end the driver copies the exported files of the last checkpoint into `--out`, the same
  kind of checkpoint directory the single-process path writes.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ray
import ray.train
import ray.train.torch
import torch

from model.errors import ConfigError
from model.pretrain.checkpoints import read_state, write_state
from model.pretrain.config import (
    EXPORT_FILES,
    RECORD_FILE,
    RUN_FILE,
    STATE_FILE,
    PretrainConfig,
    check_fingerprint,
    fingerprint,
    record_fingerprint,
    record_is_done,
)
from model.pretrain.data import PretrainData, prepare_corpus
from model.pretrain.loop import Summary, run_loop
from rundir.paths import is_uri
from search.cluster import check_shared_storage, connect

RUN_NAME = "pretrain"  # the Ray Train run's name under the storage path


class RayCheckpoints:
    """model/pretrain.py's CheckpointStore on Ray Train: `ray.train.get_checkpoint()` to load,
    `ray.train.report` (a barrier every worker calls) to save, rank 0 attaching the checkpoint."""

    def __init__(self, rank: int):
        self.rank = rank

    def load(self) -> dict | None:
        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            return None
        with checkpoint.as_directory() as directory:
            return read_state(Path(directory) / STATE_FILE, Path(directory))  # data only: no pickled code runs

    def save(self, *, step: int, state: dict | None, export, metrics: dict[str, float]) -> None:
        if state is None:
            ray.train.report(metrics)
            return
        with tempfile.TemporaryDirectory(prefix="pretrain-") as tmp:
            write_state(Path(tmp), state)
            export(Path(tmp))
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp),
                             checkpoint_dir_name=f"step-{step:07d}")


def train_worker(config: dict[str, Any]) -> None:
    """Ray Train's `train_loop_per_worker`: one worker of the data-parallel run."""
    data: PretrainData = ray.get(config["data"])
    cfg = PretrainConfig.from_dict(config["cfg"])
    if config.get("threads"):
        torch.set_num_threads(config["threads"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    run_loop(data, cfg, RayCheckpoints(rank), device=device, rank=rank, world=world,
             wrap=ray.train.torch.prepare_model, save_every=config["save_every"], run_info=config["run_info"])


def _latest_checkpoint(run_path: str):
    """The last checkpoint Ray Train recorded at `run_path`, or None where no run is stored."""
    try:
        return ray.train.Result.from_path(run_path).checkpoint
    except RuntimeError:  # no run there (yet), or it died before recording anything
        return None


def _check_out(out: Path) -> None:
    """--out must be new, empty, or hold what this command writes (the export and, by default, ray/)."""
    if out.exists():
        if not out.is_dir():
            raise ConfigError(f"--out {out} is a file; pass a directory")
        other = sorted(p.name for p in out.iterdir() if p.name not in (*EXPORT_FILES, "ray", ".export.tmp"))
        if other:
            raise ConfigError(f"--out {out} holds {', '.join(other[:5])}, which pretraining did not write; "
                              "pass a new or empty directory")


def pretrain_distributed(cfg: PretrainConfig, corpus: Sequence[str | Path], out: str | Path, *,
                         address: str | None = None, num_workers: int = 2, cpus_per_worker: float = 1,
                         gpus_per_worker: float = 0, storage_path: str | None = None, max_failures: int = 2,
                         save_every: int = 500, threads: int | None = None, resume: bool = False,
                         command: Sequence[str] | None = None) -> Summary:
    """Pretrain with `num_workers` Ray Train workers; `out` ends up a checkpoint directory."""
    if num_workers < 1:
        raise ConfigError(f"--num-workers is {num_workers}, but must be >= 1")
    if num_workers > 1 and 0 < gpus_per_worker < 1:  # NCCL refuses two ranks on one GPU
        raise ConfigError(f"--gpus-per-worker is {gpus_per_worker:g} with --num-workers {num_workers}: data-parallel "
                          "workers on GPUs need a whole GPU each. Pass --gpus-per-worker 1 (or 0 to pretrain on CPUs)")
    out = Path(out).resolve()
    storage = storage_path or str(out / "ray")
    if not is_uri(storage):
        storage = str(Path(storage).resolve())
    data = prepare_corpus(corpus, cfg)
    current = fingerprint(cfg, data.files)
    _check_out(out)
    if out.joinpath(RECORD_FILE).exists():  # the export of an earlier run
        check_fingerprint(record_fingerprint(json.loads(out.joinpath(RECORD_FILE).read_text())), current,
                          where=f"--out {out}")
    stopper = connect(address)
    try:
        check_shared_storage(storage, ray.nodes())  # rank 0 checkpoints there; a restart reads it anywhere
        run_path = f"{storage.rstrip('/')}/{RUN_NAME}"
        latest = _latest_checkpoint(run_path)
        if latest is not None:
            with latest.as_directory() as directory:
                check_fingerprint(json.loads((Path(directory) / RUN_FILE).read_text()), current,
                                  where=f"--storage-path {storage}")
                done = record_is_done(json.loads((Path(directory) / RECORD_FILE).read_text()), cfg)
            if done:  # nothing to train: no need to start workers
                _export(latest, out)
                return _summary(out)
        elif resume:
            raise ConfigError(f"--resume: no checkpoint at {run_path} to continue from; run without --resume to start")
        resources = {"CPU": cpus_per_worker, **({"GPU": gpus_per_worker} if gpus_per_worker else {})}
        trainer = ray.train.torch.TorchTrainer(
            train_worker,
            train_loop_config={
                "data": ray.put(data), "cfg": cfg.to_dict(), "save_every": save_every,
                "threads": threads or max(1, int(cpus_per_worker)),
                "run_info": {"save_every": save_every, "command": list(command) if command is not None else None,
                             "storage": run_path},
            },
            scaling_config=ray.train.ScalingConfig(num_workers=num_workers, use_gpu=gpus_per_worker > 0,
                                                   resources_per_worker=resources),
            run_config=ray.train.RunConfig(name=RUN_NAME, storage_path=storage,
                                           failure_config=ray.train.FailureConfig(max_failures=max_failures),
                                           checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2)),
        )
        result = trainer.fit()
        if result.checkpoint is None:
            raise RuntimeError(f"the Ray Train run at {run_path} ended without a checkpoint")
        _export(result.checkpoint, out)
    finally:
        if stopper:
            ray.shutdown()
    return _summary(out)


def _export(checkpoint: ray.train.Checkpoint, out: Path) -> None:
    """Copy the export files of a checkpoint into `out`, each replaced atomically."""
    out.mkdir(parents=True, exist_ok=True)
    with checkpoint.as_directory() as directory:
        staging = out / ".export.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        for name in EXPORT_FILES:
            shutil.copy2(Path(directory) / name, staging / name)
        for name in EXPORT_FILES:
            os.replace(staging / name, out / name)
        staging.rmdir()


def _summary(out: Path) -> Summary:
    return Summary.from_record(json.loads((out / RECORD_FILE).read_text()))
