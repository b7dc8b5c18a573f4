"""The learning-curve table (benchmarks/record_curves.py writes it) and the surrogate fitted on it.

One row per (config, epoch): `config` (its id), `param.<name>` for each searched parameter of the
space (empty where inactive), `epoch`, level-2 and level-1 macro-F1 and `epoch_s` (wall seconds of
that epoch). The surrogate maps an encoded config to its per-epoch level-2 F1 and epoch time, so a
search can be replayed without training (benchmarks/search_efficiency.py). Free of torch: Ray
workers of the replay import this module.
"""

from __future__ import annotations

import io
import math
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from model import metrics as M
from model.errors import DataError
from spaces.space import Param, SearchSpace

CONFIG = "config"
EPOCH_S = "epoch_s"
PARAM_PREFIX = "param."
VALUE_COLUMNS = [M.EPOCH, M.LEVEL2_MACRO_F1, M.LEVEL1_MACRO_F1, EPOCH_S]


def columns(space: SearchSpace) -> list[str]:
    return [CONFIG, *(PARAM_PREFIX + name for name in space.searched), *VALUE_COLUMNS]


def config_rows(config_id: str, params: dict[str, Any], space: SearchSpace,
                epochs: list[tuple[int, float, float, float]]) -> pd.DataFrame:
    """The table rows of one trained config: `epochs` holds (epoch, level-2 F1, level-1 F1, seconds)."""
    flat = {PARAM_PREFIX + name: params.get(name) for name in space.searched}
    return pd.DataFrame([{CONFIG: config_id, **flat, M.EPOCH: e, M.LEVEL2_MACRO_F1: f2,
                          M.LEVEL1_MACRO_F1: f1, EPOCH_S: s} for e, f2, f1, s in epochs], columns=columns(space))


