"""Classification losses.

Contract: `forward(logits (B, C), target (B,) int64) -> scalar`, and
`from_config(cfg, *, class_counts)` builds one (`class_counts`: (C,) training rows per label).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from model.config import TrialConfig
from model.registry import Registry

LOSSES = Registry("loss")


@LOSSES.register("ce")
class CrossEntropy(nn.Module):
    def __init__(self, *, label_smoothing: float = 0.0):
        super().__init__()
        self.label_smoothing = label_smoothing

    @classmethod
    def from_config(cls, cfg: TrialConfig, *, class_counts: np.ndarray) -> CrossEntropy:
        return cls(label_smoothing=cfg.label_smoothing)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), target, label_smoothing=self.label_smoothing)


@LOSSES.register("focal")
class FocalLoss(nn.Module):
    """Focal loss (Lin et al. 2017): cross-entropy scaled by (1 - p_t)^gamma, which shifts the
    weight of the loss to hard, often rare-class, examples."""

    def __init__(self, *, gamma: float = 2.0):
        super().__init__()
        self.gamma = gamma

    @classmethod
    def from_config(cls, cfg: TrialConfig, *, class_counts: np.ndarray) -> FocalLoss:
        return cls(gamma=cfg.focal_gamma)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        log_p = F.log_softmax(logits.float(), dim=-1).gather(1, target[:, None]).squeeze(1)  # (B,)
        return (-((1 - log_p.exp()) ** self.gamma) * log_p).mean()
