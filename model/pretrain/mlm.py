"""Encoders with their masked-language-model heads, by `--arch` (`MLM_ARCHS`): what pretraining
trains, and what it saves for the encoder of the same name to load."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from model.masking import IGNORE_INDEX
from model.nezha import NezhaConfig, NezhaForMaskedLM
from model.registry import Registry

if TYPE_CHECKING:  # annotations only: config.py reads this module's registry
    from model.pretrain.config import PretrainConfig


MLM_ARCHS = Registry("arch")


class MaskedLM(nn.Module):
    """An encoder with its MLM head. `forward(ids (B, T), mask (B, T) bool, labels (B, T))` returns
    (sum of the cross-entropy over masked positions, correct predictions, masked positions), the
    head running on the masked positions only. Subclasses give `encode`, `predict`, `save`."""

    @classmethod
    def from_config(cls, cfg: PretrainConfig, *, vocab_size: int) -> MaskedLM:
        raise NotImplementedError

    def encode(self, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # -> (B, T, H)
        raise NotImplementedError

    def predict(self, states: torch.Tensor) -> torch.Tensor:  # (M, H) -> (M, vocab)
        raise NotImplementedError

    def save(self, directory: Path) -> None:
        """Write config.json and model.safetensors, loadable by the encoder of the same name."""
        raise NotImplementedError

    def forward(self, input_ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        states = self.encode(input_ids, mask)  # (B, T, H)
        where = labels != IGNORE_INDEX  # (B, T)
        logits = self.predict(states[where]).float()  # (M, vocab)
        target = labels[where]
        loss_sum = F.cross_entropy(logits, target, reduction="sum")
        correct = (logits.argmax(-1) == target).sum()
        return loss_sum, correct, where.sum()


@MLM_ARCHS.register("bert")
class BertMLM(MaskedLM):
    """transformers' BertForMaskedLM; saved with save_pretrained (keys `bert.*`, `cls.*`), which
    `BertModel.from_pretrained` (the `bert` encoder) reads, ignoring the head."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    @classmethod
    def from_config(cls, cfg: PretrainConfig, *, vocab_size: int) -> BertMLM:
        from transformers import BertConfig, BertForMaskedLM

        return cls(BertForMaskedLM(BertConfig(
            vocab_size=vocab_size, hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers,
            num_attention_heads=cfg.num_heads, intermediate_size=cfg.intermediate_size,
            max_position_embeddings=cfg.max_seq_len, pad_token_id=0)))

    def encode(self, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.net.bert(input_ids=input_ids, attention_mask=mask.long()).last_hidden_state

    def predict(self, states: torch.Tensor) -> torch.Tensor:
        return self.net.cls(states)

    def save(self, directory: Path) -> None:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        self.net.save_pretrained(directory)


@MLM_ARCHS.register("nezha")
class NezhaMLM(MaskedLM):
    """model/nezha.py's NezhaForMaskedLM; what it saves loads with `load_nezha` (the `nezha` encoder)."""

    def __init__(self, net: NezhaForMaskedLM):
        super().__init__()
        self.net = net

    @classmethod
    def from_config(cls, cfg: PretrainConfig, *, vocab_size: int) -> NezhaMLM:
        return cls(NezhaForMaskedLM(NezhaConfig(
            vocab_size=vocab_size, hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers,
            num_attention_heads=cfg.num_heads, intermediate_size=cfg.intermediate_size,
            max_position_embeddings=cfg.max_seq_len, max_relative_position=cfg.max_relative_position)))

    def encode(self, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.net.bert(input_ids, mask)

    def predict(self, states: torch.Tensor) -> torch.Tensor:
        return self.net.cls(states)

    def save(self, directory: Path) -> None:
        self.net.save(directory)


def build_mlm(cfg: PretrainConfig, *, vocab_size: int) -> MaskedLM:
    return MLM_ARCHS.get_class(cfg.arch, field="arch").from_config(cfg, vocab_size=vocab_size)
