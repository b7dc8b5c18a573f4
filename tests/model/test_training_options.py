"""Adversarial training and the training-loop options: each changes what it should, resumes exactly."""

import math
from copy import deepcopy

import numpy as np
import pytest
import torch

from model import metrics as M
from model.adversarial import ADVERSARIAL
from model.config import TrialConfig
from model.network import build_model
from model.train import epoch_batches, fit, param_groups
from model.training_loss import TrainingLoss
from tests.conftest import TINY, toy_vocab


def scores(evaluations):
    return [{k: v for k, v in e.metrics.items() if k != "train_samples_per_s"} for e in evaluations]


def small(**values):
    return TrialConfig(**{**TINY, "max_epochs": 2, "lr": 3e-3, "batch_size": 32, **values})


def attack_setup(name, **values):
    """A tiny model after its clean backward pass; `loss_of(model)` is the batch's loss."""
    torch.manual_seed(0)
    cfg = TrialConfig(**TINY, adversarial=name, **values)
    model = build_model(cfg, vocab=toy_vocab(40), max_seq_len=12, num_labels=5)
    model.eval()  # no dropout: the clean and attacked passes differ only by the attack
    training_loss = TrainingLoss.from_config(cfg, class_counts=np.ones(5), level1_of=np.zeros(5, dtype=int))
    ids, mask, labels = torch.randint(5, 40, (4, 8)), torch.ones(4, 8, dtype=torch.bool), torch.tensor([0, 1, 2, 3])

    def loss_of(m):
        return training_loss(m(ids, mask), labels)

    loss_of(model).backward()
    return cfg, model, loss_of


def grads_at(model, loss_of, embeddings):
    """(loss, {name: gradient} of every parameter, the word embeddings' gradient) of a copy of `model`
    whose word embeddings are `embeddings`."""
    copy = deepcopy(model)
    copy.zero_grad(set_to_none=True)
    with torch.no_grad():
        copy.encoder.word_embeddings.weight.copy_(embeddings)
    loss = loss_of(copy)
    loss.backward()
    grads = {n: p.grad for n, p in copy.named_parameters() if p.grad is not None}
    return loss.detach(), grads, copy.encoder.word_embeddings.weight.grad


def attack(cfg, model, loss_of):
    """Run the attack; return its loss and the word embeddings each of its forward passes saw."""
    weight = model.encoder.word_embeddings.weight
    seen = []

    def loss_fn():
        seen.append(weight.detach().clone())
        return loss_of(model)

    return ADVERSARIAL[cfg.adversarial].from_config(cfg, model=model).attack(loss_fn), seen


@pytest.mark.parametrize("name", [n for n in sorted(ADVERSARIAL) if n != "none"])
def test_every_attack_adds_the_gradient_at_its_perturbation_and_restores_the_embeddings_exactly(name):
    cfg, model, loss_of = attack_setup(name, adv_epsilon=0.5, pgd_alpha=0.2, pgd_steps=3)
    clean = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    weights = model.encoder.word_embeddings.weight.detach().clone()
    adv_loss, seen = attack(cfg, model, loss_of)
    assert torch.equal(model.encoder.word_embeddings.weight, weights)  # bit-identical after the attack
    assert len(seen) == (cfg.pgd_steps if name == "pgd" else 1)
    # the gradient of the last (the attacked) forward pass adds to the clean one; PGD's earlier
    # steps only steer the attack
    want_loss, adversarial, embedding_grad = grads_at(model, loss_of, seen[-1])
    assert adv_loss == pytest.approx(want_loss.item(), rel=1e-6)
    assert adversarial.keys() == clean.keys()
    for n, p in model.named_parameters():
        if n in clean:
            assert torch.allclose(p.grad, clean[n] + adversarial[n], rtol=1e-5, atol=1e-7), n
    assert embedding_grad.abs().sum() > 0  # so the sum differs from the clean gradient
    assert ADVERSARIAL["none"].from_config(cfg, model=model) is None


def test_fgm_moves_the_embeddings_epsilon_along_the_unit_gradient():
    cfg, model, loss_of = attack_setup("fgm", adv_epsilon=0.5)
    weights = model.encoder.word_embeddings.weight.detach().clone()
    g = model.encoder.word_embeddings.weight.grad.clone()
    _, (attacked,) = attack(cfg, model, loss_of)
    assert torch.allclose(attacked, weights + 0.5 * g / torch.linalg.vector_norm(g), rtol=0, atol=1e-7)
    assert torch.linalg.vector_norm(attacked - weights).item() == pytest.approx(0.5, rel=1e-5)
    assert torch.equal(attacked[g.abs().sum(1) == 0], weights[g.abs().sum(1) == 0])  # tokens not in the batch


