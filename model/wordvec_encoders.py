"""Encoders over static word vectors: TextCNN, DPCNN, BiGRU and BiLSTM.

The competition's cheap strong models: word vectors trained on the task's own text
(`python -m search embed`, model/wordvec.py) feeding a convolutional or recurrent encoder. They
follow the encoder contract of model/encoders.py; `word_embeddings` and `embeddings` are the same
`nn.Embedding` (adversarial training perturbs it, `embedding_lr` and `freeze_embeddings` act on it).

The embedding is initialised from a word-vector checkpoint when `checkpoint` names one: each token
of the run's vocabulary gets the checkpoint's vector of the same token; tokens the checkpoint lacks
(the special tokens, tokens below its min_count) get N(0, s^2) with s the standard deviation of the
checkpoint's vectors, so they start on the same scale; [PAD] is zero and never trained
(`padding_idx`). Without a checkpoint, `nn.Embedding`'s N(0, 1) init, `embedding_dim` wide (128
when 0). All random draws come from the global generator, so a seed decides them.

Padding: every encoder zeroes padded positions before each convolution or RNN, so a convolution at
the last real tokens sees exactly the zeros of its own boundary padding, and appending [PAD]
tokens to a batch changes no output at a real position.

`dpcnn` shrinks the sequence (each block halves it). It has `output_mask(mask (B, T)) -> (B, T')`,
the mask of its output positions, which `Classifier` passes on to the RNN layer and the poolers
(`model.encoders.output_mask`).

A checkpoint is checked in two steps, like the other checkpoint encoders: `check_config` is pure
(run by `TrialConfig`); `check_checkpoint` reads the directory (preflight, before Ray starts, and
again when the encoder is built) and refuses a missing or damaged one, or an `embedding_dim` that
differs from the vectors'.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from model.data import PAD
from model.encoders import ENCODERS
from model.errors import ConfigError
from model.rnn import run_packed
from model.wordvec import WordVectors, check_vectors_dir, load_vectors, split_pair, vectors_view

if TYPE_CHECKING:  # annotations only: config.py reads this module's registry (model/components.py)
    from model.config import TrialConfig

RANDOM_INIT_DIM = 128  # `embedding_dim` 0 without a checkpoint
# Below this share of the run's tokens found in the checkpoint, the vectors were most likely
# trained on another corpus (the tokens are desensitized ids, meaningless elsewhere): warn.
MIN_COVERAGE = 0.5


# ----------------------------------------------------------------------------- the embedding


def vectors_matrix(vocab: Sequence[str], vectors: WordVectors, *, padding_idx: int) -> tuple[torch.Tensor, int]:
    """((len(vocab), dim) float32 initial embedding, how many run tokens the checkpoint has).

    Row i is the checkpoint's vector of token vocab[i]; tokens it lacks get N(0, s^2), s the
    standard deviation of its vectors; [PAD] is zero."""
    index = {token: row for row, token in enumerate(vectors.tokens)}
    rows = torch.tensor([index.get(token, -1) for token in vocab], dtype=torch.long)  # (V_run,), -1: missing
    source = torch.from_numpy(vectors.vectors)  # (V_ckpt, dim)
    # Drawn for every row, found or not, so the generator advances the same whatever the overlap.
    weight = torch.empty(len(vocab), vectors.dim).normal_(0.0, float(source.std()) if source.numel() > 1 else 1.0)
    found = rows >= 0
    weight[found] = source[rows[found]]
    weight[padding_idx] = 0.0
    return weight, int(found.sum())


def build_embedding(cfg: TrialConfig, vocab: Sequence[str]) -> nn.Embedding:
    """The word embedding of the run's vocabulary: from `cfg.checkpoint`'s vectors, or random."""
    if PAD not in vocab:
        raise ConfigError(f"the run's vocabulary has no {PAD} token; build it with model.data.Vocab.build")
    padding_idx = list(vocab).index(PAD)
    if not cfg.checkpoint:
        return nn.Embedding(len(vocab), cfg.embedding_dim or RANDOM_INIT_DIM, padding_idx=padding_idx)
    vectors = load_vectors(cfg.checkpoint)
    weight, found = vectors_matrix(vocab, vectors, padding_idx=padding_idx)
    if found < MIN_COVERAGE * len(vocab):
        warnings.warn(f"{cfg.checkpoint}: only {found} of the run's {len(vocab)} tokens have a vector there; the "
                      "others start at random. Were the vectors trained on this task's text (`python -m search "
                      "embed --corpus train.csv test.csv ...`)?", stacklevel=3)
    return nn.Embedding.from_pretrained(weight, freeze=False, padding_idx=padding_idx)


# ----------------------------------------------------------------------------- the bigram view


class BigramIndex(nn.Module):
    """The bigram view's vocabulary inside the model: which embedding row each (token, next token)
    pair of the run's ids reads.

    `keys` (a buffer, saved with the weights) is the sorted `first * vocab_size + second` of the
    pairs the checkpoint has vectors for, expressed in the run's token ids; pair i of `keys` reads
    row i + 2. Row 0 is [PAD] (zero, never trained), row 1 every other pair (rarer than the
    checkpoint's min_count, or with a token the run or the checkpoint lacks, or with [CLS]/[SEP]).
    An exact vocabulary, not hashing: on the competition data hashed buckets lost 0.01-0.03
    level-2 macro-F1 to collisions (docs/results.md). Keeping it in the model leaves the data path,
    `predict` included, on token ids.
    """

    PAD_ROW, OTHER_ROW, FIRST_ROW = 0, 1, 2

    def __init__(self, keys: torch.Tensor, *, vocab_size: int):
        super().__init__()
        self.vocab_size = vocab_size
        self.register_buffer("keys", keys)

    def forward(self, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, T) token ids -> (B, T) embedding rows: position t reads the pair (t, t + 1), the last
        position of each text and padded positions [PAD]."""
        key = input_ids[:, :-1] * self.vocab_size + input_ids[:, 1:]  # (B, T - 1)
        at = torch.searchsorted(self.keys, key).clamp(max=max(len(self.keys) - 1, 0))
        found = self.keys[at] == key if len(self.keys) else torch.zeros_like(key, dtype=torch.bool)
        rows = torch.where(found, at + self.FIRST_ROW, torch.full_like(at, self.OTHER_ROW))
        rows = rows.masked_fill(~mask[:, 1:], self.PAD_ROW)  # a pair is real when its second token is
        return F.pad(rows, (0, 1), value=self.PAD_ROW)


def bigram_embedding(vocab: Sequence[str], vectors: WordVectors) -> tuple[nn.Embedding, BigramIndex, float]:
    """The bigram view's embedding and index from a checkpoint of token pairs (`embed --view
    bigrams`), and the share of its pairs the run's vocabulary can express."""
    index = {token: i for i, token in enumerate(vocab)}
    keys, rows = [], []
    for row, pair in enumerate(vectors.tokens):
        first, second = split_pair(pair)
        if first in index and second in index:
            keys.append(index[first] * len(vocab) + index[second])
            rows.append(row)
    order = sorted(range(len(keys)), key=keys.__getitem__)
    source = torch.from_numpy(vectors.vectors)
    weight = torch.empty(BigramIndex.FIRST_ROW + len(keys), vectors.dim).normal_(
        0.0, float(source.std()) if source.numel() > 1 else 1.0)
    weight[BigramIndex.PAD_ROW] = 0.0
    weight[BigramIndex.FIRST_ROW:] = source[torch.tensor([rows[i] for i in order], dtype=torch.long)]
    bigrams = BigramIndex(torch.tensor([keys[i] for i in order], dtype=torch.long), vocab_size=len(vocab))
    embedding = nn.Embedding.from_pretrained(weight, freeze=False, padding_idx=BigramIndex.PAD_ROW)
    return embedding, bigrams, len(keys) / max(len(vectors.tokens), 1)


class WordVecEncoder(nn.Module):
    """The shared part: the word embedding, dropout on it, padded positions zeroed, checkpoint checks.
    A subclass gives `build(cfg, embedding=...)`, `output_width(cfg)` and `forward`.

    With `view` bigrams the embedding's rows are token pairs, and `bigrams` (a `BigramIndex`) maps
    the input ids to them; the encoders after the embedding are the same."""

    hidden_size: int
    views = ("tokens", "bigrams")  # TrialConfig refuses a `view` an encoder lacks

    def __init__(self, *, embedding: nn.Embedding, dropout: float):
        super().__init__()
        self.embedding = embedding
        self.dropout = nn.Dropout(dropout)
        self.bigrams: BigramIndex | None = None  # set by `with_bigrams`

    @classmethod
    def output_width(cls, cfg: TrialConfig) -> int:
        """The encoder's hidden_size under `cfg` (pure: the cross-field rules need it)."""
        raise NotImplementedError

    @classmethod
    def build(cls, cfg: TrialConfig, *, embedding: nn.Embedding) -> WordVecEncoder:
        raise NotImplementedError

    @classmethod
    def check_config(cls, cfg: TrialConfig) -> None:
        """Pure (no I/O), run by `TrialConfig`: the bigram view needs a checkpoint (its pairs are the
        vocabulary); an `rnn` layer after the encoder splits its width into two directions, so the
        width must be even."""
        if cfg.view == "bigrams" and not cfg.checkpoint:
            raise ConfigError(f"`view` bigrams (encoder {cfg.encoder!r}) takes its pairs from a checkpoint, but "
                              "`checkpoint` is empty; write one with `python -m search embed --view bigrams "
                              "--min-count 2 --corpus FILE... --out DIR` and set checkpoint=DIR")
        width = cls.output_width(cfg)
        if cfg.rnn != "none" and width % 2:
            raise ConfigError(f"encoder {cfg.encoder!r} is {width} wide (odd) under cnn_filters {cfg.cnn_filters} "
                              f"and cnn_kernels {cfg.cnn_kernels!r}, but `rnn` {cfg.rnn!r} needs an even width; "
                              "make cnn_filters even")

    @classmethod
    def check_checkpoint(cls, cfg: TrialConfig) -> None:
        """Reads the filesystem (preflight and `from_config`, never `TrialConfig`): a named checkpoint
        is a sound word-vector directory whose size `embedding_dim` (when nonzero) agrees with."""
        if not cfg.checkpoint:
            return
        where = f"`checkpoint` is {cfg.checkpoint!r} (word vectors of encoder {cfg.encoder!r}), but"
        try:
            _, dim = check_vectors_dir(cfg.checkpoint)
        except ConfigError as err:
            raise ConfigError(f"{where} {err}") from None
        view = vectors_view(cfg.checkpoint)
        if view != cfg.view:
            raise ConfigError(f"{where} it holds vectors of {view} and `view` is {cfg.view!r}; set view={view}, or "
                              f"embed with --view {cfg.view}")
        if cfg.embedding_dim and cfg.embedding_dim != dim:
            raise ConfigError(f"{where} its vectors have {dim} dimensions and `embedding_dim` is {cfg.embedding_dim}; "
                              f"set embedding_dim 0 (take the checkpoint's) or {dim}, or embed with --dim "
                              f"{cfg.embedding_dim}")

    @classmethod
    def from_weights(cls, cfg: TrialConfig, weights: dict[str, torch.Tensor], *, vocab: Sequence[str]
                     ) -> WordVecEncoder:
        """The encoder the saved `weights` (its state dict) load into, built without reading the
        checkpoint: the vectors only initialise the embedding the weights replace, so the saved
        shapes are all that is needed (model/network.py `build_for_weights`)."""
        rows, dim = weights["embedding.weight"].shape
        if cfg.view == "bigrams":
            padding_idx = BigramIndex.PAD_ROW
        else:
            padding_idx = list(vocab).index(PAD)
        embedding = nn.Embedding(rows, dim, padding_idx=padding_idx)
        standalone = dataclasses.replace(cfg, checkpoint="", embedding_dim=dim, view="tokens")
        encoder = cls.build(standalone, embedding=embedding)
        if cfg.view == "bigrams":
            encoder.with_bigrams(BigramIndex(torch.zeros_like(weights["bigrams.keys"]), vocab_size=len(vocab)))
        return encoder

    @classmethod
    def from_config(cls, cfg: TrialConfig, *, vocab: Sequence[str], max_seq_len: int) -> WordVecEncoder:
        cls.check_checkpoint(cfg)
        if cfg.view != "bigrams":
            return cls.build(cfg, embedding=build_embedding(cfg, vocab))
        embedding, bigrams, placed = bigram_embedding(vocab, load_vectors(cfg.checkpoint))
        if placed < MIN_COVERAGE:
            warnings.warn(f"{cfg.checkpoint}: only {placed:.0%} of its token pairs are pairs of the run's tokens; "
                          "were the vectors trained on this task's text?", stacklevel=2)
        return cls.build(cfg, embedding=embedding).with_bigrams(bigrams)

    def with_bigrams(self, bigrams: BigramIndex) -> WordVecEncoder:
        self.bigrams = bigrams
        return self

    @property
    def word_embeddings(self) -> nn.Embedding:
        return self.embedding

    @property
    def embeddings(self) -> nn.Module:
        return self.embedding

    def embed(self, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, T) -> (B, T, E) word vectors (of the bigram starting at each position, with `view`
        bigrams) after dropout, zeros at padded positions."""
        rows = input_ids if self.bigrams is None else self.bigrams(input_ids, mask)
        return self.dropout(self.embedding(rows)).masked_fill(~mask.unsqueeze(-1), 0.0)


# ----------------------------------------------------------------------------- TextCNN


@ENCODERS.register("textcnn")
class TextCNN(WordVecEncoder):
    """Kim (2014): convolutions of several widths in parallel over the word vectors, ReLU.

    One feature vector per position (zero `same` padding: a window may reach past the text's ends,
    which also gives texts shorter than a kernel their features), the widths' features concatenated:
    (B, T) -> (B, T, cnn_filters * widths). The `max` pooler over them is Kim's max-over-time
    pooling; `mean`, `attention` and the others work as well.
    """

    def __init__(self, *, embedding: nn.Embedding, dropout: float, filters: int, kernels: Sequence[int]):
        super().__init__(embedding=embedding, dropout=dropout)
        dim = embedding.embedding_dim
        self.convs = nn.ModuleList(nn.Conv1d(dim, filters, width) for width in kernels)
        self.hidden_size = filters * len(kernels)

    @classmethod
    def output_width(cls, cfg: TrialConfig) -> int:
        return cfg.cnn_filters * len(cfg.kernel_widths)

    @classmethod
    def build(cls, cfg: TrialConfig, *, embedding: nn.Embedding) -> TextCNN:
        return cls(embedding=embedding, dropout=cfg.encoder_dropout, filters=cfg.cnn_filters,
                   kernels=cfg.kernel_widths)

    def forward(self, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.embed(input_ids, mask).transpose(1, 2)  # (B, T, E) -> (B, E, T)
        # `same` padding by hand, (w - 1) // 2 zeros before and w // 2 after: torch's padding="same"
        # does the same but warns on every even width.
        features = torch.cat([F.relu(conv(F.pad(x, ((conv.kernel_size[0] - 1) // 2, conv.kernel_size[0] // 2))))
                              for conv in self.convs], dim=1)  # (B, F * K, T)
        return features.transpose(1, 2).masked_fill(~mask.unsqueeze(-1), 0.0)  # (B, T, F * K)


# ----------------------------------------------------------------------------- DPCNN


class PreActivationBlock(nn.Module):
    """Two convolutions of width 3, each after a ReLU (pre-activation, He et al. 2016), plus the
    shortcut: x + W2 relu(W1 relu(x)). (B, C, T) -> (B, C, T), zeros at padded positions."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv1d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv1d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        """`pad`: (B, 1, T) True at padded positions; `x` is zero there."""
        h = self.conv1(F.relu(x)).masked_fill(pad, 0.0)
        return x + self.conv2(F.relu(h)).masked_fill(pad, 0.0)


def downsample(x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """DPCNN's max pooling of size 3, stride 2, over the real positions only:
    (B, C, T), (B, T) -> (B, C, ceil(T / 2)), (B, ceil(T / 2)).

    Output i pools positions 2i..2i+2 and is real exactly when position 2i is, so the output's
    length and values at real positions depend on the text, not on how far the batch is padded.
    """
    x = x.masked_fill(~mask.unsqueeze(1), float("-inf"))
    pooled = F.max_pool1d(F.pad(x, (0, 2), value=float("-inf")), kernel_size=3, stride=2)  # (B, C, ceil(T / 2))
    mask = mask[:, ::2]
    return pooled.masked_fill(~mask.unsqueeze(1), 0.0), mask


@ENCODERS.register("dpcnn")
class DPCNN(WordVecEncoder):
    """Deep pyramid CNN (Johnson & Zhang 2017).

    Region embedding (a width-3 convolution of the word vectors to `cnn_filters` feature maps),
    a pre-activation block with shortcut, then `dpcnn_blocks` times: max-pool downsampling (size 3,
    stride 2) and a pre-activation block with shortcut. The feature maps stay `cnn_filters` wide,
    so each block costs half the one before. (B, T) -> (B, ceil(T / 2^blocks), cnn_filters).
    """

    def __init__(self, *, embedding: nn.Embedding, dropout: float, filters: int, blocks: int):
        super().__init__(embedding=embedding, dropout=dropout)
        self.region = nn.Conv1d(embedding.embedding_dim, filters, 3, padding=1)
        self.first = PreActivationBlock(filters)
        self.blocks = nn.ModuleList(PreActivationBlock(filters) for _ in range(blocks))
        self.hidden_size = filters

    @classmethod
    def output_width(cls, cfg: TrialConfig) -> int:
        return cfg.cnn_filters

    @classmethod
    def build(cls, cfg: TrialConfig, *, embedding: nn.Embedding) -> DPCNN:
        return cls(embedding=embedding, dropout=cfg.encoder_dropout, filters=cfg.cnn_filters, blocks=cfg.dpcnn_blocks)

    def output_mask(self, mask: torch.Tensor) -> torch.Tensor:
        """(B, T) -> (B, ceil(T / 2^blocks)): which output positions are real."""
        for _ in self.blocks:
            mask = mask[:, ::2]
        return mask

    def forward(self, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.embed(input_ids, mask).transpose(1, 2)  # (B, T, E) -> (B, E, T)
        x = self.region(x).masked_fill(~mask.unsqueeze(1), 0.0)  # (B, C, T)
        x = self.first(x, ~mask.unsqueeze(1))
        for block in self.blocks:
            x, mask = downsample(x, mask)  # (B, C, T) -> (B, C, ceil(T / 2))
            x = block(x, ~mask.unsqueeze(1))
        return x.transpose(1, 2)  # (B, T', C)


# ----------------------------------------------------------------------------- BiGRU, BiLSTM


class _BiRNNEncoder(WordVecEncoder):
    """A bidirectional RNN (`rnn_layers` deep, `rnn_hidden` units per direction) over the word
    vectors, on packed sequences: (B, T) -> (B, T, 2 * rnn_hidden), zeros at padded positions."""

    kind: type[nn.RNNBase] = nn.GRU

    def __init__(self, *, embedding: nn.Embedding, dropout: float, hidden: int, layers: int):
        super().__init__(embedding=embedding, dropout=dropout)
        self.rnn = self.kind(embedding.embedding_dim, hidden, num_layers=layers, batch_first=True,
                             bidirectional=True, dropout=dropout if layers > 1 else 0.0)
        self.hidden_size = 2 * hidden

    @classmethod
    def output_width(cls, cfg: TrialConfig) -> int:
        return 2 * cfg.rnn_hidden

    @classmethod
    def build(cls, cfg: TrialConfig, *, embedding: nn.Embedding) -> _BiRNNEncoder:
        return cls(embedding=embedding, dropout=cfg.encoder_dropout, hidden=cfg.rnn_hidden, layers=cfg.rnn_layers)

    def forward(self, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return run_packed([self.rnn], self.embed(input_ids, mask), mask)  # (B, T, 2 * rnn_hidden)


@ENCODERS.register("bigru")
class BiGRUEncoder(_BiRNNEncoder):
    kind = nn.GRU


@ENCODERS.register("bilstm")
class BiLSTMEncoder(_BiRNNEncoder):
    kind = nn.LSTM
