"""Where a pretraining run's checkpoints live (`CheckpointStore`): OUT/checkpoints/ locally
(`LocalCheckpoints`), or Ray Train's storage (search/pretrain_distributed.py); and which OUT
directories a run may use."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import torch

from model.errors import ConfigError
from model.pretrain.config import CHECKPOINTS, RUN_FILE, STATE_FILE, check_fingerprint


class CheckpointStore(Protocol):
    """Where a run's checkpoints live. `save` is called by every worker at the same steps (Ray's
    report is a barrier); `state` and `export` are None except on rank 0."""

    def load(self) -> dict | None: ...

    def save(self, *, step: int, state: dict | None, export: Callable[[Path], None] | None,
             metrics: dict[str, float]) -> None: ...


def write_state(directory: Path, state: dict) -> None:
    torch.save(state, directory / STATE_FILE)
    (directory / RUN_FILE).write_text(json.dumps(state["fingerprint"], indent=1))


def _replace_files(source: Path, target: Path) -> None:
    """Move every file of `source` into `target`, each atomically (os.replace)."""
    for item in source.iterdir():
        os.replace(item, target / item.name)


class LocalCheckpoints:
    """OUT/checkpoints/step-NNNNNNN/ (state.pt, run.json), written to a `.tmp` directory and then
    renamed, so a kill never leaves a half-written checkpoint; the previous one is removed after.
    The export (config, weights, vocab.txt, pretrain.json) is refreshed in OUT at every save."""

    def __init__(self, out: Path):
        self.out = Path(out)
        self.root = self.out / CHECKPOINTS

    def latest(self) -> Path | None:
        if not self.root.is_dir():
            return None
        done = sorted(p for p in self.root.iterdir() if p.is_dir() and p.name.startswith("step-")
                      and not p.name.endswith(".tmp") and (p / STATE_FILE).is_file())
        return done[-1] if done else None

    def load(self) -> dict | None:
        latest = self.latest()
        return None if latest is None else torch.load(latest / STATE_FILE, map_location="cpu", weights_only=False)

    def save(self, *, step: int, state: dict | None, export: Callable[[Path], None] | None,
             metrics: dict[str, float]) -> None:
        if state is None:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        final = self.root / f"step-{step:07d}"
        tmp = self.root / f"{final.name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        write_state(tmp, state)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        for old in self.root.iterdir():
            if old != final:
                shutil.rmtree(old, ignore_errors=True)
        if export is not None:
            staging = self.out / ".export.tmp"
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir()
            export(staging)
            _replace_files(staging, self.out)
            staging.rmdir()


def open_output(out: Path, current: dict, *, resume: bool) -> LocalCheckpoints:
    """The checkpoint store of OUT after checking it may be used: new or empty; or holding this
    run's checkpoint (continue); or a run that died before its first checkpoint (start over).
    A different run's checkpoint, or files pretrain did not write, are refused."""
    store = LocalCheckpoints(out)
    latest = store.latest()
    if latest is not None:
        stored = json.loads((latest / RUN_FILE).read_text())
        check_fingerprint(stored, current, where=f"--out {out}")
        return store
    if resume:
        raise ConfigError(f"--resume: --out {out} holds no checkpoint to continue from (none was saved yet, or it "
                          "is the wrong directory); run without --resume to start")
    if out.exists():
        if not out.is_dir():
            raise ConfigError(f"--out {out} is a file; pass a directory")
        # what a run that died before its first checkpoint leaves behind may be overwritten; nothing else
        other = sorted(p.name for p in out.iterdir() if p.name not in (CHECKPOINTS, ".export.tmp"))
        if other:
            raise ConfigError(f"--out {out} holds {', '.join(other[:5])} but no pretraining checkpoint (a finished run "
                              "whose checkpoints/ was deleted, or another model); pass a new or empty directory")
    return store
