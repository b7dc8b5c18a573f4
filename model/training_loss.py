"""The training loss of a trial, assembled from its parts:

    main loss(level-2 logits)                                  (ce, focal, dice: model/losses.py)
  + aux_level1_weight * cross-entropy(level-1 logits)          (multi-task level-1 head)
  + contrastive_weight * contrastive(pooled features)          (ntxent, supcon: model/contrastive.py)

then flooding (Ishida et al. 2020): |loss - b| + b, which stops descent below level b.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from model.config import TrialConfig
from model.contrastive import CONTRASTIVE
from model.losses import LOSSES
from model.network import Output


class TrainingLoss(nn.Module):
    """The scalar a trial's training minimises (not the search's objective, the level-2 macro-F1):
    `forward(out, target (B,), class_embeddings (num_labels, D) | None) -> ()`.
    """

    def __init__(self, *, main: nn.Module, level1_of: torch.Tensor, aux_weight: float = 0.0,
                 contrastive: nn.Module | None = None, contrastive_weight: float = 0.0,
                 with_classes: bool = False, flood_b: float = 0.0):
        super().__init__()
        self.main, self.contrastive = main, contrastive
        self.register_buffer("level1_of", level1_of)  # (num_labels,) level-1 index of each level-2 label
        self.aux_weight, self.contrastive_weight = aux_weight, contrastive_weight
        self.with_classes, self.flood_b = with_classes, flood_b

    @classmethod
    def from_config(cls, cfg: TrialConfig, *, class_counts: np.ndarray, level1_of: np.ndarray) -> TrainingLoss:
        return cls(main=LOSSES.get_class(cfg.loss, field="loss").from_config(cfg, class_counts=class_counts),
                   level1_of=torch.as_tensor(level1_of, dtype=torch.long), aux_weight=cfg.aux_level1_weight,
                   contrastive=CONTRASTIVE.get_class(cfg.contrastive, field="contrastive").from_config(cfg),
                   contrastive_weight=cfg.contrastive_weight,
                   with_classes=cfg.contrastive_target == "samples+classes", flood_b=cfg.flood_b)

    def forward(self, out: Output, target: torch.Tensor, class_embeddings: torch.Tensor | None = None
                ) -> torch.Tensor:
        loss = self.main(out.logits, target)
        if self.aux_weight > 0 and out.level1_logits is not None:
            loss = loss + self.aux_weight * F.cross_entropy(out.level1_logits.float(), self.level1_of[target])
        if self.contrastive is not None and self.contrastive_weight > 0:
            classes = class_embeddings if self.with_classes else None
            loss = loss + self.contrastive_weight * self.contrastive(out.features, target, classes)
        if self.flood_b > 0:
            loss = (loss - self.flood_b).abs() + self.flood_b
        return loss
