"""Conformance tests: one parametrized test per registry."""

import numpy as np
import pytest
import torch

from model.config import TrialConfig
from model.contrastive import CONTRASTIVE
from model.heads import MultiSampleDropoutHead
from model.losses import LOSSES, class_weights
from model.network import Output, build_model
from model.poolers import POOLERS, build_pooler
from model.rnn import RNN_LAYERS
from model.training_loss import TrainingLoss
from tests.conftest import TINY, toy_vocab


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
    model = build_model(cfg, vocab=toy_vocab(40), max_seq_len=10, num_labels=35).eval()
    ids = torch.randint(5, 40, (2, 6))
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[1, 4:] = False
    out = model(ids, mask).logits
    assert out.shape == (2, 35)
    ids2 = ids.clone()
    ids2[1, 4:] = 7
    assert torch.allclose(model(ids2, mask).logits, out, atol=1e-6)


@pytest.mark.parametrize("pooler", sorted(POOLERS))
@pytest.mark.parametrize("encoder", ["tiny", "textcnn", "dpcnn", "bigru", "bilstm"])  # those without a checkpoint
def test_every_pooler_works_on_every_encoder_and_ignores_padding(encoder, pooler):
    # dpcnn shrinks the sequence: the poolers and the RNN layer get the mask of its output positions
    torch.manual_seed(0)
    cfg = TrialConfig(**TINY, encoder=encoder, pooler=pooler, rnn="gru", cnn_filters=8, cnn_kernels="2,3",
                      rnn_hidden=4, dpcnn_blocks=2, embedding_dim=8)
    model = build_model(cfg, vocab=toy_vocab(40), max_seq_len=16, num_labels=35).eval()
    ids = torch.randint(5, 40, (2, 9))
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[1, 3:] = False
    out = model(ids, mask).logits
    assert out.shape == (2, 35) and torch.isfinite(out).all()
    changed = ids.clone()
    changed[1, 3:] = 7
    assert torch.allclose(model(changed, mask).logits, out, atol=1e-6)


@pytest.mark.parametrize("name", sorted(RNN_LAYERS))
def test_every_rnn_layer_keeps_width_and_ignores_padding(name):
    torch.manual_seed(0)
    layer = RNN_LAYERS[name].from_config(TrialConfig(rnn=name, rnn_layers=2), hidden_size=8)
    hidden = torch.randn(3, 6, 8)
    mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2, [1] * 2 + [0] * 4], dtype=torch.bool)
    out = layer(hidden, mask)
    assert out.shape == (3, 6, 8)
    changed = hidden.clone()
    changed[~mask] = torch.randn(int((~mask).sum()), 8) * 100
    again = layer(changed, mask)
    assert torch.allclose(again[mask], out[mask], atol=1e-6)
    if name != "none":
        assert (again[~mask] == 0).all()


@pytest.mark.parametrize("name", ["lstm", "gru", "lstm_gru"])
def test_rnn_layers_run_in_full_precision_under_autocast(name):
    # CUDA autocast would run cuDNN RNNs in fp16 (no loss scaling in bf16 training): they opt out.
    torch.manual_seed(0)
    layer = RNN_LAYERS[name].from_config(TrialConfig(rnn=name), hidden_size=8)
    hidden = torch.randn(2, 5, 8)
    mask = torch.tensor([[1] * 5, [1] * 3 + [0] * 2], dtype=torch.bool)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        out = layer(hidden.to(torch.bfloat16), mask)
    assert out.dtype == torch.float32
    assert torch.allclose(out, layer(hidden.to(torch.bfloat16).float(), mask), atol=1e-6)


@pytest.mark.parametrize("kind", ["none", "inverse", "sqrt_inverse"])
def test_class_weights_favour_rare_labels(kind):
    counts = np.array([100, 25, 1, 0])
    weights = class_weights(kind, counts)
    if kind == "none":
        assert weights is None
        return
    assert weights[2] > weights[1] > weights[0] and weights[3] == weights[2]
    if kind == "inverse":
        assert weights[0].item() == pytest.approx(126 / 4 / 100)
    else:
        assert weights.mean().item() == pytest.approx(1.0)


def test_dice_loss_is_a_soft_macro_f1():
    dice = LOSSES["dice"](alpha=0.0, smooth=1e-6)
    target = torch.tensor([0, 1, 2])
    perfect = torch.eye(3) * 50
    assert dice(perfect, target).item() == pytest.approx(0.0, abs=1e-4)
    uniform, wrong = torch.zeros(3, 3), torch.eye(3)[[1, 2, 0]] * 50
    assert dice(perfect, target) < dice(uniform, target) < dice(wrong, target)
    # predicting a label absent from the batch costs: its dice is 0
    leaky = torch.tensor([[50.0, 0, 0, 50], [0, 50, 0, 0], [0, 0, 50, 0]])
    assert dice(leaky, target) > dice(torch.cat([perfect, torch.zeros(3, 1) - 50], 1), target)


