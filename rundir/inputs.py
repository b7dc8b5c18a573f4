"""The space and the data a run's `Settings` select: read, generated, encoded.

Launch, resume, confirm, train-one and predict all load a run's space and data through here, so
they agree on what the settings mean.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import yaml

from model.data import EncodedData, prepare_data, read_table
from model.datafiles import resolve_train_path
from model.synthetic import synthesize
from rundir.io import damaged
from rundir.paths import RunFiles
from rundir.settings import DEFAULT_MAX_EPOCHS, Settings
from spaces.space import SearchSpace, load_space, parse_sets


def space_of(settings: Settings, path: str | Path | None = None) -> SearchSpace:
    """The space a run searches: `settings.space` (or `path`: the run's stored copy of it) with the
    run's `--set` values fixed. Launch, resume, confirm and predict all load it through here."""
    return load_space(settings.space if path is None else path, sets=parse_sets(settings.sets))


def resolve_max_epochs(settings: Settings, space: SearchSpace) -> int:
    if settings.max_epochs is not None:
        return settings.max_epochs
    return int(space.fixed.get("max_epochs", DEFAULT_MAX_EPOCHS))


def read_training_frame(settings: Settings) -> tuple[pd.DataFrame, str]:
    """The validated training table the settings select (read, or generated) and where it came from."""
    if settings.data is not None:
        path = resolve_train_path(settings.data)
        return read_table(path), str(path.resolve())
    frame, _ = synthesize(settings.synthetic_rows, seed=settings.synthetic_seed, flag="--synthetic-rows")
    return frame, f"synthetic(rows={settings.synthetic_rows}, seed={settings.synthetic_seed})"


def load_data(settings: Settings) -> EncodedData:
    """Read (or generate) and encode the data once, in the driver."""
    frame, source = read_training_frame(settings)
    return prepare_data(frame, folds=settings.folds, fold=settings.fold, seed=settings.seed,
                        max_seq_len=settings.max_seq_len, source=source)


def check_space_copy(files: RunFiles) -> None:
    """Refuse a missing or damaged space.yaml as such (not as a space that no longer fits the code)."""
    try:
        doc = yaml.safe_load(files.space_yaml.read_text(encoding="utf-8"))
    except OSError as err:
        raise damaged(files.space_yaml, err.strerror or str(err)) from None
    except (UnicodeDecodeError, yaml.YAMLError) as err:
        raise damaged(files.space_yaml, f"not valid YAML: {err}") from None
    if not isinstance(doc, dict):
        raise damaged(files.space_yaml, f"a YAML {type(doc).__name__} where a mapping belongs")