def test_pgd_climbs_alpha_steps_projected_onto_the_epsilon_ball():
    epsilon, alpha = 0.5, 0.3
    cfg, model, loss_of = attack_setup("pgd", adv_epsilon=epsilon, pgd_alpha=alpha, pgd_steps=3)
    weights = model.encoder.word_embeddings.weight.detach().clone()
    g = model.encoder.word_embeddings.weight.grad.clone()  # the first step climbs the clean gradient
    _, seen = attack(cfg, model, loss_of)
    projected, previous = 0, weights
    for attacked in seen:
        want = previous + alpha * g / torch.linalg.vector_norm(g) - weights  # perturbation after the step
        norm = torch.linalg.vector_norm(want)
        if norm > epsilon:  # back onto the ball around the clean embeddings
            want, projected = want * (epsilon / norm), projected + 1
        assert torch.allclose(attacked - weights, want, rtol=0, atol=1e-6)
        g = grads_at(model, loss_of, attacked)[2]  # the next step's direction
        previous = attacked
    assert projected >= 1  # 3 steps of 0.3 leave the ball of 0.5: the projection was exercised
    assert torch.linalg.vector_norm(seen[-1] - weights).item() == pytest.approx(epsilon, rel=1e-5)


def test_param_groups_take_their_learning_rates():
    cfg = TrialConfig(**TINY, lr=1e-3, embedding_lr=5e-4, head_lr=1e-2, rnn="gru")
    model = build_model(cfg, vocab=toy_vocab(40), max_seq_len=12, num_labels=5)
    groups = param_groups(model, cfg)
    ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())  # each parameter exactly once
    rate = {g["name"]: g["lr"] for g in groups}
    assert rate["embeddings"] == 5e-4 and rate["encoder"] == 1e-3 and rate["head"] == 1e-2
    sequence = {id(p) for p in model.sequence.parameters()}
    head = {id(p) for g in groups if g["name"].startswith("head") for p in g["params"]}
    assert sequence <= head
    assert all(g["weight_decay"] == 0 for g in groups if g["name"].endswith("no_decay"))
    assert {g["lr"] for g in param_groups(model, TrialConfig(**TINY, lr=2e-3))} == {2e-3}  # 0 means lr


def test_gradient_accumulation_takes_fewer_optimizer_steps(small_data):
    seen = []
    fit(small(grad_accum=3), small_data, seen.append)
    batches = math.ceil(len(small_data.train) / 32)
    assert [e.metrics[M.STEP] for e in seen] == [math.ceil(batches / 3), 2 * math.ceil(batches / 3)]
    assert [e.epoch for e in seen] == [1, 2]


def test_weighted_sampler_draws_rare_labels_more_often(small_data):
    counts = small_data.class_counts
    rare = set(np.flatnonzero(counts <= np.percentile(counts, 25)))
    def share(cfg):
        rows = np.concatenate(epoch_batches(cfg, small_data, 1))
        return np.isin(small_data.train.labels[rows], list(rare)).mean()
    assert share(small(sampler="weighted")) > 1.5 * share(small())
    assert len(np.concatenate(epoch_batches(small(sampler="weighted"), small_data, 1))) == len(small_data.train)


def test_swa_evaluates_the_averaged_weights(small_data):
    plain = fit(small(max_epochs=3), small_data)
    averaged = fit(small(max_epochs=3, swa_start=2), small_data)
    assert scores(plain.history)[0] == scores(averaged.history)[0]  # before swa_start: the same model
    assert scores(plain.history)[2] != scores(averaged.history)[2]
    with pytest.raises(ValueError, match=r"`swa_start` 4 is after the last epoch \(3\)"):
        small(max_epochs=3, swa_start=4)


def test_eval_every_evaluates_inside_epochs(small_data):
    batches = math.ceil(len(small_data.train) / 32)
    half = batches // 2
    seen = []
    fit(small(eval_every=half), small_data, seen.append)
    expected = sorted({round(s / batches, 4) for s in range(half, 2 * batches + 1, half)} | {1, 2})
    assert [e.epoch for e in seen] == expected
    assert seen[-1].epoch == 2 and seen[-1].is_last


@pytest.mark.parametrize("values", [
    dict(eval_every=7),  # resume from the middle of an epoch
    dict(adversarial="pgd", adv_rate=0.5, pgd_steps=2),
    dict(adversarial="fgm", swa_start=1, sampler="weighted", grad_accum=2),
])
def test_resume_continues_exactly_with_every_option(small_data, values):
    cfg = small(max_epochs=2, **values)
    states = {}
    full = fit(cfg, small_data, lambda e: states.setdefault(len(states), e.snapshot()))
    cut = 1  # resume after the second evaluation
    resumed = fit(cfg, small_data, resume=states[cut])
    assert scores(resumed.history) == scores(full.history[cut + 1:])
