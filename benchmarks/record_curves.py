"""Record learning curves: N configs of a space, each trained for the full budget on one fold.

The configs are the first N draws of Optuna's RandomSampler (seeded) through the space's own
`SearchSpace.sample`, so the same command always means the same configs. Each finished config
appends its rows (one per epoch: level-2 and level-1 macro-F1 and the epoch's wall seconds; see
benchmarks/curves.py) to the CSV at once, so a killed recorder loses only the configs in flight,
and the same command continues: configs already in the file are skipped (a config with missing
epochs, a row cut off by the kill, is dropped and trained again). A larger --configs extends a table.

    python -m benchmarks.record_curves --data ../shared/data/datagrand2021/train.csv \\
        --configs 150 --max-epochs 5 --workers 4 --threads 1 [--device cuda]

The table's settings go to <csv>.json beside it; continuing with other settings is refused.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

import optuna
import pandas as pd

from benchmarks.curves import (
    CONFIG,
    EPOCH_S,
    VALUE_COLUMNS,
    columns,
    config_rows,
    parse_curves,
    same_value,
    table_params,
)
from model import metrics as M
from model.datafiles import resolve_train_path
from model.errors import ConfigError, DataError
from rundir.inputs import load_data
from rundir.io import atomic_write_json, atomic_write_text
from rundir.settings import Settings
from spaces.space import SearchSpace, load_space
from stages.ensemble import file_sha256

DEFAULT_OUT = "benchmarks/data/curves_seed_tiny.csv"
# Settings a table is bound to: continuing it under others would mix curves of different experiments.
# The data by content, not path, so a table continues on another machine (a GPU machine, say) that
# holds the same file elsewhere.
BINDING = ("space", "seed", "max_epochs", "data_sha256", "synthetic_rows", "fold", "folds", "max_seq_len")


def sample_configs(space: SearchSpace, count: int, seed: int) -> list[tuple[str, dict[str, Any]]]:
    """The first `count` random draws of the space, with their ids (c0000, c0001, ...)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed), direction="maximize")
    configs = []
    for i in range(count):
        trial = study.ask()
        configs.append((f"c{i:04d}", space.sample(trial)))
        study.tell(trial, 0.0)
    return configs


# --- worker side: each process loads and encodes the data once ---

_WORKER: dict[str, Any] = {}


def _init_worker(settings: Settings, space_path: str, threads: int, device: str) -> None:
    import torch

    torch.set_num_threads(threads)
    _WORKER.update(data=load_data(settings), space=load_space(space_path), device=device)


def train_config(config_id: str, params: dict[str, Any], max_epochs: int, seed: int) -> tuple[str, list[tuple]]:
    """Train one config for the full budget (no patience); (id, [(epoch, l2 F1, l1 F1, seconds)])."""
    from model.train import fit

    cfg = _WORKER["space"].config(params, max_epochs=max_epochs, seed=seed, patience=0)
    epochs = []
    last = time.perf_counter()

    def on_eval(evaluation) -> None:
        nonlocal last
        now = time.perf_counter()
        epochs.append((int(evaluation.epoch), evaluation.metrics[M.LEVEL2_MACRO_F1],
                       evaluation.metrics[M.LEVEL1_MACRO_F1], now - last))
        last = now

    fit(cfg, _WORKER["data"], on_eval, device=_WORKER["device"])
    return config_id, epochs


# --- driver side ---

def complete_rows(path: Path, max_epochs: int) -> pd.DataFrame:
    """The table's rows of configs with every epoch 1..max_epochs. Rewrites the file without the
    others and without a last line a kill cut off (no newline), so those configs are trained again;
    the lines kept are kept as written."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    complete = [line for line in lines if line.endswith("\n")]
    if len(complete) < 2:  # no config's rows survived (a kill during the first write): start afresh
        atomic_write_text(path, "")
        return pd.DataFrame()
    frame = parse_curves("".join(complete), path)
    values = frame.dropna(subset=[M.EPOCH, M.LEVEL2_MACRO_F1, EPOCH_S])
    counts = values.groupby(CONFIG)[M.EPOCH].nunique()
    whole = set(counts.index[counts == max_epochs].astype(str))
    kept = complete[:1] + [line for line in complete[1:] if line.split(",", 1)[0] in whole]
    if len(kept) < len(lines):
        print(f"dropping {frame[CONFIG].nunique() - len(whole)} config(s) with missing epochs from {path}; "
              "they are trained again", flush=True)
        atomic_write_text(path, "".join(kept))
    return frame[frame[CONFIG].astype(str).isin(whole)]


def check_binding(path: Path, meta: dict[str, Any]) -> None:
    meta_path = path.with_suffix(path.suffix + ".json")
    if path.exists() and meta_path.exists():
        old = json.loads(meta_path.read_text())
        changed = [k for k in BINDING if old.get(k) != meta.get(k)]
        if changed:
            recorded = ", ".join(f"{k}: {old.get(k)!r}" for k in changed)
            raise ConfigError(f"{path} was recorded with other settings ({recorded}); continue it with those, "
                              "or pass another --out")
    atomic_write_json(meta_path, meta)


def check_same_configs(recorded: dict[str, dict[str, Any]], configs: list[tuple[str, dict[str, Any]]],
                       path: Path) -> None:
    """The file's configs are the ones this command samples (same space, seed and sampler)."""
    for cid, params in configs:
        if cid in recorded:
            old = recorded[cid]
            if set(old) != set(params) or not all(same_value(old[k], params[k]) for k in params):
                raise ConfigError(f"{path}: config {cid} differs from the one this command samples (the space "
                                  "or Optuna's sampler changed since it was recorded); pass another --out")


