"""Poolers: token states -> one vector per sequence.

Contract: `forward(hidden (B, T, H), mask (B, T) bool) -> (B, out_dim)`; padded positions
(mask False) never influence the output. `from_config(cfg, *, hidden_size)` builds one. Several
poolers named `a+b` in the config are concatenated by `build_pooler`.
"""

from __future__ import annotations

import torch
from torch import nn

from model.config import TrialConfig
from model.registry import Registry

POOLERS = Registry("pooler")


@POOLERS.register("cls")
class ClsPooler(nn.Module):
    """The state of the first ([CLS]) token."""

    def __init__(self, *, hidden_size: int):
        super().__init__()
        self.out_dim = hidden_size

    @classmethod
    def from_config(cls, cfg: TrialConfig, *, hidden_size: int) -> ClsPooler:
        return cls(hidden_size=hidden_size)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return hidden[:, 0]  # (B, T, H) -> (B, H)


@POOLERS.register("mean")
class MeanPooler(nn.Module):
    """Average of the non-padded token states."""

    def __init__(self, *, hidden_size: int):
        super().__init__()
        self.out_dim = hidden_size

    @classmethod
    def from_config(cls, cfg: TrialConfig, *, hidden_size: int) -> MeanPooler:
        return cls(hidden_size=hidden_size)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        weights = mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        # where() rather than multiply: a NaN/inf in a padded state must not leak through 0 * x.
        total = torch.where(mask.unsqueeze(-1), hidden, 0).sum(dim=1)  # (B, H)
        return total / weights.sum(dim=1).clamp(min=1)


class ConcatPooler(nn.Module):
    """Several poolers side by side: (B, T, H) -> (B, sum of their out_dims)."""

    def __init__(self, poolers: list[nn.Module]):
        super().__init__()
        self.poolers = nn.ModuleList(poolers)
        self.out_dim = sum(p.out_dim for p in poolers)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return torch.cat([p(hidden, mask) for p in self.poolers], dim=-1)


def build_pooler(cfg: TrialConfig, *, hidden_size: int) -> nn.Module:
    parts = [POOLERS.get_class(name, field="pooler").from_config(cfg, hidden_size=hidden_size)
             for name in cfg.poolers]
    return parts[0] if len(parts) == 1 else ConcatPooler(parts)
