"""The classifier a trial trains: encoder -> rnn layer -> pooler(s) -> heads."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from model.data import Truncation
from model.encoders import ENCODERS, output_mask
from model.heads import MultiSampleDropoutHead
from model.poolers import build_pooler
from model.rnn import RNN_LAYERS

if TYPE_CHECKING:  # annotations only
    from model.config import TrialConfig


@dataclass
class Output:
    logits: torch.Tensor  # (B, num_labels) level-2 logits
    features: torch.Tensor  # (B, D) pooled features, what the heads see
    level1_logits: torch.Tensor | None  # (B, num_level1) from the auxiliary head, if any


class Classifier(nn.Module):
    def __init__(self, *, encoder: nn.Module, sequence: nn.Module, pooler: nn.Module, head: MultiSampleDropoutHead,
                 level1_head: nn.Module | None = None, truncation: Truncation = Truncation()):
        super().__init__()
        # How its inputs are cut from texts longer than max_seq_len (`truncation`, `head_share`):
        # part of what the model was trained on, so every batch built for it (training, evaluation,
        # predict on a test file) is cut the same way (model/inference.py `batches`). Not a weight:
        # a saved model gets it back from its TrialConfig.
        self.truncation = truncation
        self.encoder = encoder
        # The `rnn` layer (model/rnn.py). The attribute keeps its old name: it is the key prefix of
        # these weights in every saved state dict (trial checkpoints, fold models).
        self.sequence = sequence
        self.pooler = pooler
        self.head = head
        self.level1_head = level1_head

    def forward(self, input_ids: torch.Tensor, mask: torch.Tensor) -> Output:
        states = self.encoder(input_ids, mask)  # (B, T) -> (B, T', H); T' < T where the encoder shrinks it (dpcnn)
        mask = output_mask(self.encoder, mask)  # (B, T) -> (B, T')
        hidden = self.sequence(states, mask)  # (B, T', H)
        features = self.pooler(hidden, mask)  # (B, T', H) -> (B, D)
        level1 = self.level1_head(features) if self.level1_head is not None else None
        return Output(logits=self.head(features), features=features, level1_logits=level1)

    @property
    def class_embeddings(self) -> torch.Tensor:
        """(num_labels, D): the level-2 classifier's weight rows."""
        return self.head.classifier.weight


def build_for_weights(cfg: TrialConfig, weights: dict[str, torch.Tensor], *, vocab: Sequence[str],
                      max_seq_len: int, num_labels: int, num_level1: int = 0,
                      architecture: dict | None = None) -> Classifier:
    """The classifier `weights` (a state dict of `build_model(cfg, ...)`'s) load into, built without
    reading the checkpoint whose weights they replace, so a saved model still loads after that
    directory moved or went: a word-vector encoder needs only the saved shapes (`from_weights`), a
    pretraining checkpoint's encoder its config, which a model directory keeps (`architecture`,
    model/encoders.py `encoder_architecture`). Without `architecture` such an encoder reads its
    checkpoint as in training (a search trial's checkpoint)."""
    kind = ENCODERS.get_class(cfg.encoder, field="encoder")
    encoder = None
    if architecture is not None and hasattr(kind, "from_architecture"):
        encoder = kind.from_architecture(architecture, cfg, vocab=vocab)
    elif hasattr(kind, "from_weights"):
        prefix = "encoder."  # Classifier.encoder
        encoder = kind.from_weights(cfg, {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)},
                                    vocab=vocab)
    return build_model(cfg, vocab=vocab, max_seq_len=max_seq_len, num_labels=num_labels, num_level1=num_level1,
                       encoder=encoder)


def build_model(cfg: TrialConfig, *, vocab: Sequence[str], max_seq_len: int, num_labels: int,
                num_level1: int = 0, encoder: nn.Module | None = None) -> Classifier:
    """`vocab`: the run's tokens (index = id), which the input ids refer to. `encoder`: one built
    already (`build_for_weights`), else `cfg`'s from its registry."""
    if encoder is None:
        encoder = ENCODERS.get_class(cfg.encoder, field="encoder").from_config(cfg, vocab=vocab,
                                                                               max_seq_len=max_seq_len)
    rnn = RNN_LAYERS.get_class(cfg.rnn, field="rnn").from_config(cfg, hidden_size=encoder.hidden_size)
    pooler = build_pooler(cfg, hidden_size=encoder.hidden_size)
    head = MultiSampleDropoutHead(in_dim=pooler.out_dim, num_labels=num_labels, count=cfg.msd_count,
                                  dropout=cfg.dropout, reduce=cfg.msd_reduce)
    level1_head = None
    if cfg.aux_level1_weight > 0:
        if num_level1 < 1:
            raise ValueError("an auxiliary level-1 head needs num_level1 >= 1")
        level1_head = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(pooler.out_dim, num_level1))
    return Classifier(encoder=encoder, sequence=rnn, pooler=pooler, head=head, level1_head=level1_head,
                      truncation=Truncation(mode=cfg.truncation, head_share=cfg.head_share))
