"""Classification losses.

Contract: `forward(logits (B, C), target (B,) int64) -> scalar`, and
`from_config(cfg, *, class_counts)` builds one (`class_counts`: (C,) training rows per label).
`class_weights` (ce, focal): none, inverse (N / (C * n_c)) or sqrt_inverse (1 / sqrt(n_c),
scaled to mean 1); labels absent from training get the largest weight present.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from model.registry import Registry

if TYPE_CHECKING:  # annotations only: config.py reads this module's registry (model/components.py)
    from model.config import TrialConfig

LOSSES = Registry("loss")


def class_weights(kind: str, class_counts: np.ndarray) -> torch.Tensor | None:
    if kind == "none":
        return None
    counts = np.asarray(class_counts, dtype=np.float64)
    present = counts > 0
    raw = np.zeros_like(counts)
    raw[present] = 1 / counts[present] if kind == "inverse" else 1 / np.sqrt(counts[present])
    raw[~present] = raw[present].max()
    weights = raw * (counts.sum() / len(counts) if kind == "inverse" else len(raw) / raw.sum())
    return torch.tensor(weights, dtype=torch.float32)


@LOSSES.register("ce")
class CrossEntropy(nn.Module):
    def __init__(self, *, label_smoothing: float = 0.0, weight: torch.Tensor | None = None):
        super().__init__()
        self.label_smoothing = label_smoothing
        self.register_buffer("weight", weight)

    @classmethod
    def from_config(cls, cfg: TrialConfig, *, class_counts: np.ndarray) -> CrossEntropy:
        return cls(label_smoothing=cfg.label_smoothing, weight=class_weights(cfg.class_weights, class_counts))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), target, weight=self.weight, label_smoothing=self.label_smoothing)


@LOSSES.register("focal")
class FocalLoss(nn.Module):
    """Focal loss (Lin et al. 2017): cross-entropy scaled by (1 - p_t)^gamma, which shifts the
    weight of the loss to hard, often rare-class, examples."""

    def __init__(self, *, gamma: float = 2.0, weight: torch.Tensor | None = None):
        super().__init__()
        self.gamma = gamma
        self.register_buffer("weight", weight)

    @classmethod
    def from_config(cls, cfg: TrialConfig, *, class_counts: np.ndarray) -> FocalLoss:
        return cls(gamma=cfg.focal_gamma, weight=class_weights(cfg.class_weights, class_counts))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        log_p = F.log_softmax(logits.float(), dim=-1).gather(1, target[:, None]).squeeze(1)  # (B,)
        loss = -((1 - log_p.exp()) ** self.gamma) * log_p
        if self.weight is None:
            return loss.mean()
        w = self.weight[target]
        return (w * loss).sum() / w.sum()


@LOSSES.register("dice")
class SelfAdjustingDiceLoss(nn.Module):
    """Multi-class dice loss over the batch, with the self-adjusting factor of Li et al. 2020
    ("Dice Loss for Data-imbalanced NLP Tasks").

    With P the softmax (B, C), Y the one-hot targets and P' = (1 - P)^alpha * P, each label's soft
    dice is (2 sum_b P'Y + smooth) / (sum_b P' + sum_b Y + smooth); the loss is 1 minus its mean over
    all labels. With alpha = 0 this is a soft macro-F1 (a label predicted but absent costs too);
    alpha > 0 fades out examples the model already gets right with confidence.
    """

    def __init__(self, *, alpha: float = 0.0, smooth: float = 1.0):
        super().__init__()
        self.alpha, self.smooth = alpha, smooth

    @classmethod
    def from_config(cls, cfg: TrialConfig, *, class_counts: np.ndarray) -> SelfAdjustingDiceLoss:
        return cls(alpha=cfg.dice_alpha, smooth=cfg.dice_smooth)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        p = F.softmax(logits.float(), dim=-1)  # (B, C)
        if self.alpha > 0:
            p = (1 - p) ** self.alpha * p
        y = F.one_hot(target, num_classes=logits.shape[-1]).float()  # (B, C)
        dice = (2 * (p * y).sum(0) + self.smooth) / (p.sum(0) + y.sum(0) + self.smooth)  # (C,)
        return 1 - dice.mean()
