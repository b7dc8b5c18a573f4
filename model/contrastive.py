"""Supervised contrastive losses on the pooled features (pytorch-metric-learning does the maths).

Contract: `forward(features (B, D), labels (B,), class_embeddings (C, D) or None) -> scalar`.
With class embeddings (the classifier's weight rows), each class's row joins the batch as one
more sample of that class, so samples are pulled towards their class and pushed from the others,
as in the competition's "samples and classes" variant. A batch without any positive pair gives 0.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from pytorch_metric_learning import losses
from torch import nn

from model.registry import Registry

if TYPE_CHECKING:  # annotations only: config.py reads this module's registry (model/components.py)
    from model.config import TrialConfig

CONTRASTIVE = Registry("contrastive loss")


class _Contrastive(nn.Module):
    def __init__(self, *, loss: nn.Module):
        super().__init__()
        self.loss = loss

    def forward(self, features: torch.Tensor, labels: torch.Tensor,
                class_embeddings: torch.Tensor | None = None) -> torch.Tensor:
        if class_embeddings is not None:
            classes = torch.arange(len(class_embeddings), device=labels.device)
            # In fp32: under autocast the features are bf16, the class embeddings (parameters) fp32.
            features = torch.cat([features.float(), class_embeddings.float()])  # (B + C, D)
            labels = torch.cat([labels, classes])
        return self.loss(features.float(), labels)


@CONTRASTIVE.register("none")
class NoContrastive(nn.Module):
    @classmethod
    def from_config(cls, cfg: TrialConfig) -> None:
        return None


@CONTRASTIVE.register("ntxent")
class NTXent(_Contrastive):
    """NT-Xent (SimCLR's InfoNCE) with labels: every same-label pair is a positive pair."""

    @classmethod
    def from_config(cls, cfg: TrialConfig) -> NTXent:
        return cls(loss=losses.NTXentLoss(temperature=cfg.contrastive_temperature))


@CONTRASTIVE.register("supcon")
class SupCon(_Contrastive):
    """Supervised contrastive loss (Khosla et al. 2020): all positives of an anchor at once."""

    @classmethod
    def from_config(cls, cfg: TrialConfig) -> SupCon:
        return cls(loss=losses.SupConLoss(temperature=cfg.contrastive_temperature))
