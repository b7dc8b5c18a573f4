"""`python -m search train-one`: train one configuration with the same `fit` trials use, without Ray.

For debugging a configuration and for reproducing a leaderboard row (the leaderboard's `command`
column is such a call). The config is the space's fixed values, then a warm-start point
(`--point`), then `--set key=value` overrides; anything else keeps its `TrialConfig` default.
"""

from __future__ import annotations

import time
from typing import Any

from model import metrics as M
from model.config import TrialConfig, field_names, field_type  # noqa: F401 (tests reach them here)
from model.data import dev_fold_note
from model.encoders import check_checkpoint, check_checkpoint_used, check_vocab_coverage
from model.errors import ConfigError
from model.threads import use_threads
from model.train import Evaluation, FitResult, fit, prepare_device
from rundir.inputs import load_data
from rundir.preflight import check_data_flags
from rundir.settings import DEFAULT_MAX_EPOCHS, Settings
from spaces.space import SearchSpace, SpaceError, load_space, parse_number, parse_set_value, parse_sets  # noqa: F401


def resolve_config(space: SearchSpace, *, point: str | None, sets: dict[str, Any], max_epochs: int | None,
                   seed: int) -> TrialConfig:
    values: dict[str, Any] = {}
    if point is not None:
        if point not in space.warm_start:
            names = ", ".join(space.warm_start) or "none"
            raise ConfigError(f"--point {point!r} is not a warm-start point of {space.path}; its points: {names}")
        values.update(space.warm_start[point])
    values = space.with_constants({**values, **sets})
    epochs = max_epochs or values.pop("max_epochs", None) or space.fixed.get("max_epochs", DEFAULT_MAX_EPOCHS)
    return space.config(values, max_epochs=int(epochs), seed=seed)


def describe(evaluation: Evaluation, max_epochs: int, seconds: float) -> str:
    m = evaluation.metrics
    return (f"epoch {evaluation.epoch}/{max_epochs}  level-2 F1 {m[M.LEVEL2_MACRO_F1]:.4f}  "
            f"level-1 F1 {m[M.LEVEL1_MACRO_F1]:.4f}  accuracy {m[M.ACCURACY]:.4f}  dev loss "
            f"{m[M.DEV_LOSS]:.4f}  train loss {m['train_loss']:.4f}  ({seconds:.0f}s)"
            + ("  *best" if evaluation.is_best else ""))


def train_one(settings: Settings, *, point: str | None, sets: dict[str, Any], threads: int | None,
              device: str | None, progress: bool = True, out=print) -> FitResult:
    # The fixed ones among the --sets complete the space (a checkpoint it leaves open, say) before it
    # is validated; resolve_config applies them all again, searched ones included.
    check_data_flags(settings)
    device = prepare_device(device)  # a --device this machine lacks is refused before any work
    space = load_space(settings.space, sets=sets, skip_searched=True)
    cfg = resolve_config(space, point=point, sets=sets, max_epochs=settings.max_epochs, seed=settings.seed)
    try:
        check_checkpoint_used([cfg])
    except ConfigError as err:
        raise SpaceError(f"{space.path}: {err}") from None
    check_checkpoint(cfg, max_seq_len=settings.max_seq_len)  # readable, long enough: before the data is read
    data = load_data(settings)
    check_vocab_coverage(cfg, data.vocab.tokens)
    use_threads(threads)
    out(f"data: {data.source}: {len(data.train)} train / {len(data.dev)} dev rows (fold {settings.fold} "
        f"of {settings.folds})")
    if note := dev_fold_note(data, fold=settings.fold, folds=settings.folds):
        out(note)
    out("config: " + ", ".join(f"{k}={v}" for k, v in cfg.to_dict().items()))
    started = time.perf_counter()
    result = fit(cfg, data, lambda e: out(describe(e, cfg.max_epochs, time.perf_counter() - started)),
                 device=device, progress=progress)
    best = result.best.metrics
    out(f"best: epoch {result.best.epoch}, level-2 macro-F1 {best[M.LEVEL2_MACRO_F1]:.4f}, level-1 macro-F1 "
        f"{best[M.LEVEL1_MACRO_F1]:.4f} ({result.seconds:.0f}s)")
    return result
