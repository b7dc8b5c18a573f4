"""Unlabeled corpora: the documents MLM pretraining (model/pretrain/) and corpus word vectors
(model/wordvec.py) train on.

A corpus is one or more files: CSV files (`.csv`: the `text` column, so train.csv and test.csv both
serve) and text files (any other suffix: one document per line). A document is a string of
space-separated tokens. `read_corpus` records each file's sha256 and row count, so a checkpoint
says exactly what it was trained on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from model.datafiles import require_corpus_files
from model.errors import DataError
from model.provenance import file_sha256


@dataclass(frozen=True)
class Corpus:
    texts: list[str]
    files: list[dict]  # per file: path, sha256, rows (documents used)


def read_corpus(paths: Sequence[str | Path]) -> Corpus:
    """Documents from CSV files (`.csv`: the `text` column, so train.csv and test.csv both serve) and
    text files (anything else: one document per line). Blank documents are skipped; a file with none
    is a `DataError`."""
    texts, files = [], []
    for path in require_corpus_files(paths):
        docs = _read_documents(path)
        if not docs:
            raise DataError(f"{path}: no non-empty documents; a corpus file needs one document (space-separated "
                            "tokens) per line, or a CSV with a filled `text` column")
        texts += docs
        files.append({"path": str(path.resolve()), "sha256": file_sha256(path), "rows": len(docs)})
    return Corpus(texts=texts, files=files)


def _read_documents(path: Path) -> list[str]:
    """The non-blank documents of one corpus file, stripped."""
    if path.suffix.lower() == ".csv":
        import pandas as pd  # here: `embed --help` reads model/wordvec.py, which needs this module, without pandas

        try:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
        except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as err:
            raise DataError(f"{path}: not a readable UTF-8 CSV ({err}); give a CSV with a `text` column, or a "
                            "text file (not .csv) with one document per line") from err
        frame.columns = [c.strip() for c in frame.columns]
        if "text" not in frame.columns:
            raise DataError(f"{path}: no `text` column (found {','.join(frame.columns)}); a CSV corpus needs "
                            "one, or give a text file (not .csv) with one document per line")
        docs = frame["text"].str.strip().tolist()
    else:
        try:
            docs = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        except UnicodeDecodeError as err:
            raise DataError(f"{path}: not a UTF-8 text file ({err}); save it as UTF-8 "
                            "(e.g. iconv -f GBK -t UTF-8)") from err
    return [d for d in docs if d]
