"""Corpus word vectors (model/wordvec.py) and `python -m search embed`: the checkpoint format, the
same bytes in separate processes whatever the hash seed, refusals of bad corpora and directories."""

import hashlib
import json
import os
import re
import subprocess
import sys
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cli import main as cli
from model.errors import ConfigError, DataError
from model.synthetic import synthesize
from model.wordvec import (
    RECORD_FILE,
    VECTORS_FILE,
    VOCAB_FILE,
    WordVecConfig,
    check_vectors_dir,
    load_vectors,
    train_vectors,
)

REPO = Path(__file__).resolve().parents[2]
SMALL = dict(dim=16, epochs=2, window=3)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> list[str]:
    """A CSV (text column) and a text file (one document per line, a blank line among them)."""
    root = tmp_path_factory.mktemp("corpus")
    train, test = synthesize(300, seed=1)
    train.to_csv(root / "train.csv", index=False)
    (root / "more.txt").write_text("\n".join(test["text"][:50]) + "\n\n" + "\n".join(test["text"][50:80]) + "\n")
    return [str(root / "train.csv"), str(root / "more.txt")]


def test_train_vectors_writes_the_checkpoint_format(corpus, tmp_path):
    lines = []
    record = train_vectors(WordVecConfig(**SMALL), corpus, tmp_path / "wv", progress=lines.append)
    out = tmp_path / "wv"
    assert sorted(p.name for p in out.iterdir()) == sorted([VECTORS_FILE, VOCAB_FILE, RECORD_FILE])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wv"]  # no temporary left behind
    vectors = np.load(out / VECTORS_FILE, allow_pickle=False)
    tokens = (out / VOCAB_FILE).read_text(encoding="utf-8").splitlines()
    assert vectors.dtype == np.float32 and vectors.shape == (len(tokens), 16) and np.isfinite(vectors).all()
    assert tokens[0] == "，"  # gensim's order: by descending frequency, and "，" is the most frequent token
    assert len(set(tokens)) == len(tokens) == record["vocab_size"]
    saved = json.loads((out / RECORD_FILE).read_text())
    assert saved == record
    assert {k: saved[k] for k in ("method", "dim", "window", "min_count", "epochs", "sg", "negative", "seed")} == {
        "method": "word2vec", "dim": 16, "window": 3, "min_count": 1, "epochs": 2, "sg": 1, "negative": 5, "seed": 0}
    assert [f["rows"] for f in saved["corpus"]] == [300, 80] and saved["documents"] == 380  # the blank line skipped
    assert saved["corpus"][0]["sha256"] == hashlib.sha256(Path(corpus[0]).read_bytes()).hexdigest()
    assert saved["versions"]["gensim"] == "4.4.0" and saved["deterministic"] and saved["seconds"] > 0
    assert saved["created"].endswith("+00:00")
    # one progress line per epoch, word2vec with its loss
    assert len(lines) == 2 and lines[0].startswith("epoch 1/2, loss ")
    assert [e["epoch"] for e in saved["epoch_log"]] == [1, 2]
    loaded = load_vectors(out)
    assert loaded.tokens == tuple(tokens) and np.array_equal(loaded.vectors, vectors) and loaded.dim == 16


def test_similar_contexts_give_similar_vectors(tmp_path):
    # Tokens a and b always appear in the same contexts, c in others: word2vec must put a near b.
    rng = np.random.default_rng(0)
    docs = []
    for _ in range(400):
        left, right = rng.integers(0, 20, 2)
        docs.append(f"x{left} {'a' if rng.random() < 0.5 else 'b'} y{right}")
        docs.append(f"u{left} c v{right}")
    (tmp_path / "docs.txt").write_text("\n".join(docs) + "\n")
    train_vectors(WordVecConfig(dim=16, epochs=50, window=2), [tmp_path / "docs.txt"], tmp_path / "wv", progress=None)
    wv = load_vectors(tmp_path / "wv")
    unit = {t: v / np.linalg.norm(v) for t, v in zip(wv.tokens, wv.vectors, strict=True)}
    assert unit["a"] @ unit["b"] > unit["a"] @ unit["c"] + 0.15  # measured 0.985 against 0.66


