"""Where a pretraining run's checkpoints live (`CheckpointStore`): OUT/checkpoints/ locally
(`LocalCheckpoints`), or Ray Train's storage (search/pretrain_distributed.py); and which OUT
directories a run may use."""

from __future__ import annotations

import json
import os
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import torch

from model.errors import ConfigError, DamagedFile
from model.pretrain.config import CHECKPOINTS, RUN_FILE, STATE_FILE, check_fingerprint


class CheckpointStore(Protocol):
    """Where a run's checkpoints live. `save` is called by every worker at the same steps (Ray's
    report is a barrier); `state` and `export` are None except on rank 0."""

    def load(self) -> dict | None: ...

    def save(self, *, step: int, state: dict | None, export: Callable[[Path], None] | None,
             metrics: dict[str, float]) -> None: ...


STATE_KEYS = ("model", "optimizer", "scheduler", "progress", "fingerprint", "rng")


def recovery(out: Path) -> str:
    return (f"delete {out} (or pass a new --out) and run the same `python -m search pretrain` command again: it "
            "starts over")


def read_state(path: Path, out: Path) -> dict:
    """A checkpoint's state.pt, loaded as data only (`weights_only`: tensors, numbers, strings, lists,
    dicts; NumPy arrays of checkpoints written before 2026-12): a planted pickle runs nothing. A
    cut-short or foreign file is `DamagedFile`."""
    import numpy as np

    arrays = [np.ndarray, np.dtype, type(np.dtype(np.uint32)), getattr(np, "_core", np.core).multiarray._reconstruct]
    try:
        with torch.serialization.safe_globals(arrays), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "Detected pickle protocol 4" of a foreign pickle
            state = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as err:
        raise DamagedFile(path, err.strerror or str(err), recovery(out)) from None
    except Exception as err:  # noqa: BLE001 - torch reports a damaged file (or a pickle of code) as many kinds of error
        raise DamagedFile(path, f"not a pretraining checkpoint that loads as data ({type(err).__name__}: "
                          f"{(str(err) or '-').splitlines()[0][:160]})", recovery(out)) from None
    missing = [k for k in STATE_KEYS if k not in state] if isinstance(state, dict) else ["dict"]
    if missing:
        raise DamagedFile(path, f"not a pretraining checkpoint (no {', '.join(missing)})", recovery(out))
    check_run_record(state["fingerprint"], path, out)
    return state


def check_run_record(value: object, path: Path, out: Path) -> dict:
    """A fingerprint (a checkpoint's run.json, or the one in its state.pt): settings and corpus."""
    if not isinstance(value, dict) or not isinstance(value.get("settings"), dict) \
            or not isinstance(value.get("corpus"), list) \
            or not all(isinstance(f, dict) and "sha256" in f and "rows" in f for f in value["corpus"]):
        raise DamagedFile(path, "not a pretraining run's fingerprint (an object with `settings` and `corpus`)",
                          recovery(out))
    return value


def read_run_file(path: Path, out: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise DamagedFile(path, err.strerror or str(err), recovery(out)) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DamagedFile(path, f"not valid JSON: {err}", recovery(out)) from None
    return check_run_record(value, path, out)


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
        return None if latest is None else read_state(latest / STATE_FILE, self.out)

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


def _check_writable(out: Path) -> None:
    """--out (or the nearest existing directory above it) must be writable: refused before any work."""
    import tempfile

    existing = next(p for p in (out, *out.absolute().parents) if p.exists())
    if not existing.is_dir():
        return  # open_output says what is wrong with a file there
    try:
        tempfile.TemporaryFile(dir=existing).close()
    except OSError as err:
        raise ConfigError(f"--out {out}: {existing} is not writable ({err.strerror or err}); nothing was changed. "
                          "Pass a directory you can write to, or free disk space") from None


def open_output(out: Path, current: dict, *, resume: bool) -> LocalCheckpoints:
    """The checkpoint store of OUT after checking it may be used: new or empty; or holding this
    run's checkpoint (continue); or a run that died before its first checkpoint (start over).
    A different run's checkpoint, or files pretrain did not write, are refused."""
    store = LocalCheckpoints(out)
    _check_writable(out)
    latest = store.latest()
    if latest is not None:
        stored = read_run_file(latest / RUN_FILE, out)
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
