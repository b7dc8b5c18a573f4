"""RNN layers between the encoder and the pooler (the BiLSTM/BiGRU of the competition models).

The `rnn` field names one (`none`: no layer), `rnn_layers` sets the depth of each RNN.

Contract: `forward(hidden (B, T, H), mask (B, T) bool) -> (B, T, H)`; padded positions neither
influence the output nor carry anything but zeros. `from_config(cfg, *, hidden_size)`.
Bidirectional layers use H/2 units per direction, so the width stays H.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from model.registry import Registry

if TYPE_CHECKING:  # annotations only: config.py reads this module's registry (model/components.py)
    from model.config import TrialConfig

RNN_LAYERS = Registry("rnn layer")


@RNN_LAYERS.register("none")
class NoRNN(nn.Module):
    @classmethod
    def from_config(cls, cfg: TrialConfig, *, hidden_size: int) -> NoRNN:
        return cls()

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return hidden


class _BiRNN(nn.Module):
    """Bidirectional RNNs in a row, run on packed sequences so padding is skipped exactly."""

    kinds: tuple[type[nn.RNNBase], ...] = ()

    def __init__(self, *, hidden_size: int, layers: int = 1):
        super().__init__()
        self.rnns = nn.ModuleList(kind(hidden_size, hidden_size // 2, num_layers=layers, batch_first=True,
                                       bidirectional=True) for kind in self.kinds)

    @classmethod
    def from_config(cls, cfg: TrialConfig, *, hidden_size: int) -> _BiRNN:
        return cls(hidden_size=hidden_size, layers=cfg.rnn_layers)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return run_packed(self.rnns, hidden, mask)  # (B, T, 2 * (H // 2)), zeros at padded positions


def run_packed(rnns: Iterable[nn.RNNBase], hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Run batch-first RNNs one after the other on packed sequences, so padding is skipped exactly:
    (B, T, H) -> (B, T, H_out of the last), zeros at padded positions. Also the bigru and bilstm
    encoders' core (model/wordvec_encoders.py)."""
    lengths = mask.sum(dim=1).cpu()
    out = torch.where(mask.unsqueeze(-1), hidden, 0).float()  # (B, T, H)
    # In full precision: CUDA autocast runs cuDNN RNNs in fp16 whatever its dtype (ATen's
    # AutocastRNN.cpp casts to half), and bf16 training has no loss scaling to keep fp16
    # gradients from underflowing. The RNN is a small part of the model's compute.
    with torch.autocast(device_type=hidden.device.type, enabled=False):
        for rnn in rnns:
            packed = pack_padded_sequence(out, lengths, batch_first=True, enforce_sorted=False)
            out, _ = pad_packed_sequence(rnn(packed)[0], batch_first=True, total_length=hidden.shape[1])
    return out


@RNN_LAYERS.register("lstm")
class BiLSTM(_BiRNN):
    kinds = (nn.LSTM,)


@RNN_LAYERS.register("gru")
class BiGRU(_BiRNN):
    kinds = (nn.GRU,)


@RNN_LAYERS.register("lstm_gru")
class BiLSTMThenGRU(_BiRNN):
    kinds = (nn.LSTM, nn.GRU)