def embed(corpus, out, *extra, hash_seed="0"):
    """`python -m search embed` in a new process."""
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    done = subprocess.run([sys.executable, "-m", "search", "embed", "--corpus", *corpus, "--out", str(out),
                           "--dim", "16", "--epochs", "2", *extra], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("method", ["word2vec", "fasttext"])
def test_a_seed_gives_the_same_bytes_in_separate_processes_whatever_the_hash_seed(corpus, tmp_path, method):
    stdout = embed(corpus, tmp_path / "a", "--method", method, hash_seed="1")
    embed(corpus, tmp_path / "b", "--method", method, hash_seed="2")
    assert stdout.count("epoch ") == 2 and f"checkpoint: {tmp_path / 'a'}" in stdout
    a, b = ((tmp_path / d / VECTORS_FILE).read_bytes() for d in "ab")
    assert a == b and (tmp_path / "a" / VOCAB_FILE).read_bytes() == (tmp_path / "b" / VOCAB_FILE).read_bytes()
    train_vectors(WordVecConfig(**{**SMALL, "window": 5, "method": method, "seed": 1}), corpus, tmp_path / "c",
                  progress=None)
    assert (tmp_path / "c" / VECTORS_FILE).read_bytes() != a  # so the comparison above can fail


def test_inside_a_pipeline_embed_says_what_it_trained_but_not_how_to_use_it(corpus, tmp_path, capsys):
    from stages.embed import run_embed

    run_embed(WordVecConfig(**SMALL), corpus, tmp_path / "v", threads=1, quiet=True, command=[], hint=False)
    printed = capsys.readouterr().out
    assert "token vectors of " in printed and "checkpoint:" not in printed and "--set" not in printed
    run_embed(WordVecConfig(**SMALL), corpus, tmp_path / "w", threads=1, quiet=True, command=[])
    assert f"checkpoint: {tmp_path / 'w'} (use with --set encoder=textcnn --set checkpoint=" in capsys.readouterr().out


def test_the_embed_flags_map_to_the_config(corpus, tmp_path):
    parser = cli.build_parser()
    args = parser.parse_args(["embed", "--corpus", *corpus, "--out", "o", "--method", "fasttext", "--cbow",
                              "--dim", "32", "--min-count", "2", "--negative", "3", "--seed", "7"])
    from cli.embed_flags import config_from_args

    assert config_from_args(args) == WordVecConfig(method="fasttext", sg=0, dim=32, min_count=2, negative=3, seed=7)
    assert config_from_args(parser.parse_args(["embed", "--corpus", "c", "--out", "o"])) == WordVecConfig()
    assert config_from_args(parser.parse_args(["embed", "--corpus", "c", "--out", "o", "--view", "bigrams"])
                            ) == WordVecConfig(view="bigrams")


def test_the_bigram_view_trains_one_vector_per_pair_of_consecutive_tokens(corpus, tmp_path):
    stdout = embed(corpus, tmp_path / "pairs", "--view", "bigrams", "--min-count", "2")
    assert f"checkpoint: {tmp_path / 'pairs'} (use with --set encoder=textcnn --set view=bigrams --set " in stdout
    assert "token-pair vectors of 16 dimensions" in stdout
    assert f"confirm RUN_DIR --bigrams {tmp_path / 'pairs'}" in stdout
    record = json.loads((tmp_path / "pairs" / RECORD_FILE).read_text())
    pairs = load_vectors(tmp_path / "pairs").tokens
    assert record["view"] == "bigrams" and record["vocab_size"] == len(pairs)
    # exactly the pairs of consecutive tokens seen twice or more in the corpus's documents
    documents = [line.split() for line in Path(corpus[1]).read_text().splitlines() if line.strip()]
    documents += [text.split() for text in pd.read_csv(corpus[0], dtype=str)["text"]]
    seen = Counter(f"{a} {b}" for tokens in documents for a, b in zip(tokens[:-1], tokens[1:], strict=True))
    assert set(pairs) == {pair for pair, n in seen.items() if n >= 2}
    train_vectors(WordVecConfig(**SMALL), corpus, tmp_path / "tokens", progress=None)
    assert json.loads((tmp_path / "tokens" / RECORD_FILE).read_text())["view"] == "tokens"


def test_an_earlier_checkpoint_is_replaced_and_anything_else_refused(corpus, tmp_path):
    out = tmp_path / "wv"
    train_vectors(WordVecConfig(**SMALL), corpus, out, progress=None)
    train_vectors(WordVecConfig(**{**SMALL, "dim": 8}), corpus, out, progress=None)  # same kind: replaced
    assert np.load(out / VECTORS_FILE).shape[1] == 8
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match=r"holds notes.txt, which is not a word-vector checkpoint .*pass a new or "
                                          r"empty directory"):
        train_vectors(WordVecConfig(**SMALL), corpus, out, progress=None)
    other = tmp_path / "other"
    other.mkdir()
    (other / "vocab.txt").write_text("a\n")  # a file of the format, but no wordvec.json: some other checkpoint
    with pytest.raises(ConfigError, match=r"holds vocab.txt, which is not a word-vector checkpoint"):
        train_vectors(WordVecConfig(**SMALL), corpus, other, progress=None)
    assert (out / "notes.txt").read_text() == "mine" and (other / "vocab.txt").read_text() == "a\n"
    with pytest.raises(ConfigError, match=r"is a file; pass a directory"):
        train_vectors(WordVecConfig(**SMALL), corpus, Path(corpus[1]), progress=None)


