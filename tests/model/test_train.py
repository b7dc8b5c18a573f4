import io

import numpy as np
import pytest
import torch

from model import metrics as M
from model.config import TrialConfig
from model.train import bucketed_batches, cpu_copy, fit


def test_fit_learns_well_above_chance(small_data):
    cfg = TrialConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, pooler="mean",
                      max_epochs=6, lr=3e-3, batch_size=16)
    seen = []
    result = fit(cfg, small_data, seen.append)
    assert [e.epoch for e in seen] == [1, 2, 3, 4, 5, 6]
    assert seen[-1].is_last and not seen[0].is_last
    majority = np.bincount(small_data.dev.labels).max() / len(small_data.dev)
    assert result.best.metrics[M.ACCURACY] > majority + 0.2  # measured 0.53 vs 0.13
    # always predicting the majority label scores 1/35 * 2p/(1+p) = 0.007 macro-F1; measured 0.33
    assert result.best.metrics[M.LEVEL2_MACRO_F1] > 0.15
    assert seen[-1].metrics[M.LEVEL2_MACRO_F1] > seen[0].metrics[M.LEVEL2_MACRO_F1] + 0.1
    assert seen[-1].metrics[M.BEST_LEVEL2_MACRO_F1] == result.best.metrics[M.LEVEL2_MACRO_F1]
    assert seen[-1].metrics[M.FINISHED] is True


def scores(evaluations):
    """The metrics of each evaluation without the timing ones (which no run repeats)."""
    return [{k: v for k, v in e.metrics.items() if k != "train_samples_per_s"} for e in evaluations]


def test_fit_is_deterministic_on_cpu(small_data, tiny_cfg):
    a = fit(tiny_cfg, small_data)
    b = fit(tiny_cfg, small_data)
    assert scores(a.history) == scores(b.history)
    assert all(e.metrics["train_samples_per_s"] > 0 for e in a.history)


def test_resume_continues_exactly(small_data, tiny_cfg):
    cfg = tiny_cfg.__class__(**{**tiny_cfg.to_dict(), "max_epochs": 3})
    states = {}
    full = fit(cfg, small_data, lambda e: states.setdefault(e.epoch, e.snapshot()))
    resumed = fit(cfg, small_data, resume=states[1])
    assert [e.epoch for e in resumed.history] == [2, 3]
    assert scores(resumed.history) == scores(full.history[1:])


def test_snapshot_holds_the_cuda_rng_states_and_resume_restores_them(small_data, tiny_cfg, monkeypatch):
    # Dropout on a GPU draws from the CUDA generators: without their states a resumed GPU run
    # drifts. CUDA is faked (training stays on CPU) so this runs on any machine.
    fake_states = [torch.tensor([1, 2, 3], dtype=torch.uint8), torch.tensor([4, 5, 6], dtype=torch.uint8)]
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [s.clone() for s in fake_states])
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", restored.append)
    states = []
    fit(tiny_cfg, small_data, lambda e: states.append(e.snapshot()), device="cpu")
    assert all(torch.equal(a, b) for a, b in zip(states[0]["cuda_rng"], fake_states, strict=True))
    # through the round trip search/trainable.py makes: torch.save, then a weights_only load
    buffer = io.BytesIO()
    torch.save({**states[0], "report": {}}, buffer)
    buffer.seek(0)
    fit(tiny_cfg, small_data, device="cpu", resume=torch.load(buffer, weights_only=True))
    assert len(restored) == 1
    assert all(torch.equal(a, b) for a, b in zip(restored[0], fake_states, strict=True))


def test_resume_leaves_the_state_it_resumed_from_unchanged(small_data, tiny_cfg):
    states = []
    fit(tiny_cfg, small_data, lambda e: states.append(e.snapshot()))
    moments = [t.clone() for s in states[0]["optimizer"]["state"].values() for t in s.values()]
    fit(tiny_cfg, small_data, resume=states[0])
    after = [t for s in states[0]["optimizer"]["state"].values() for t in s.values()]
    assert all(torch.equal(a, b) for a, b in zip(moments, after, strict=True))


