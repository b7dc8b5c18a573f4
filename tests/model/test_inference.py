import numpy as np
import pytest
import torch

from model import metrics as M
from model.config import TrialConfig
from model.errors import DamagedFile
from model.inference import (
    ModelInfo,
    encode_texts,
    load_model_dir,
    probabilities,
    save_model_dir,
)
from model.train import fit
from tests.conftest import TINY


@pytest.mark.parametrize("swa_start", [0, 1])
def test_a_saved_model_dir_reproduces_the_best_evaluation(small_data, tmp_path, swa_start):
    cfg = TrialConfig(**TINY, max_epochs=2, lr=3e-3, batch_size=32, swa_start=swa_start)
    saved = {}

    def on_eval(evaluation):
        if evaluation.is_best:
            saved.update(weights=evaluation.scored_weights(), probs=evaluation.dev_probabilities,
                         f1=evaluation.metrics[M.LEVEL2_MACRO_F1])

    fit(cfg, small_data, on_eval)
    info = ModelInfo(config=cfg, vocab=small_data.vocab, max_seq_len=small_data.max_seq_len,
                     labels=small_data.labels)
    directory = save_model_dir(tmp_path / "fold0", weights=saved["weights"], info=info)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fold0"]  # no temporary left behind
    model, loaded = load_model_dir(directory)
    assert loaded == info
    probs = probabilities(model, small_data.dev, batch_size=64, device=torch.device("cpu"))
    assert probs.shape == (len(small_data.dev), small_data.num_labels)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    # another batch size pads differently; the masked model gives the same numbers up to rounding
    np.testing.assert_allclose(probs, saved["probs"], atol=1e-5)
    assert M.classification_metrics(small_data.dev.labels, probs.argmax(1),
                                    level1_of=small_data.labels.level1_of)[M.LEVEL2_MACRO_F1] == saved["f1"]


def test_a_word_vector_model_loads_after_its_vectors_went(small_data, tmp_path):
    """A fold model (or a trial's checkpoint) of a word-vector encoder needs its vectors only to
    build: a run copied elsewhere, its original and vectors deleted, still predicts the same."""
    from tests.model.test_wordvec_encoders import write_vectors

    vectors = tmp_path / "vectors"
    write_vectors(vectors, small_data.vocab.tokens[5:], dim=12)
    cfg = TrialConfig(encoder="textcnn", checkpoint=str(vectors), cnn_filters=8, cnn_kernels="1,2", pooler="max",
                      max_epochs=1, lr=3e-3, batch_size=32)
    saved = {}
    fit(cfg, small_data, lambda e: saved.update(weights=e.scored_weights(), probs=e.dev_probabilities))
    info = ModelInfo(config=cfg, vocab=small_data.vocab, max_seq_len=small_data.max_seq_len,
                     labels=small_data.labels)
    directory = save_model_dir(tmp_path / "fold0", weights=saved["weights"], info=info)
    for path in vectors.iterdir():
        path.unlink()
    vectors.rmdir()
    model, loaded = load_model_dir(directory)
    assert loaded.config.checkpoint == str(vectors)  # model.json still says what it was trained from
    probs = probabilities(model, small_data.dev, batch_size=64, device=torch.device("cpu"))
    np.testing.assert_allclose(probs, saved["probs"], atol=1e-5)


def test_encode_texts_maps_unseen_tokens_to_unk(small_data):
    split = encode_texts(["never-seen-token 3", "，"], small_data.vocab, max_seq_len=8)
    unk = small_data.vocab.index["[UNK]"]
    assert split.ids[0, 1] == unk and split.lengths.tolist() == [4, 3]
    assert split.labels.tolist() == [0, 0]


def test_load_model_dir_says_what_is_missing(tmp_path):
    with pytest.raises(DamagedFile, match=r"model\.json is damaged \(missing\)"):
        load_model_dir(tmp_path)
