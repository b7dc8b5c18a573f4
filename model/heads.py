"""Classification heads."""

from __future__ import annotations

import torch
from torch import nn


class MultiSampleDropoutHead(nn.Module):
    """Multi-sample dropout (Inoue 2019): k dropout masks share one classifier, their logits are
    summed or averaged. In eval mode dropout is off, so `mean` equals a plain head and `sum` is k
    times it (same argmax). With k = 1 and `mean` this is exactly dropout + linear.

    (B, D) -> (B, num_labels)
    """

    def __init__(self, *, in_dim: int, num_labels: int, count: int = 1, dropout: float = 0.1,
                 reduce: str = "mean"):
        super().__init__()
        if reduce not in ("mean", "sum"):
            raise ValueError(f"reduce is {reduce!r}, but must be 'mean' or 'sum'")
        self.dropouts = nn.ModuleList(nn.Dropout(dropout) for _ in range(count))
        self.classifier = nn.Linear(in_dim, num_labels)
        self.reduce = reduce

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        logits = torch.stack([self.classifier(drop(features)) for drop in self.dropouts])  # (k, B, C)
        return logits.mean(0) if self.reduce == "mean" else logits.sum(0)
