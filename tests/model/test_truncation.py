"""Per-trial truncation of long texts (`truncation`, `head_share`): what each mode keeps, that the
default leaves every array and batch as before, and that a saved model cuts test texts as it was
trained to."""

import numpy as np
import pytest
import torch

from model.config import TrialConfig
from model.data import SPECIAL_TOKENS, EncodedSplit, Truncation, Vocab, prepare_data
from model.inference import ModelInfo, batches, encode_texts, load_model_dir, probabilities, save_model_dir
from model.train import fit
from tests.conftest import TINY

VOCAB = Vocab(tokens=SPECIAL_TOKENS + tuple(f"t{i}" for i in range(20)))
TEXTS = [" ".join(f"t{i}" for i in range(n)) for n in (3, 6, 10, 15)]  # body of max_seq_len 8: 6 tokens


def kept(mode, share=0.5):
    """The tokens each of TEXTS keeps under `mode`, read back from the batch `batches` builds."""
    split = encode_texts(TEXTS, VOCAB, max_seq_len=8)
    (ids, mask, _), = batches(split, [np.arange(len(TEXTS))], torch.device("cpu"),
                              truncation=Truncation(mode=mode, head_share=share))
    rows = []
    for row, keep in zip(ids.tolist(), mask.tolist(), strict=True):
        tokens = [VOCAB.tokens[i] for i, k in zip(row, keep, strict=True) if k]
        assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]"
        rows.append(" ".join(tokens[1:-1]))
    return rows


def test_each_mode_keeps_what_it_says():
    assert kept("head") == ["t0 t1 t2", "t0 t1 t2 t3 t4 t5", "t0 t1 t2 t3 t4 t5", "t0 t1 t2 t3 t4 t5"]
    assert kept("tail") == ["t0 t1 t2", "t0 t1 t2 t3 t4 t5", "t4 t5 t6 t7 t8 t9", "t9 t10 t11 t12 t13 t14"]
    assert kept("head_tail") == ["t0 t1 t2", "t0 t1 t2 t3 t4 t5", "t0 t1 t2 t7 t8 t9", "t0 t1 t2 t12 t13 t14"]
    # 0.25 of 6 is 1.5: rounded half up to 2 head tokens, then 4 from the tail
    assert kept("head_tail", share=0.25)[3] == "t0 t1 t11 t12 t13 t14"


def test_the_competition_split_of_126_tokens():
    assert Truncation(mode="head_tail", head_share=0.25).head_tokens(126) == 32
    assert Truncation(mode="head").head_tokens(126) == 126 and Truncation(mode="tail").head_tokens(126) == 0


def test_the_default_leaves_the_arrays_and_the_batches_as_they_were(small_frame):
    data = prepare_data(small_frame, folds=4, fold=0, seed=0, max_seq_len=48)
    texts = small_frame["text"].to_numpy()
    from model.data import fold_indices

    train_idx, _ = fold_indices(small_frame["label"].tolist(), folds=4, fold=0, seed=0)
    ids, lengths = data.vocab.encode(texts[train_idx], max_seq_len=48)  # the encoding before truncation modes
    assert np.array_equal(data.train.ids, ids) and np.array_equal(data.train.lengths, lengths)
    assert data.train.tails.shape == (len(data.train), 46) and data.train.tails.dtype == np.int32
    assert (data.train.lengths == 48).mean() > 0.2  # so the cut rows matter below
    idx = np.arange(0, len(data.train), 3)
    width = int(data.train.lengths[idx].max())
    assert np.array_equal(Truncation().select(data.train, idx, width), data.train.ids[idx, :width])
    assert not np.array_equal(Truncation(mode="tail").select(data.train, idx, width), data.train.ids[idx, :width])


def test_tail_truncation_of_a_split_without_tails_says_how_to_encode_it():
    ids, lengths = VOCAB.encode(TEXTS, max_seq_len=8)
    split = EncodedSplit(ids=ids, lengths=lengths, labels=np.zeros(4, dtype=np.int64))
    assert Truncation(mode="tail").select(split, np.array([0]), 5).shape == (1, 5)  # no long row: nothing to cut
    with pytest.raises(ValueError, match=r"truncation 'tail' needs the texts' tails, .*encode it with"):
        Truncation(mode="tail").select(split, np.arange(4), 8)


def test_training_sees_the_trials_truncation(small_data):
    cfg = TrialConfig(**TINY, max_epochs=1, lr=3e-3, batch_size=32)
    head = fit(cfg, small_data).best.metrics
    tail = fit(TrialConfig(**{**cfg.to_dict(), "truncation": "tail"}), small_data).best.metrics
    assert head["train_loss"] != tail["train_loss"]


def test_a_saved_model_cuts_test_texts_as_it_was_trained_to(small_data, small_frame, tmp_path):
    cfg = TrialConfig(**TINY, max_epochs=1, lr=3e-3, batch_size=32, truncation="head_tail", head_share=0.25)
    saved = {}
    fit(cfg, small_data, lambda e: saved.update(weights=e.scored_weights()))
    info = ModelInfo(config=cfg, vocab=small_data.vocab, max_seq_len=48, labels=small_data.labels)
    model, loaded = load_model_dir(save_model_dir(tmp_path / "fold0", weights=saved["weights"], info=info))
    assert loaded.config.truncation == "head_tail" and model.truncation == Truncation("head_tail", 0.25)
    texts = [t for t in small_frame["text"] if len(t.split()) > 60][:20]
    assert len(texts) == 20
    cpu = torch.device("cpu")
    got = probabilities(model, encode_texts(texts, small_data.vocab, max_seq_len=48), batch_size=8, device=cpu)
    # the same texts cut by hand to the first 12 (0.25 of 46, rounded) and the last 34 tokens
    cut = [" ".join(t.split()[:12] + t.split()[-34:]) for t in texts]
    want = probabilities(model, encode_texts(cut, small_data.vocab, max_seq_len=48), batch_size=8, device=cpu)
    np.testing.assert_allclose(got, want, atol=1e-6)
    model.truncation = Truncation()  # the same weights reading the heads predict otherwise
    heads = probabilities(model, encode_texts(texts, small_data.vocab, max_seq_len=48), batch_size=8, device=cpu)
    assert np.abs(heads - got).max() > 50 * 1e-6  # measured 3e-4 after one epoch
