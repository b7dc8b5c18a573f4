"""Encoders: token ids -> contextual token states.

Contract: `forward(input_ids (B, T), mask (B, T) bool) -> (B, T, hidden_size)` with ids of the
run's vocabulary; `from_config(cfg, *, vocab, max_seq_len)` builds one (`vocab`: the run's tokens,
index = id); `word_embeddings` (the matrix adversarial training perturbs), `embeddings` (the
module with its own learning rate) and `hidden_size`. Nothing here downloads anything.

An encoder that shrinks the sequence (T' < T output positions, like `dpcnn`'s pooling) also has
`output_mask(mask (B, T) bool) -> (B, T') bool`, which output positions are real; its forward
returns (B, T', hidden_size). `output_mask(encoder, mask)` below gives the mask of any encoder's
output, and `Classifier` hands that to the RNN layer and the poolers, so every pooler sees a
mask matching its input. The encoders over word vectors (textcnn, dpcnn, bigru, bilstm) live in
model/wordvec_encoders.py.

`bert`, `albert` and `nezha` load a local checkpoint directory (`checkpoint`): its config, its
weights and its vocab.txt. The data is encoded once with the run's vocabulary; such an encoder
maps the run's ids to the checkpoint's through its vocab.txt (a token the checkpoint lacks becomes
its [UNK]).

A checkpoint is checked in two steps. `TrialConfig` runs the pure one (`check_config`: a directory
is named), so a config rebuilds on a machine without the files; `check_checkpoint` reads the
directory, in preflight before Ray starts and again when the encoder is built.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from transformers import AlbertConfig, AlbertModel, BertConfig, BertModel
from transformers.utils import logging as hf_logging

from model.checkpoint_files import inspect_checkpoint, read_config
from model.errors import ConfigError
from model.nezha import CONFIG_FILES, WEIGHT_FILES, NezhaConfig, NezhaModel, load_nezha
from model.registry import Registry

if TYPE_CHECKING:  # annotations only: config.py reads this module's registry (model/components.py)
    from model.config import TrialConfig

ENCODERS = Registry("encoder")


@ENCODERS.register("tiny")
class TinyBert(nn.Module):
    """A randomly initialised BERT whose dimensions come from the trial config."""

    def __init__(self, *, bert_config: BertConfig):
        super().__init__()
        self.bert = BertModel(bert_config, add_pooling_layer=False)
        self.hidden_size = bert_config.hidden_size

    @classmethod
    def from_config(cls, cfg: TrialConfig, *, vocab: Sequence[str], max_seq_len: int) -> TinyBert:
        return cls(bert_config=BertConfig(
            vocab_size=len(vocab),
            hidden_size=cfg.hidden_size,
            num_hidden_layers=cfg.num_layers,
            num_attention_heads=cfg.num_heads,
            intermediate_size=cfg.intermediate_size,
            hidden_dropout_prob=cfg.encoder_dropout,
            attention_probs_dropout_prob=cfg.encoder_dropout,
            max_position_embeddings=max_seq_len,
            pad_token_id=0,
        ))

    @property
    def word_embeddings(self) -> nn.Embedding:
        return self.bert.embeddings.word_embeddings

    @property
    def embeddings(self) -> nn.Module:
        """Everything before the first transformer layer (its own learning rate group)."""
        return self.bert.embeddings

    def forward(self, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.bert(input_ids=input_ids, attention_mask=mask.long()).last_hidden_state


def output_mask(encoder: nn.Module, mask: torch.Tensor) -> torch.Tensor:
    """(B, T) -> (B, T'): the mask of `encoder`'s output positions; `mask` itself unless the
    encoder shrinks the sequence (it then has `output_mask`)."""
    shrink = getattr(encoder, "output_mask", None)
    return mask if shrink is None else shrink(mask)


def check_checkpoint(cfg: TrialConfig, *, max_seq_len: int | None = None) -> None:
    """Raise `ConfigError`, saying the fix, unless the checkpoint `cfg.encoder` loads is a usable
    directory (encoders without a checkpoint, like `tiny`, pass) and, given `max_seq_len`, has that
    many positions. Reads the filesystem, so it runs where the files must be: in preflight
    (rundir/preflight.py) and when the encoder is built."""
    encoder = ENCODERS.get_class(cfg.encoder, field="encoder")
    check = getattr(encoder, "check_checkpoint", None)
    if check is not None:
        check(cfg)
    if max_seq_len is not None and isinstance(encoder, type) and issubclass(encoder, CheckpointEncoder):
        positions = inspect_checkpoint(cfg.checkpoint).max_positions
        if max_seq_len > positions:
            raise ConfigError(f"--max-seq-len {max_seq_len} exceeds the {positions} positions of the checkpoint in "
                              f"{cfg.checkpoint}; pass --max-seq-len {positions} or less (or pretrain with a larger "
                              "--max-seq-len)")


def encoder_architecture(cfg: TrialConfig) -> dict | None:
    """What a model directory keeps to build `cfg`'s encoder without its checkpoint: the config of
    a pretraining checkpoint (`CheckpointEncoder.architecture`); None for the other encoders."""
    encoder = ENCODERS.get_class(cfg.encoder, field="encoder")
    return encoder.architecture(cfg) if hasattr(encoder, "from_architecture") else None


def check_checkpoint_used(configs: Sequence[TrialConfig]) -> None:
    """Refuse a `checkpoint` that no config in `configs` (every one a run can train) loads: the
    encoders without a checkpoint (like `tiny`) would ignore it without a word."""
    named = [cfg for cfg in configs if cfg.checkpoint]
    if named and not any(hasattr(ENCODERS.get_class(cfg.encoder, field="encoder"), "check_checkpoint")
                         for cfg in named):
        encoders = ", ".join(sorted({cfg.encoder for cfg in named}))
        raise ConfigError(f"`checkpoint` is {named[0].checkpoint!r}, but the encoder ({encoders}) loads no checkpoint: "
                          "it would be ignored. Leave checkpoint out, or choose an encoder that loads one (word "
                          "vectors: textcnn, dpcnn, bigru, bilstm, e.g. --space cpu; a pretraining checkpoint: bert, "
                          "albert, nezha, e.g. --space pretrained)")


# A checkpoint whose vocab.txt lacks more than this share of the run's tokens is refused: they would all
# become its [UNK], and fine-tuning would learn from next to nothing (a checkpoint pretrained on other text).
MAX_UNKNOWN_SHARE = 0.5


def check_vocab_coverage(cfg: TrialConfig, vocab: Sequence[str]) -> None:
    """Refuse a checkpoint encoder whose vocab.txt knows too few of the run's tokens (`vocab`)."""
    encoder = ENCODERS.get_class(cfg.encoder, field="encoder")
    if not (isinstance(encoder, type) and issubclass(encoder, CheckpointEncoder)):
        return
    path = Path(cfg.checkpoint) / "vocab.txt"
    known = set(read_vocab(path))
    words = [t for t in vocab if not (t.startswith("[") and t.endswith("]"))]  # not [PAD], [UNK], ...
    unknown = sum(t not in known for t in words)
    if words and unknown / len(words) > MAX_UNKNOWN_SHARE:
        raise ConfigError(f"{path} ({len(known)} tokens) lacks {unknown} of the {len(words)} tokens of the training "
                          f"data ({unknown / len(words):.0%}): they would all become [UNK]. The checkpoint was "
                          "pretrained on other text: pretrain on this corpus (`python -m search pretrain --corpus "
                          "train.csv test.csv`), or pass the checkpoint's own vocab.txt")


def read_vocab(path: Path) -> dict[str, int]:
    """vocab.txt: one token per line, the line number is its id."""
    return {line.rstrip("\n"): i for i, line in enumerate(path.read_text(encoding="utf-8").splitlines())}


class CheckpointEncoder(nn.Module):
    """An encoder loaded from a local checkpoint directory, fed through a map from the run's ids
    to the checkpoint's vocabulary."""

    needs = ("vocab.txt",)  # files a checkpoint directory must hold (besides config and weights)

    def __init__(self, *, model: nn.Module, id_map: torch.Tensor, hidden_size: int, max_positions: int):
        super().__init__()
        self.model = model
        self.register_buffer("id_map", id_map)  # (run vocabulary,) checkpoint id of each run id
        self.hidden_size, self.max_positions = hidden_size, max_positions

    @staticmethod
    def _where(cfg: TrialConfig) -> str:
        return f"`checkpoint` is {cfg.checkpoint!r}, but encoder {cfg.encoder!r} loads a local checkpoint:"

    @classmethod
    def check_config(cls, cfg: TrialConfig) -> None:
        """Pure (no I/O), run by `TrialConfig`: a checkpoint directory is named at all."""
        if not cfg.checkpoint:
            raise ConfigError(f"{cls._where(cfg)} set it to a directory with {CONFIG_FILES[0]}, vocab.txt and "
                              "the weights")

    @classmethod
    def check_checkpoint(cls, cfg: TrialConfig) -> None:
        """Reads the filesystem: fail unless `cfg.checkpoint` is a directory with a config, weights
        and vocab.txt. Run by preflight and by `from_config`, never by `TrialConfig`."""
        cls.check_config(cfg)
        where = cls._where(cfg)
        directory = Path(cfg.checkpoint)
        if not directory.is_dir():
            raise ConfigError(f"{where} that directory does not exist (on a cluster, every node must see it)")
        missing = [n for n in cls.needs if not (directory / n).exists()]
        if not any((directory / n).exists() for n in CONFIG_FILES):
            missing.append(" or ".join(CONFIG_FILES))
        if not any((directory / n).exists() for n in WEIGHT_FILES):
            missing.append(" or ".join(WEIGHT_FILES))
        if missing:
            raise ConfigError(f"{where} {directory} has no {', '.join(missing)}")
        inspect_checkpoint(directory)  # readable, and its config, weights and vocab.txt agree

    @staticmethod
    def map_ids(vocab: Sequence[str], checkpoint_vocab: dict[str, int]) -> torch.Tensor:
        unknown = checkpoint_vocab.get("[UNK]", 0)
        return torch.tensor([checkpoint_vocab.get(token, unknown) for token in vocab], dtype=torch.long)

    @classmethod
    def load(cls, directory: Path, cfg: TrialConfig) -> tuple[nn.Module, int, int]:
        """(model, hidden size, longest sequence it takes)."""
        raise NotImplementedError

    @classmethod
    def untrained(cls, architecture: dict, cfg: TrialConfig) -> nn.Module:
        """The model of the checkpoint's config `architecture`, its weights not loaded."""
        raise NotImplementedError

    @classmethod
    def architecture(cls, cfg: TrialConfig) -> dict:
        """The checkpoint's config values: what a model directory keeps (model.json) to build this
        encoder again without the checkpoint (`from_architecture`), its weights being its own."""
        return read_config(Path(cfg.checkpoint))[1]

    @classmethod
    def from_architecture(cls, architecture: dict, cfg: TrialConfig, *, vocab: Sequence[str]) -> CheckpointEncoder:
        """The encoder to load saved weights into (the id map among them), built from `architecture`."""
        model = cls.untrained(architecture, cfg)
        return cls(model=model, id_map=torch.zeros(len(vocab), dtype=torch.long),
                   hidden_size=model.config.hidden_size, max_positions=model.config.max_position_embeddings)

    @classmethod
    def from_config(cls, cfg: TrialConfig, *, vocab: Sequence[str], max_seq_len: int) -> CheckpointEncoder:
        cls.check_checkpoint(cfg)
        directory = Path(cfg.checkpoint)
        hf_logging.disable_progress_bar()  # no loading bar in every trial's log
        model, hidden_size, max_positions = cls.load(directory, cfg)
        if max_seq_len > max_positions:
            raise ConfigError(f"--max-seq-len {max_seq_len} exceeds the {max_positions} positions of the checkpoint "
                              f"in {directory}; lower --max-seq-len")
        id_map = cls.map_ids(vocab, read_vocab(directory / "vocab.txt"))
        return cls(model=model, id_map=id_map, hidden_size=hidden_size, max_positions=max_positions)

    @property
    def word_embeddings(self) -> nn.Embedding:
        return self.model.embeddings.word_embeddings

    @property
    def embeddings(self) -> nn.Module:
        return self.model.embeddings

    def forward(self, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        ids = self.id_map[input_ids]
        return self.model(input_ids=ids, attention_mask=mask.long()).last_hidden_state


def _dropout(cfg: TrialConfig) -> dict:
    return {"hidden_dropout_prob": cfg.encoder_dropout, "attention_probs_dropout_prob": cfg.encoder_dropout}


# A pretraining checkpoint (`python -m search pretrain`, or any *ForMaskedLM / *ForPreTraining one)
# carries its head's weights under these prefixes; the encoder does not use them, as expected.
PRETRAINING_HEAD_PREFIXES = ("cls.", "predictions.", "sop_classifier.")


def _from_pretrained(model_class: type, directory: Path, **kwargs: Any) -> nn.Module:
    """`model_class.from_pretrained` without transformers' load report in every trial's log.

    The report lists the pretraining head's weights as UNEXPECTED on every load of a pretraining
    checkpoint, which is expected and buries what matters. We check the load ourselves instead:
    encoder weights the checkpoint lacks (they would train from random init) and foreign weights
    are warned about, in our words, once.
    """
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        model, info = model_class.from_pretrained(directory, local_files_only=True, output_loading_info=True,
                                                  **kwargs)
    finally:
        hf_logging.set_verbosity(verbosity)
    missing = sorted(info["missing_keys"])
    foreign = sorted(k for k in info["unexpected_keys"] if not k.startswith(PRETRAINING_HEAD_PREFIXES))
    if missing:
        warnings.warn(f"{directory}: {len(missing)} encoder weights are not in the checkpoint and start from "
                      f"random init ({', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''})", stacklevel=3)
    if foreign:
        warnings.warn(f"{directory}: {len(foreign)} checkpoint weights are not used by the encoder "
                      f"({', '.join(foreign[:5])}{' ...' if len(foreign) > 5 else ''})", stacklevel=3)
    return model


@ENCODERS.register("bert")
class PretrainedBert(CheckpointEncoder):
    """A BERT (or RoBERTa-wwm-style BERT) checkpoint in Hugging Face format; dropout from the config."""

    @classmethod
    def load(cls, directory: Path, cfg: TrialConfig) -> tuple[nn.Module, int, int]:
        model = _from_pretrained(BertModel, directory, add_pooling_layer=False, **_dropout(cfg))
        return model, model.config.hidden_size, model.config.max_position_embeddings

    @classmethod
    def untrained(cls, architecture: dict, cfg: TrialConfig) -> nn.Module:
        return BertModel(BertConfig(**{**architecture, **_dropout(cfg)}), add_pooling_layer=False)


@ENCODERS.register("albert")
class PretrainedAlbert(CheckpointEncoder):
    """An ALBERT checkpoint in Hugging Face format with a vocab.txt (as the Chinese ALBERTs have)."""

    @classmethod
    def load(cls, directory: Path, cfg: TrialConfig) -> tuple[nn.Module, int, int]:
        model = _from_pretrained(AlbertModel, directory, add_pooling_layer=False, **_dropout(cfg))
        return model, model.config.hidden_size, model.config.max_position_embeddings

    @classmethod
    def untrained(cls, architecture: dict, cfg: TrialConfig) -> nn.Module:
        return AlbertModel(AlbertConfig(**{**architecture, **_dropout(cfg)}), add_pooling_layer=False)


@ENCODERS.register("nezha")
class PretrainedNezha(CheckpointEncoder):
    """A NEZHA checkpoint (model/nezha.py): config.json or bert_config.json, and the weights."""

    @classmethod
    def load(cls, directory: Path, cfg: TrialConfig) -> tuple[nn.Module, int, int]:
        model = load_nezha(directory, **_dropout(cfg))
        return model, model.config.hidden_size, model.config.max_position_embeddings

    @classmethod
    def untrained(cls, architecture: dict, cfg: TrialConfig) -> nn.Module:
        return NezhaModel(NezhaConfig.from_dict({**architecture, **_dropout(cfg)}))

    def forward(self, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.model(self.id_map[input_ids], mask)
