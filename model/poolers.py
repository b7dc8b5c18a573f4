"""Poolers: token states -> one vector per sequence.

Contract: `forward(hidden (B, T, H), mask (B, T) bool) -> (B, out_dim)`; padded positions
(mask False) never influence the output. `from_config(cfg, *, hidden_size)` builds one. Several
poolers named `a+b` in the config are concatenated by `build_pooler`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from model.registry import Registry

if TYPE_CHECKING:  # annotations only: config.py reads this module's registry (model/components.py)
    from model.config import TrialConfig

POOLERS = Registry("pooler")


class _Pooler(nn.Module):
    """A pooler configured by the hidden size alone."""

    @classmethod
    def from_config(cls, cfg: TrialConfig, *, hidden_size: int) -> _Pooler:
        return cls(hidden_size=hidden_size)


@POOLERS.register("cls")
class ClsPooler(_Pooler):
    """The state of the first ([CLS]) token."""

    def __init__(self, *, hidden_size: int):
        super().__init__()
        self.out_dim = hidden_size

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return hidden[:, 0]  # (B, T, H) -> (B, H)


@POOLERS.register("mean")
class MeanPooler(_Pooler):
    """Average of the non-padded token states."""

    def __init__(self, *, hidden_size: int):
        super().__init__()
        self.out_dim = hidden_size

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        weights = mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        # where() rather than multiply: a NaN/inf in a padded state must not leak through 0 * x.
        total = torch.where(mask.unsqueeze(-1), hidden, 0).sum(dim=1)  # (B, H)
        return total / weights.sum(dim=1).clamp(min=1)


@POOLERS.register("bert_pooler")
class BertPooler(_Pooler):
    """BERT's pooler: the [CLS] state through a dense layer and tanh."""

    def __init__(self, *, hidden_size: int):
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.out_dim = hidden_size

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(hidden[:, 0]))  # (B, T, H) -> (B, H)


@POOLERS.register("max")
class MaxPooler(_Pooler):
    """Element-wise maximum over the non-padded token states."""

    def __init__(self, *, hidden_size: int):
        super().__init__()
        self.out_dim = hidden_size

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return hidden.masked_fill(~mask.unsqueeze(-1), float("-inf")).amax(dim=1)  # (B, H)


@POOLERS.register("attention")
class AttentionPooler(_Pooler):
    """Self-attentive pooling: a learned score per token, softmax over the real tokens, weighted sum."""

    def __init__(self, *, hidden_size: int):
        super().__init__()
        self.project = nn.Linear(hidden_size, hidden_size)
        self.score = nn.Linear(hidden_size, 1, bias=False)
        self.out_dim = hidden_size

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        hidden = torch.where(mask.unsqueeze(-1), hidden, 0)
        scores = self.score(torch.tanh(self.project(hidden))).squeeze(-1)  # (B, T)
        weights = scores.masked_fill(~mask, float("-inf")).softmax(dim=1)  # (B, T), 0 on padding
        return torch.einsum("bt,bth->bh", weights, hidden)


def squash(s: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Capsule non-linearity: keeps the direction, maps the norm into [0, 1)."""
    norm2 = (s * s).sum(dim=dim, keepdim=True)
    return norm2 / (1 + norm2) * s / torch.sqrt(norm2 + 1e-9)


@POOLERS.register("dynamic_routing")
class DynamicRoutingPooler(nn.Module):
    """Capsule-style dynamic routing (Sabour et al. 2017) from tokens to `capsules` output capsules.

    Each token votes for every capsule through a shared projection; `iterations` rounds of routing
    by agreement weigh the votes; the squashed capsules are concatenated. Padded tokens get no
    routing weight. (B, T, H) -> (B, capsules * (H // capsules))
    """

    def __init__(self, *, hidden_size: int, capsules: int = 4, iterations: int = 3):
        super().__init__()
        self.capsules, self.iterations = capsules, iterations
        self.capsule_dim = max(1, hidden_size // capsules)
        self.votes = nn.Linear(hidden_size, capsules * self.capsule_dim, bias=False)
        self.out_dim = capsules * self.capsule_dim

    @classmethod
    def from_config(cls, cfg: TrialConfig, *, hidden_size: int) -> DynamicRoutingPooler:
        return cls(hidden_size=hidden_size, capsules=cfg.routing_capsules, iterations=cfg.routing_iters)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, t, _ = hidden.shape
        votes = self.votes(hidden).view(b, t, self.capsules, self.capsule_dim)  # (B, T, K, D)
        votes = votes.masked_fill(~mask[:, :, None, None], 0)
        logits = votes.new_zeros(b, t, self.capsules)  # (B, T, K) routing logits
        for i in range(self.iterations):
            coupling = logits.softmax(dim=2) * mask.unsqueeze(-1)  # (B, T, K), 0 on padding
            capsules = squash(torch.einsum("btk,btkd->bkd", coupling, votes))  # (B, K, D)
            if i < self.iterations - 1:
                logits = logits + torch.einsum("btkd,bkd->btk", votes, capsules)
        return capsules.reshape(b, -1)


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
