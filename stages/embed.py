"""`python -m search embed`: word vectors (word2vec or fastText, gensim) trained on unlabeled text.

In this process, no Ray (model/wordvec.py). `out` ends up a word-vector checkpoint directory that
the textcnn, dpcnn, bigru and bilstm encoders load with `--set encoder=textcnn --set checkpoint=OUT`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from model.wordvec import WordVecConfig, train_vectors


def run_embed(cfg: WordVecConfig, corpus: Sequence[str], out: str | Path, *, threads: int, quiet: bool,
              command: list[str], hint: bool = True) -> dict[str, Any]:
    """Train the vectors into `out`, a line per epoch unless `quiet`; returns the checkpoint's record.
    `hint`: end with how to use the checkpoint (the command's last line; not inside a pipeline)."""
    record = train_vectors(cfg, corpus, out, threads=threads, progress=None if quiet else print, command=command)
    pairs = cfg.view == "bigrams"
    print(f"{record['vocab_size']} {'token-pair' if pairs else 'token'} vectors of {cfg.dim} dimensions ({cfg.method}) "
          f"from {record['documents']} documents in {record['seconds']:.1f} s")
    if not hint:
        return record
    sets = f"--set encoder=textcnn{' --set view=bigrams' if pairs else ''} --set checkpoint={out}"
    also = f"; or `confirm RUN_DIR --bigrams {out}`" if pairs else ""
    print(f"checkpoint: {out} (use with {sets}; also dpcnn, bigru, bilstm{also})")
    return record
