"""Encoders: token ids -> contextual token states.

Contract: `forward(input_ids (B, T), mask (B, T) bool) -> (B, T, hidden_size)`, and
`from_config(cfg, *, vocab_size, max_seq_len)` builds one. Nothing here downloads weights.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import BertConfig, BertModel

from model.config import TrialConfig
from model.registry import Registry

ENCODERS = Registry("encoder")


@ENCODERS.register("tiny")
class TinyBert(nn.Module):
    """A randomly initialised BERT whose dimensions come from the trial config."""

    def __init__(self, *, bert_config: BertConfig):
        super().__init__()
        self.bert = BertModel(bert_config, add_pooling_layer=False)
        self.hidden_size = bert_config.hidden_size

    @classmethod
    def from_config(cls, cfg: TrialConfig, *, vocab_size: int, max_seq_len: int) -> TinyBert:
        return cls(bert_config=BertConfig(
            vocab_size=vocab_size,
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
