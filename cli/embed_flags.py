"""The flags of `python -m search embed`: every dest of the vectors group is a `WordVecConfig` field."""

from __future__ import annotations

import argparse

from cli.flags import at_least
from model.wordvec import METHODS, VIEWS, WordVecConfig

_D = WordVecConfig()


def add_embed_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of `embed`; every dest of the vectors group is a `WordVecConfig` field."""
    io = p.add_argument_group("input and output")
    io.add_argument("--corpus", nargs="+", required=True, metavar="FILE",
                    help="unlabeled text: CSV files with a `text` column (train.csv and test.csv both serve) or "
                    "text files (any other suffix) with one document per line")
    io.add_argument("--out", required=True, metavar="DIR",
                    help="the checkpoint directory to write (vectors.npy, vocab.txt, wordvec.json); an earlier "
                    "embed output there is replaced, any other non-empty directory refused")
    io.add_argument("--quiet", action="store_true", help="no line per epoch")
    v = p.add_argument_group("vectors")
    v.add_argument("--method", default=_D.method, choices=list(METHODS),
                   help="word2vec, or fasttext (also learns character n-grams of each token)")
    v.add_argument("--view", default=_D.view, choices=list(VIEWS),
                   help="tokens, or bigrams: vectors of each token paired with the next, for the encoders' "
                   "`view: bigrams` (a second view of the text; the competition's text has 17x more pairs seen "
                   "twice than tokens, so pass --min-count 2 with it)")
    v.add_argument("--dim", type=at_least(1), default=_D.dim, help="vector size")
    v.add_argument("--window", type=at_least(1), default=_D.window, help="context tokens on each side")
    v.add_argument("--min-count", type=at_least(1), default=_D.min_count,
                   help="tokens rarer than this get no vector (the encoders start them at random)")
    v.add_argument("--epochs", type=at_least(1), default=_D.epochs, help="passes over the corpus")
    arch = v.add_mutually_exclusive_group()
    arch.add_argument("--sg", dest="sg", action="store_const", const=1, default=_D.sg,
                      help="skip-gram (the default: better vectors for rare tokens on a small corpus)")
    arch.add_argument("--cbow", dest="sg", action="store_const", const=0,
                      help="continuous bag of words (faster, smooths frequent tokens)")
    v.add_argument("--negative", type=at_least(1), default=_D.negative, help="negative samples per positive pair")
    v.add_argument("--seed", type=at_least(0), default=_D.seed, help="seed of the initial vectors and the sampling")
    r = p.add_argument_group("resources")
    r.add_argument("--threads", type=at_least(1), default=1,
                   help="gensim worker threads; more than 1 is faster but not reproducible (the OS orders them)")


def config_from_args(args: argparse.Namespace) -> WordVecConfig:
    return WordVecConfig.from_dict({name: getattr(args, name) for name in WordVecConfig.__dataclass_fields__})