def test_self_adjusting_dice_fades_out_confident_examples():
    target = torch.tensor([0, 1])
    logits = torch.tensor([[8.0, 0, 0], [0.5, 0, 0]], requires_grad=True)  # easy, then hard example
    LOSSES["dice"](alpha=1.0, smooth=1.0)(logits, target).backward()
    easy, hard = logits.grad.abs().sum(1)
    assert easy < hard


@pytest.mark.parametrize("name", [n for n in sorted(CONTRASTIVE) if n != "none"])
@pytest.mark.parametrize("target", ["samples", "samples+classes"])
def test_every_contrastive_loss_is_finite_and_differentiable(name, target):
    torch.manual_seed(0)
    cfg = TrialConfig(contrastive=name, contrastive_temperature=0.5, contrastive_target=target)
    loss_fn = CONTRASTIVE[name].from_config(cfg)
    features = torch.randn(6, 8, requires_grad=True)
    classes = torch.randn(35, 8, requires_grad=True)
    labels = torch.tensor([0, 0, 3, 3, 33, 34])  # two rare labels with a single sample each
    loss = loss_fn(features, labels, classes if target == "samples+classes" else None)
    assert torch.isfinite(loss) and loss > 0
    loss.backward()
    assert torch.isfinite(features.grad).all() and features.grad.abs().sum() > 0
    if target == "samples+classes":
        assert classes.grad[[0, 3, 33, 34]].abs().sum() > 0  # class rows are pulled and pushed too
    assert CONTRASTIVE["none"].from_config(cfg) is None


def test_contrastive_loss_without_positive_pairs_is_zero():
    loss_fn = CONTRASTIVE["supcon"].from_config(TrialConfig())
    assert loss_fn(torch.randn(4, 8), torch.arange(4)) == 0


def _output(batch=4, labels=5, groups=2):
    torch.manual_seed(0)
    return Output(logits=torch.randn(batch, labels), features=torch.randn(batch, 8),
                  level1_logits=torch.randn(batch, groups))


def test_training_loss_adds_auxiliary_and_contrastive_terms():
    out, target = _output(), torch.tensor([0, 0, 3, 4])
    level1_of = np.array([0, 0, 1, 1, 1])
    plain = TrainingLoss.from_config(TrialConfig(), class_counts=np.ones(5), level1_of=level1_of)
    base = plain(out, target)
    assert base == LOSSES["ce"]()(out.logits, target)
    aux = TrainingLoss.from_config(TrialConfig(aux_level1_weight=0.5), class_counts=np.ones(5), level1_of=level1_of)
    level1 = torch.nn.functional.cross_entropy(out.level1_logits, torch.tensor([0, 0, 1, 1]))
    assert aux(out, target) == pytest.approx((base + 0.5 * level1).item())
    con = TrainingLoss.from_config(TrialConfig(contrastive="supcon", contrastive_weight=0.2), class_counts=np.ones(5),
                                   level1_of=level1_of)
    term = CONTRASTIVE["supcon"].from_config(TrialConfig())(out.features, target)
    assert con(out, target) == pytest.approx((base + 0.2 * term).item())


def test_flooding_reflects_the_loss_below_the_level():
    out, target = _output(), torch.tensor([0, 1, 2, 3])
    logits = out.logits.clone().requires_grad_()
    flooded = TrainingLoss.from_config(TrialConfig(flood_b=10.0), class_counts=np.ones(5), level1_of=np.zeros(5))
    loss = flooded(Output(logits=logits, features=out.features, level1_logits=None), target)
    plain = LOSSES["ce"]()(logits, target)
    assert loss.item() == pytest.approx(20.0 - plain.item())  # |l - b| + b with l < b
    loss.backward()
    ascent = logits.grad.clone()
    logits.grad = None
    plain.backward()
    assert torch.allclose(ascent, -logits.grad)  # below the level, flooding climbs back


def test_auxiliary_head_exists_only_with_a_weight():
    assert build_model(TrialConfig(**TINY), vocab=toy_vocab(30), max_seq_len=8, num_labels=35,
                       num_level1=10).level1_head is None
    model = build_model(TrialConfig(**TINY, aux_level1_weight=0.3), vocab=toy_vocab(30), max_seq_len=8, num_labels=35,
                        num_level1=10).eval()
    out = model(torch.randint(5, 30, (2, 5)), torch.ones(2, 5, dtype=torch.bool))
    assert out.level1_logits.shape == (2, 10)
