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


def test_encode_texts_maps_unseen_tokens_to_unk(small_data):
    split = encode_texts(["never-seen-token 3", "，"], small_data.vocab, max_seq_len=8)
    unk = small_data.vocab.index["[UNK]"]
    assert split.ids[0, 1] == unk and split.lengths.tolist() == [4, 3]
    assert split.labels.tolist() == [0, 0]


def test_load_model_dir_says_what_is_missing(tmp_path):
    with pytest.raises(DamagedFile, match=r"model\.json is damaged \(missing\)"):
        load_model_dir(tmp_path)