def append(path: Path, rows: pd.DataFrame) -> None:
    """Append `rows` in one write and sync it: a kill leaves at most a cut last config."""
    rows = rows.copy()
    for column in VALUE_COLUMNS[1:]:  # measurements to 6 digits; params exact, to compare on continuing
        rows[column] = rows[column].map(lambda v: float(f"{v:.6g}"))
    text = rows.to_csv(index=False, header=not path.exists() or path.stat().st_size == 0)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def record(args: argparse.Namespace) -> Path:
    space = load_space(args.space)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    settings = Settings(data=args.data, synthetic_rows=args.synthetic_rows, fold=args.fold, folds=args.folds,
                        seed=args.seed, max_seq_len=args.max_seq_len)
    meta = {"space": str(Path(args.space)), "seed": args.seed, "max_epochs": args.max_epochs,
            "data": str(Path(args.data).resolve()) if args.data else None,
            "data_sha256": file_sha256(resolve_train_path(args.data)) if args.data else None,
            "synthetic_rows": None if args.data else args.synthetic_rows, "fold": args.fold, "folds": args.folds,
            "max_seq_len": args.max_seq_len, "configs": args.configs, "workers": args.workers,
            "threads": args.threads, "device": args.device, "columns": columns(space),
            "command": " ".join(["python", "-m", "benchmarks.record_curves", *sys.argv[1:]])}
    check_binding(out, meta)
    configs = sample_configs(space, args.configs, args.seed)
    rows = complete_rows(out, args.max_epochs) if out.exists() else pd.DataFrame()
    recorded = table_params(rows) if len(rows) else {}
    check_same_configs(recorded, configs, out)
    todo = [(cid, params) for cid, params in configs if cid not in recorded]
    print(f"{out}: {len(configs) - len(todo)} of {len(configs)} configs recorded, training {len(todo)} "
          f"for {args.max_epochs} epochs each ({args.workers} workers x {args.threads} threads on {args.device})",
          flush=True)
    if not todo:
        return out
    started, done = time.perf_counter(), 0
    context = multiprocessing.get_context("spawn")  # torch and fork do not mix
    with ProcessPoolExecutor(args.workers, mp_context=context, initializer=_init_worker,
                             initargs=(settings, str(args.space), args.threads, args.device)) as pool:
        params_of = dict(todo)
        pending = {pool.submit(train_config, cid, params, args.max_epochs, args.seed) for cid, params in todo}
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                cid, epochs = future.result()
                append(out, config_rows(cid, params_of[cid], space, epochs))
                done += 1
                elapsed = time.perf_counter() - started
                eta = elapsed / done * (len(todo) - done)
                curve = " ".join(f"{f2:.3f}" for _, f2, _, _ in epochs)
                print(f"[{len(configs) - len(todo) + done}/{len(configs)}] {cid}: level-2 F1 by epoch {curve}; "
                      f"{sum(s for *_, s in epochs):.0f} s; elapsed {elapsed:.0f} s, ETA {eta:.0f} s", flush=True)
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=DEFAULT_OUT, help="the curve CSV (appended to; default %(default)s)")
    parser.add_argument("--space", default="spaces/seed.yaml")
    parser.add_argument("--configs", type=int, default=150, help="configs to sample (default %(default)s)")
    parser.add_argument("--max-epochs", type=int, default=5, help="the full budget of every config")
    parser.add_argument("--data", default=None, help="train.csv or its directory; default: synthetic data")
    parser.add_argument("--synthetic-rows", type=int, default=2400)
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0, help="sampling and training seed")
    parser.add_argument("--max-seq-len", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2, help="configs trained at once (processes)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda (the workers share one GPU)")
    args = parser.parse_args(argv)
    if min(args.configs, args.max_epochs, args.workers, args.threads) < 1:
        parser.error("--configs, --max-epochs, --workers and --threads must be at least 1")
    return args


def main(argv: list[str] | None = None) -> None:
    try:
        record(parse_args(argv))
    except (ConfigError, DataError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
