"""Where the data files are: resolving `--data` and checking that named files exist, without
reading them. Light (pathlib only), so the command line refuses a missing file before it imports
torch, pandas or Ray (cli/checks.py); model/data.py and model/corpus.py read the files."""

from __future__ import annotations

from pathlib import Path

from model.errors import DataError


def resolve_train_path(data: str | Path) -> Path:
    """`data` is a directory holding train.csv, or the path of the training CSV itself."""
    path = Path(data)
    if path.is_dir():
        path = path / "train.csv"
    if not path.is_file():
        raise DataError(
            f"training data not found: {path} does not exist. Pass --data DIR with a train.csv "
            "(header id,text,label), or --synthetic to generate data"
        )
    return path


def require_file(path: str | Path) -> Path:
    """A data file (a test CSV, say) that must exist."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    return path


def require_corpus_files(paths: list[str | Path] | tuple[str | Path, ...]) -> list[Path]:
    """`--corpus FILE [FILE ...]`: each must exist."""
    if not paths:
        raise DataError("no corpus: pass --corpus FILE [FILE ...]")
    for name in paths:
        if not Path(name).is_file():
            raise DataError(f"{name}: corpus file not found; pass existing files to --corpus")
    return [Path(p) for p in paths]
