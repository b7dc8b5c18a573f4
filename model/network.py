"""The classifier a trial trains: encoder -> pooler(s) -> multi-sample-dropout head."""

from __future__ import annotations

import torch
from torch import nn

from model.config import TrialConfig
from model.encoders import ENCODERS
from model.heads import MultiSampleDropoutHead
from model.poolers import build_pooler


class Classifier(nn.Module):
    def __init__(self, *, encoder: nn.Module, pooler: nn.Module, head: nn.Module):
        super().__init__()
        self.encoder = encoder
        self.pooler = pooler
        self.head = head

    def forward(self, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids, mask)  # (B, T) -> (B, T, H)
        features = self.pooler(hidden, mask)  # (B, T, H) -> (B, D)
        return self.head(features)  # (B, D) -> (B, num_labels)


def build_model(cfg: TrialConfig, *, vocab_size: int, max_seq_len: int, num_labels: int) -> Classifier:
    encoder = ENCODERS.get_class(cfg.encoder, field="encoder").from_config(
        cfg, vocab_size=vocab_size, max_seq_len=max_seq_len)
    pooler = build_pooler(cfg, hidden_size=encoder.hidden_size)
    head = MultiSampleDropoutHead(in_dim=pooler.out_dim, num_labels=num_labels, count=cfg.msd_count,
                                  dropout=cfg.dropout, reduce=cfg.msd_reduce)
    return Classifier(encoder=encoder, pooler=pooler, head=head)
