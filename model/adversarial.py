"""Adversarial training on the word embeddings (FGM, PGD), as the competition solutions used it.

Contract: `attack(loss_fn)` runs after the clean backward pass: it perturbs the word-embedding
matrix along its gradient, runs `loss_fn()` (a forward pass returning the adversarial loss) and
backpropagates it, so its gradient adds to the clean one, then puts the embedding weights back
exactly as they were (bit for bit) before the optimizer steps. `from_config(cfg, *, model)` builds
one; `none` builds nothing.

Frozen embeddings (`freeze_embeddings`) are attacked too: they keep requires_grad, so the clean
backward pass gives the attack its direction, and the training loop drops their gradient only
before the optimizer step (model/train.py `optimizer_step`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import nn

from model.registry import Registry

if TYPE_CHECKING:  # annotations only: config.py reads this module's registry (model/components.py)
    from model.config import TrialConfig

ADVERSARIAL = Registry("adversarial method")


def _step(grad: torch.Tensor, size: float) -> torch.Tensor | None:
    """`size` times the unit direction of `grad`, or None when the gradient gives no direction."""
    norm = torch.linalg.vector_norm(grad)
    if norm == 0 or not torch.isfinite(norm):
        return None
    return size * grad / norm


@ADVERSARIAL.register("none")
class NoAttack:
    @classmethod
    def from_config(cls, cfg: TrialConfig, *, model: nn.Module) -> None:
        return None


@ADVERSARIAL.register("fgm")
class FGM:
    """Fast gradient method (Miyato et al. 2017): one step of size epsilon along the gradient."""

    def __init__(self, *, embedding: nn.Embedding, epsilon: float):
        self.embedding, self.epsilon = embedding, epsilon

    @classmethod
    def from_config(cls, cfg: TrialConfig, *, model: nn.Module) -> FGM:
        return cls(embedding=model.encoder.word_embeddings, epsilon=cfg.adv_epsilon)

    def attack(self, loss_fn: Callable[[], torch.Tensor]) -> torch.Tensor | None:
        weight = self.embedding.weight
        if weight.grad is None or (delta := _step(weight.grad, self.epsilon)) is None:
            return None
        backup = weight.data.clone()
        weight.data.add_(delta)
        try:
            loss = loss_fn()
            loss.backward()
        finally:
            weight.data.copy_(backup)
        return loss.detach()


@ADVERSARIAL.register("pgd")
class PGD:
    """Projected gradient descent (Madry et al. 2018): `steps` ascent steps of size alpha, each
    projected back into the epsilon ball around the clean embeddings; only the last step's
    gradient is added to the clean gradient."""

    def __init__(self, *, model: nn.Module, embedding: nn.Embedding, epsilon: float, alpha: float, steps: int):
        self.model, self.embedding = model, embedding
        self.epsilon, self.alpha, self.steps = epsilon, alpha, steps

    @classmethod
    def from_config(cls, cfg: TrialConfig, *, model: nn.Module) -> PGD:
        return cls(model=model, embedding=model.encoder.word_embeddings, epsilon=cfg.adv_epsilon,
                   alpha=cfg.pgd_alpha, steps=cfg.pgd_steps)

    def attack(self, loss_fn: Callable[[], torch.Tensor]) -> torch.Tensor | None:
        weight = self.embedding.weight
        if weight.grad is None:
            return None
        params = [p for p in self.model.parameters() if p.grad is not None]
        clean_grads = [p.grad.clone() for p in params]
        backup = weight.data.clone()
        loss = None
        try:
            for step in range(self.steps):
                delta = _step(weight.grad, self.alpha)
                if delta is None:  # no direction to climb: keep the clean gradient only
                    for p, g in zip(params, clean_grads, strict=True):
                        p.grad.copy_(g)
                    return None
                perturbation = weight.data + delta - backup
                norm = torch.linalg.vector_norm(perturbation)
                if norm > self.epsilon:
                    perturbation = perturbation * (self.epsilon / norm)
                weight.data.copy_(backup + perturbation)
                last = step == self.steps - 1
                for p, g in zip(params, clean_grads, strict=True):
                    # intermediate steps: the gradient only steers the attack; the last one adds to
                    # the clean gradient
                    p.grad.copy_(g) if last else p.grad.zero_()
                loss = loss_fn()
                loss.backward()
            return loss.detach()
        finally:
            weight.data.copy_(backup)