def test_patience_stops_and_marks_the_last_evaluation(small_data, tiny_cfg):
    # lr so small nothing improves after epoch 1 for long: patience 1 must stop early
    cfg = tiny_cfg.__class__(**{**tiny_cfg.to_dict(), "max_epochs": 6, "patience": 1, "lr": 1e-7,
                                "warmup_ratio": 0.0, "schedule": "constant"})
    result = fit(cfg, small_data)
    assert len(result.history) < 6 and result.history[-1].is_last
    assert result.history[-1].metrics[M.FINISHED]


@pytest.mark.parametrize("batch_size", [1, 7, 32])
def test_bucketed_batches_cover_every_row_once_with_similar_lengths(batch_size):
    lengths = np.random.default_rng(0).integers(3, 300, size=1000)
    groups = bucketed_batches(lengths, batch_size=batch_size, rng=np.random.default_rng(1))
    assert sorted(np.concatenate(groups)) == list(range(1000))
    assert max(len(g) for g in groups) == batch_size
    again = bucketed_batches(lengths, batch_size=batch_size, rng=np.random.default_rng(1))
    assert all(np.array_equal(a, b) for a, b in zip(groups, again, strict=True))
    if batch_size > 1:
        spread = np.mean([np.ptp(lengths[g]) for g in groups])
        assert spread < 0.2 * np.ptp(lengths)


def test_fit_runs_a_checkpoint_encoder(small_data, tmp_path):
    from transformers import BertConfig, BertModel

    directory = tmp_path / "bert"
    BertModel(BertConfig(vocab_size=len(small_data.vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=64), add_pooling_layer=False
              ).save_pretrained(directory)
    (directory / "vocab.txt").write_text("\n".join(small_data.vocab.tokens) + "\n")
    cfg = TrialConfig(encoder="bert", checkpoint=str(directory), pooler="mean", max_epochs=2, lr=3e-3,
                      embedding_lr=1e-3, head_lr=5e-3, batch_size=16)
    result = fit(cfg, small_data)
    assert [e.epoch for e in result.history] == [1, 2]
    losses = [e.metrics["train_loss"] for e in result.history]
    assert np.isfinite(losses).all() and losses[1] < losses[0]


def test_cpu_copy_copies_every_tensor_and_keeps_the_state_dict_metadata():
    module = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    optimizer = torch.optim.AdamW(module.parameters())
    module(torch.randn(4, 2)).sum().backward()
    optimizer.step()
    state = {"model": module.state_dict(), "optimizer": optimizer.state_dict(), "rng": [torch.ones(2)],
             "pair": (torch.zeros(1), 3), "epoch": 1.5}
    copied = cpu_copy(state)
    assert type(copied["model"]) is type(state["model"]) and copied["model"]._metadata == state["model"]._metadata
    assert type(copied["optimizer"]) is dict and type(copied["pair"]) is tuple and copied["epoch"] == 1.5
    tensors = [(copied["model"][k], v) for k, v in state["model"].items()] + [
        (copied["optimizer"]["state"][0]["exp_avg"], state["optimizer"]["state"][0]["exp_avg"]),
        (copied["rng"][0], state["rng"][0]), (copied["pair"][0], state["pair"][0])]
    assert all(a.device.type == "cpu" and torch.equal(a, b) and a.data_ptr() != b.data_ptr() for a, b in tensors)
    optimizer.step()  # training goes on: the copy does not move with it
    assert not torch.equal(copied["optimizer"]["state"][0]["exp_avg"], optimizer.state_dict()["state"][0]["exp_avg"])
    copied["optimizer"]["param_groups"][0]["lr"] = 9.0
    assert optimizer.param_groups[0]["lr"] != 9.0
    module.load_state_dict(copied["model"])  # loads back