def read_curves(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no curve table at {path}: record one with `python -m benchmarks.record_curves`")
    return parse_curves(path.read_text(encoding="utf-8"), path)


def parse_curves(text: str, source: str | Path) -> pd.DataFrame:
    frame = pd.read_csv(io.StringIO(text), dtype={CONFIG: str})
    missing = [c for c in (CONFIG, *VALUE_COLUMNS) if c not in frame.columns]
    if missing:
        raise DataError(f"{source} lacks the columns {missing}: it was not written by benchmarks/record_curves.py")
    return frame


def same_value(a: Any, b: Any) -> bool:
    """Equal as the CSV round trip leaves them: numbers by value (16 == 16.0), the rest as text;
    missing (None, NaN) equals missing."""
    if _missing(a) or _missing(b):
        return _missing(a) and _missing(b)
    try:
        return not isinstance(a, bool) and not isinstance(b, bool) and math.isclose(float(a), float(b),
                                                                                   rel_tol=1e-9)
    except (TypeError, ValueError):
        return str(a) == str(b)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def table_params(frame: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """{config id: its params (inactive ones left out)}, from each config's first row."""
    firsts = frame.drop_duplicates(CONFIG).set_index(CONFIG)
    names = [c for c in frame.columns if c.startswith(PARAM_PREFIX)]
    return {str(cid): {c[len(PARAM_PREFIX):]: row[c] for c in names if not _missing(row[c])}
            for cid, row in firsts.iterrows()}


def curve_matrix(frame: pd.DataFrame, column: str) -> tuple[list[str], np.ndarray]:
    """(config ids, (configs, epochs) array of `column`); every config must have every epoch 1..E."""
    wide = frame.pivot_table(index=CONFIG, columns=M.EPOCH, values=column, aggfunc="first")
    if wide.isna().any().any():
        short = list(wide.index[wide.isna().any(axis=1)])[:5]
        raise DataError(f"configs {short} lack some epochs of the table: every config needs the full budget")
    return [str(c) for c in wide.index], wide.to_numpy(dtype=float)


def best_in_table(frame: pd.DataFrame) -> float:
    """The best level-2 F1 any recorded config reached at any epoch."""
    return float(frame[M.LEVEL2_MACRO_F1].max())


class Surrogate:
    """Random forests over the encoded config: one for the level-2 F1 of every epoch, one for the
    log of every epoch's seconds (so the F1 fit is not swamped by time's scale). Forests take the
    mixed, conditional parameters as they are: inactive numbers stay NaN (scikit-learn's trees
    route missing values), choices are one-hot."""

    def __init__(self, params: tuple[Param, ...], *, seed: int = 0, trees: int = 200):
        self.params = tuple(p for p in params if p.searched)
        self.seed, self.trees = seed, trees
        self.epochs = 0

    def encode(self, configs: list[dict[str, Any]]) -> np.ndarray:
        rows = []
        for values in configs:
            row: list[float] = []
            for p in self.params:
                value = values.get(p.name)
                if p.kind == "choice":
                    row += [float(not _missing(value) and same_value(value, c)) for c in p.choices]
                elif _missing(value):
                    row.append(np.nan)
                else:
                    row.append(math.log10(float(value)) if p.log else float(value))
            rows.append(row)
        return np.asarray(rows, dtype=float)

    def _forest(self):
        from sklearn.ensemble import RandomForestRegressor

        return RandomForestRegressor(n_estimators=self.trees, min_samples_leaf=2, random_state=self.seed, n_jobs=1)

    def fit(self, configs: list[dict[str, Any]], f1: np.ndarray, seconds: np.ndarray) -> Surrogate:
        x = self.encode(configs)
        self.epochs = f1.shape[1]
        self.f1_model = self._forest().fit(x, f1)
        self.time_model = self._forest().fit(x, np.log(np.maximum(seconds, 1e-6)))
        return self

    def predict(self, configs: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
        """(configs, epochs) arrays of level-2 F1 and epoch seconds."""
        x = self.encode(configs)
        f1 = np.clip(self.f1_model.predict(x).reshape(len(configs), -1), 0.0, 1.0)
        return f1, np.exp(self.time_model.predict(x).reshape(len(configs), -1))

    def save(self, path: str | Path) -> None:
        Path(path).write_bytes(pickle.dumps(self))

    @staticmethod
    def load(path: str | Path) -> Surrogate:
        return pickle.loads(Path(path).read_bytes())


def fit_surrogate(frame: pd.DataFrame, space: SearchSpace, *, seed: int = 0) -> Surrogate:
    ids, f1 = curve_matrix(frame, M.LEVEL2_MACRO_F1)
    _, seconds = curve_matrix(frame, EPOCH_S)
    params = table_params(frame)
    return Surrogate(space.params, seed=seed).fit([params[i] for i in ids], f1, seconds)


def validate_surrogate(frame: pd.DataFrame, space: SearchSpace, *, folds: int = 5, seed: int = 0) -> dict[str, float]:
    """Held-out quality: each config's curve predicted by a surrogate fitted without it (k-fold);
    Spearman rank correlation of the final-epoch F1 (what decides a search), and mean absolute
    errors of that F1 and of the epoch time."""
    from scipy.stats import spearmanr
    from sklearn.model_selection import KFold

    ids, f1 = curve_matrix(frame, M.LEVEL2_MACRO_F1)
    _, seconds = curve_matrix(frame, EPOCH_S)
    params = table_params(frame)
    configs = [params[i] for i in ids]
    pred_f1, pred_s = np.zeros_like(f1), np.zeros_like(seconds)
    for train, test in KFold(n_splits=min(folds, len(ids)), shuffle=True, random_state=seed).split(configs):
        model = Surrogate(space.params, seed=seed).fit([configs[i] for i in train], f1[train], seconds[train])
        pred_f1[test], pred_s[test] = model.predict([configs[i] for i in test])
    rho = spearmanr(f1[:, -1], pred_f1[:, -1]).statistic
    return {"configs": len(ids), "folds": min(folds, len(ids)), "spearman_final_f1": float(rho),
            "mae_final_f1": float(np.abs(f1[:, -1] - pred_f1[:, -1]).mean()),
            "mae_epoch_s": float(np.abs(seconds - pred_s).mean())}