def test_bad_corpora_are_data_errors_naming_the_file_and_the_fix(tmp_path, corpus):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    with pytest.raises(DataError, match=r"empty.txt: no non-empty documents; a corpus file needs one document"):
        train_vectors(WordVecConfig(**SMALL), [empty], tmp_path / "wv", progress=None)
    no_text = tmp_path / "labels.csv"
    no_text.write_text("id,label\n1,2-3\n")
    with pytest.raises(DataError, match=r"labels.csv: no `text` column"):
        train_vectors(WordVecConfig(**SMALL), [no_text], tmp_path / "wv", progress=None)
    with pytest.raises(DataError, match=r"missing.txt: corpus file not found"):
        train_vectors(WordVecConfig(**SMALL), [tmp_path / "missing.txt"], tmp_path / "wv", progress=None)
    with pytest.raises(DataError, match=r"no token occurs --min-count 100000 times .*lower --min-count"):
        train_vectors(WordVecConfig(**SMALL, min_count=100_000), corpus, tmp_path / "wv", progress=None)
    assert not (tmp_path / "wv").exists()


@pytest.mark.parametrize("values, message", [
    (dict(method="glove"), r"--method is 'glove'; choose one of word2vec, fasttext"),
    (dict(dim=0), r"--dim is 0, but must be >= 1"),
    (dict(sg=2), r"sg is 2, but must be 1 \(skip-gram, --sg\) or 0 \(CBOW, --cbow\)"),
    (dict(view="trigrams"), r"--view is 'trigrams'; choose one of tokens, bigrams"),
])
def test_bad_settings_are_refused(values, message):
    with pytest.raises(ConfigError, match=message):
        WordVecConfig(**values)


def test_embed_on_bad_input_exits_2_with_an_error_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["embed", "--corpus", str(tmp_path / "none.csv"), "--out", str(tmp_path / "wv")])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.startswith(f"error: {tmp_path / 'none.csv'}: corpus file not found")


def test_train_one_reads_the_bigram_view_of_an_embed_checkpoint_and_refuses_the_other_view(tmp_path, capsys):
    synthesize(400, seed=0)[0].to_csv(tmp_path / "train.csv", index=False)  # the texts train-one trains on
    corpus = [str(tmp_path / "train.csv")]
    embed(corpus, tmp_path / "pairs", "--view", "bigrams", "--min-count", "2")
    embed(corpus, tmp_path / "tokens")
    argv = ["train-one", "--space", "cpu", "--point", "textcnn_weighted_head_tail", "--synthetic-rows", "400",
            "--max-epochs", "1", "--threads", "1", "--device", "cpu", "--no-progress", "--set", "view=bigrams"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the checkpoint's pairs are the run's: no coverage warning
        cli.main([*argv, "--set", f"checkpoint={tmp_path / 'pairs'}"])
    printed = capsys.readouterr().out
    assert "view=bigrams" in printed and re.search(r"best: epoch 1, level-2 macro-F1 0\.\d{4}", printed), printed
    with pytest.raises(SystemExit) as exit_:
        cli.main([*argv, "--set", f"checkpoint={tmp_path / 'tokens'}"])
    assert exit_.value.code == 2
    assert "it holds vectors of tokens and `view` is 'bigrams'; set view=tokens, or embed with --view bigrams" in \
        capsys.readouterr().err


def _damage(directory, how):
    if how == "rows":
        (directory / VOCAB_FILE).write_text("，\n")
    elif how == "truncated":
        data = (directory / VECTORS_FILE).read_bytes()
        (directory / VECTORS_FILE).write_bytes(data[: len(data) // 2])
    elif how == "pickled":
        np.save(directory / VECTORS_FILE, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    elif how == "record":
        (directory / RECORD_FILE).unlink()


@pytest.mark.parametrize("how, message", [
    ("rows", r"vectors.npy has \d+ rows but vocab.txt 1 tokens"),
    ("truncated", r"damaged word-vector checkpoint \("),
    ("pickled", r"damaged word-vector checkpoint \(Array can.t be memory-mapped: Python objects"),
    ("record", r"is not a word-vector checkpoint: it has no wordvec.json"),
])
def test_a_damaged_checkpoint_is_refused_saying_how_to_write_one(corpus, tmp_path, how, message):
    train_vectors(WordVecConfig(**SMALL), corpus, tmp_path / "wv", progress=None)
    assert check_vectors_dir(tmp_path / "wv")[1] == 16
    _damage(tmp_path / "wv", how)
    with pytest.raises(ConfigError, match=message + r".*python -m search embed"):
        check_vectors_dir(tmp_path / "wv")
