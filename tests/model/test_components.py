"""Conformance tests: one parametrized test per registry."""

import numpy as np
import pytest
import torch

from model.config import TrialConfig
from model.encoders import ENCODERS
from model.heads import MultiSampleDropoutHead
from model.losses import LOSSES
from model.network import build_model
from model.poolers import POOLERS, build_pooler
from tests.conftest import TINY


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_loss_is_finite_and_differentiable_with_rare_classes(name):
    torch.manual_seed(0)
    num_labels = 35
    logits = (torch.randn(8, num_labels) * 5).requires_grad_()
    # classes 33 and 34 are rare (one row each); the batch has no row at all of most classes
    target = torch.tensor([0, 0, 0, 1, 1, 2, 33, 34])
    counts = np.r_[np.full(33, 100), 1, 1]
    loss_fn = LOSSES[name].from_config(TrialConfig(loss=name), class_counts=counts)
    loss = loss_fn(logits, target)
    assert loss.ndim == 0 and torch.isfinite(loss) and loss > 0
    loss.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_focal_with_gamma_zero_limit_matches_cross_entropy():
    logits, target = torch.randn(6, 5), torch.tensor([0, 1, 2, 3, 4, 0])
    focal = LOSSES["focal"](gamma=1e-9)
    ce = LOSSES["ce"]()
    assert torch.allclose(focal(logits, target), ce(logits, target), atol=1e-6)


@pytest.mark.parametrize("name", sorted(POOLERS) + ["cls+mean"])
def test_every_pooler_ignores_padding(name):
    torch.manual_seed(0)
    pooler = build_pooler(TrialConfig(pooler=name), hidden_size=8)
    hidden = torch.randn(3, 6, 8)
    mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2, [1] * 2 + [0] * 4], dtype=torch.bool)
    out = pooler(hidden, mask)
    assert out.shape == (3, pooler.out_dim)
    changed = hidden.clone()
    changed[~mask] = torch.randn(int((~mask).sum()), 8) * 100
    changed[1, 5] = float("nan")
    assert torch.equal(pooler(changed, mask), out)


def test_mean_pooler_is_the_masked_mean():
    hidden = torch.arange(12.0).reshape(1, 4, 3)
    mask = torch.tensor([[True, True, False, False]])
    assert torch.equal(POOLERS["mean"](hidden_size=3)(hidden, mask), torch.tensor([[1.5, 2.5, 3.5]]))


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_every_encoder_gives_token_states(name):
    cfg = TrialConfig(encoder=name, **TINY)
    encoder = ENCODERS[name].from_config(cfg, vocab_size=50, max_seq_len=12).eval()
    ids = torch.randint(5, 50, (2, 7))
    mask = torch.ones(2, 7, dtype=torch.bool)
    assert encoder(ids, mask).shape == (2, 7, cfg.hidden_size)


def test_msd_with_one_sample_equals_a_plain_head():
    torch.manual_seed(0)
    head = MultiSampleDropoutHead(in_dim=8, num_labels=4, count=1, dropout=0.3, reduce="mean")
    x = torch.randn(5, 8)
    torch.manual_seed(1)
    got = head(x)
    torch.manual_seed(1)
    want = head.classifier(torch.nn.functional.dropout(x, 0.3, training=True))
    assert torch.allclose(got, want)


def test_msd_sum_is_k_times_mean_in_eval():
    torch.manual_seed(0)
    head = MultiSampleDropoutHead(in_dim=8, num_labels=4, count=4, dropout=0.5, reduce="sum").eval()
    x = torch.randn(3, 8)
    assert torch.allclose(head(x), 4 * head.classifier(x), atol=1e-6)


def test_model_output_shape_and_padding_invariance():
    torch.manual_seed(0)
    cfg = TrialConfig(**TINY, pooler="cls+mean", msd_count=2)
    model = build_model(cfg, vocab_size=40, max_seq_len=10, num_labels=35).eval()
    ids = torch.randint(5, 40, (2, 6))
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[1, 4:] = False
    out = model(ids, mask)
    assert out.shape == (2, 35)
    ids2 = ids.clone()
    ids2[1, 4:] = 7
    assert torch.allclose(model(ids2, mask), out, atol=1e-6)
