"""Encoders: every one gives token states, ignores padding, and round-trips through its files."""

import json
import os
import pathlib
import random
import warnings

import numpy as np
import pytest
import torch
from transformers import AlbertConfig, AlbertModel, BertConfig, BertModel

from model.components import registry
from model.config import TrialConfig
from model.encoders import CheckpointEncoder, check_checkpoint, output_mask, read_vocab
from model.errors import ConfigError
from model.network import build_model
from model.nezha import NezhaConfig, NezhaModel, load_nezha, relative_position_table
from tests.conftest import TINY, toy_vocab

ENCODERS = registry("encoder")  # the complete table: model.components also registers model/wordvec_encoders.py's
CHECKPOINT_ENCODERS = sorted(n for n in ENCODERS if issubclass(ENCODERS[n], CheckpointEncoder))
WORDVEC_ENCODERS = ("textcnn", "dpcnn", "bigru", "bilstm")
RUN_VOCAB = toy_vocab(40)
SMALL = dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
             max_position_embeddings=24)


def write_checkpoint(kind: str, directory) -> torch.nn.Module:
    """A small random checkpoint of `kind` in `directory`; returns the model it holds (eval mode).

    Its vocab.txt holds the run's special tokens, most run tokens in a shuffled order, and tokens
    the run never saw; a few run tokens are missing (they must map to [UNK])."""
    torch.manual_seed(0)
    tokens = list(RUN_VOCAB[5:35]) + [f"x{i}" for i in range(20)]
    random.Random(0).shuffle(tokens)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + tokens
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n")
    if kind == "bert":
        model = BertModel(BertConfig(vocab_size=len(vocab), **SMALL), add_pooling_layer=False)
        model.save_pretrained(directory)
    elif kind == "albert":
        model = AlbertModel(AlbertConfig(vocab_size=len(vocab), embedding_size=8, **SMALL), add_pooling_layer=False)
        model.save_pretrained(directory)
    else:
        model = NezhaModel(NezhaConfig(vocab_size=len(vocab), max_relative_position=4, **SMALL))
        model.save(directory)
    return model.eval()


def write_vectors(directory, dim=8) -> np.ndarray:
    """A word-vector checkpoint (`python -m search embed`'s format) with most run tokens; returns its vectors."""
    from model.wordvec import write_checkpoint as write_wordvec

    tokens = list(RUN_VOCAB[5:35]) + [f"x{i}" for i in range(5)]
    vectors = np.random.default_rng(0).normal(size=(len(tokens), dim)).astype(np.float32)
    write_wordvec(directory, tokens=tokens, vectors=vectors, record={"format": "wordvec", "dim": dim})
    return vectors


def build(name, tmp_path):
    checkpoint = ""
    if name in CHECKPOINT_ENCODERS:
        write_checkpoint(name, tmp_path / name)
        checkpoint = str(tmp_path / name)
    elif name in WORDVEC_ENCODERS:
        write_vectors(tmp_path / name)
        checkpoint = str(tmp_path / name)
    cfg = TrialConfig(encoder=name, checkpoint=checkpoint, encoder_dropout=0.0, cnn_filters=6, rnn_hidden=5,
                      dpcnn_blocks=2, **TINY)
    return ENCODERS[name].from_config(cfg, vocab=RUN_VOCAB, max_seq_len=20).eval()


def test_the_conformance_tests_see_every_encoder():
    assert {"tiny", *CHECKPOINT_ENCODERS, *WORDVEC_ENCODERS} == set(ENCODERS)


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_every_encoder_gives_token_states_and_ignores_padding(name, tmp_path):
    encoder = build(name, tmp_path)
    ids = torch.randint(5, 40, (2, 7))
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[1, 5:] = False
    out = encoder(ids, mask)
    kept = output_mask(encoder, mask)  # (2, T'): T' = 7 but for dpcnn, which halves it per block
    assert kept.shape == ((2, 2) if name == "dpcnn" else (2, 7))
    assert out.shape == (2, kept.shape[1], encoder.hidden_size) and torch.isfinite(out).all()
    changed = ids.clone()
    changed[1, 5:] = 9
    assert torch.allclose(encoder(changed, mask)[kept], out[kept], atol=1e-5)
    assert isinstance(encoder.word_embeddings, torch.nn.Embedding)
    assert any(True for _ in encoder.embeddings.parameters())


@pytest.mark.parametrize("name", CHECKPOINT_ENCODERS)
def test_checkpoint_encoders_reproduce_the_saved_model_through_the_vocab_map(name, tmp_path):
    reference = write_checkpoint(name, tmp_path / "ref")
    cfg = TrialConfig(encoder=name, checkpoint=str(tmp_path / "ref"), encoder_dropout=0.0, **TINY)
    encoder = ENCODERS[name].from_config(cfg, vocab=RUN_VOCAB, max_seq_len=20).eval()
    checkpoint_vocab = read_vocab(tmp_path / "ref" / "vocab.txt")
    ids = torch.tensor([[2, 5, 6, 30, 37, 3], [2, 8, 9, 3, 0, 0]])  # 37 is not in the checkpoint's vocab
    mask = ids != 0
    mapped = torch.tensor([[checkpoint_vocab.get(RUN_VOCAB[i], checkpoint_vocab["[UNK]"]) for i in row]
                           for row in ids.tolist()])
    assert mapped[0, 4] == checkpoint_vocab["[UNK]"] and mapped[0, 1] == checkpoint_vocab["5"]
    if name == "nezha":
        want = reference(mapped, mask)
    else:
        want = reference(input_ids=mapped, attention_mask=mask.long()).last_hidden_state
    assert torch.equal(encoder(ids, mask), want)


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_a_saved_model_loads_after_its_checkpoint_went(name, tmp_path):
    """A model directory keeps what builds its encoder (model/network.py `build_for_weights`): the
    checkpoint a model was fine-tuned from, or the vectors it started from, may move or go."""
    from model.data import LabelSet, Vocab
    from model.encoders import encoder_architecture
    from model.inference import ModelInfo, load_model_dir, save_model_dir

    torch.manual_seed(1)
    (tmp_path / "first").mkdir()
    encoder = build(name, tmp_path / "first")  # writes the checkpoint (if any) under first/
    cfg = TrialConfig(encoder=name, checkpoint=str(tmp_path / "first" / name) if name != "tiny" else "",
                      encoder_dropout=0.0, cnn_filters=6, rnn_hidden=5, dpcnn_blocks=2, pooler="mean", **TINY)
    model = build_model(cfg, vocab=RUN_VOCAB, max_seq_len=20, num_labels=4, encoder=encoder).eval()
    info = ModelInfo(config=cfg, vocab=Vocab(tokens=tuple(RUN_VOCAB)), max_seq_len=20,
                     labels=LabelSet.from_labels(["1-1", "1-2", "2-3", "2-4"]),
                     encoder_architecture=encoder_architecture(cfg))
    assert (info.encoder_architecture is not None) == (name in CHECKPOINT_ENCODERS)
    directory = save_model_dir(tmp_path / "model", weights=model.state_dict(), info=info)
    (tmp_path / "first").rename(tmp_path / "elsewhere")
    loaded, _ = load_model_dir(directory)
    ids = torch.randint(5, 40, (3, 9))
    mask = torch.ones(3, 9, dtype=torch.bool)
    mask[2, 6:] = False
    with torch.no_grad():
        assert torch.allclose(loaded(ids, mask).logits, model(ids, mask).logits, atol=1e-6)


def test_tiny_encoder_round_trips_through_its_state_dict(tmp_path):
    encoder = build("tiny", tmp_path)
    torch.save(encoder.state_dict(), tmp_path / "tiny.pt")
    again = ENCODERS["tiny"].from_config(TrialConfig(encoder_dropout=0.0, **TINY), vocab=RUN_VOCAB,
                                         max_seq_len=20).eval()
    again.load_state_dict(torch.load(tmp_path / "tiny.pt", weights_only=True))
    ids, mask = torch.randint(5, 40, (2, 6)), torch.ones(2, 6, dtype=torch.bool)
    assert torch.equal(again(ids, mask), encoder(ids, mask))


def test_nezha_loads_the_public_checkpoint_layout(tmp_path):
    model = write_checkpoint("nezha", tmp_path / "a")
    # the original release: pytorch_model.bin, bert_config.json, keys under bert., LayerNorm gamma/beta,
    # plus pre-training heads that are not ours
    state = {}
    for key, value in model.state_dict().items():
        key = key.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")
        state[f"bert.{key}"] = value
    state["cls.predictions.bias"] = torch.zeros(3)
    legacy = tmp_path / "b"
    legacy.mkdir()
    torch.save(state, legacy / "pytorch_model.bin")
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    legacy_config = {**config, "hidden_act": "gelu", "use_relative_position": True}
    (legacy / "bert_config.json").write_text(json.dumps(legacy_config))
    loaded = load_nezha(legacy).eval()
    ids, mask = torch.randint(5, 40, (2, 6)), torch.ones(2, 6, dtype=torch.bool)
    assert torch.equal(loaded(ids, mask), model(ids, mask))
    del state["bert.encoder.layer.1.output.dense.weight"]
    torch.save(state, legacy / "pytorch_model.bin")
    with pytest.raises(ValueError, match=r"lacks 1 NEZHA weight"):
        load_nezha(legacy)


def test_nezha_relative_positions_follow_the_reference_formula():
    table = relative_position_table(length=6, depth=4, max_relative_position=2)
    assert table.shape == (6, 6, 4)
    # query 1, key 4: distance 3, clipped to 2, shifted index 4
    assert table[1, 4].tolist() == pytest.approx([np.sin(4), np.cos(4), np.sin(4 / 100), np.cos(4 / 100)])
    assert torch.equal(table[0, 0], table[3, 3])  # only the distance matters
    assert torch.equal(table[0, 5], table[0, 4])  # beyond the clip, all the same


def test_a_checkpoint_encoder_without_a_checkpoint_fails_when_the_config_is_built():
    # Pure cross-field rule: no filesystem needed to know that no directory is named.
    with pytest.raises(ConfigError, match=r"`checkpoint` is '', but encoder 'bert' loads a local checkpoint: "
                                          r"set it to a directory"):
        TrialConfig(encoder="bert")


BAD_CHECKPOINTS = [
    (lambda d: str(d / "none"), r"that directory does not exist \(on a cluster, every node must see it\)"),
    (lambda d: (d.joinpath("x").mkdir(), str(d / "x"))[1], r".*x has no vocab.txt, config.json or bert_config.json, "
                                                           r"model.safetensors or pytorch_model.bin"),
]


@pytest.mark.parametrize("make, message", BAD_CHECKPOINTS)
def test_bad_checkpoint_directories_fail_when_the_encoder_is_built_not_in_the_config(tmp_path, make, message):
    cfg = TrialConfig(encoder="bert", checkpoint=make(tmp_path))  # no I/O: builds on any machine
    assert TrialConfig.from_dict(cfg.to_dict()) == cfg
    where = r"`checkpoint` is '.*', but encoder 'bert' loads a local checkpoint: "
    with pytest.raises(ConfigError, match=where + message):
        check_checkpoint(cfg)
    with pytest.raises(ConfigError, match=where + message):
        build_model(cfg, vocab=RUN_VOCAB, max_seq_len=20, num_labels=3)


def test_the_config_does_no_filesystem_io(monkeypatch):
    TrialConfig(encoder="bert", checkpoint="/x")  # loads the registries first (importing may stat files)

    def no_io(*args, **kwargs):
        raise AssertionError("TrialConfig touched the filesystem")

    for name in ("exists", "is_dir", "is_file", "stat"):
        monkeypatch.setattr(pathlib.Path, name, no_io)
    for name in ("stat", "listdir", "scandir"):
        monkeypatch.setattr(os, name, no_io)
    cfg = TrialConfig(encoder="bert", checkpoint="/does/not/exist")
    monkeypatch.undo()
    assert cfg.checkpoint == "/does/not/exist"


def test_tiny_needs_no_checkpoint():
    check_checkpoint(TrialConfig(encoder="tiny", checkpoint="/does/not/exist"))  # ignored, like the field


def test_sequences_longer_than_the_checkpoint_are_refused(tmp_path):
    write_checkpoint("bert", tmp_path / "b")
    cfg = TrialConfig(encoder="bert", checkpoint=str(tmp_path / "b"))
    with pytest.raises(ConfigError, match=r"--max-seq-len 64 exceeds the 24 positions"):
        ENCODERS["bert"].from_config(cfg, vocab=RUN_VOCAB, max_seq_len=64)


def _bert_for_masked_lm_checkpoint(directory):
    """A BertForMaskedLM checkpoint, as `python -m search pretrain` writes: encoder + MLM head."""
    from transformers import BertForMaskedLM

    write_checkpoint("bert", directory)  # for vocab.txt
    vocab_size = len((directory / "vocab.txt").read_text().split())
    BertForMaskedLM(BertConfig(vocab_size=vocab_size, **SMALL)).save_pretrained(directory)


def test_a_pretraining_checkpoint_loads_without_a_report_or_warnings(tmp_path, capsys, caplog):
    _bert_for_masked_lm_checkpoint(tmp_path / "mlm")
    cfg = TrialConfig(encoder="bert", checkpoint=str(tmp_path / "mlm"), **TINY)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the MLM head's weights are expected: no warning
        ENCODERS["bert"].from_config(cfg, vocab=RUN_VOCAB, max_seq_len=20)
    captured = capsys.readouterr()
    assert "LOAD REPORT" not in captured.out + captured.err + caplog.text


def test_encoder_weights_missing_from_the_checkpoint_are_warned_about(tmp_path):
    from safetensors.torch import load_file, save_file

    write_checkpoint("bert", tmp_path / "cut")
    weights = load_file(tmp_path / "cut" / "model.safetensors")
    dropped = next(k for k in weights if "encoder.layer.1." in k)
    save_file({k: v for k, v in weights.items() if k != dropped}, tmp_path / "cut" / "model.safetensors",
              metadata={"format": "pt"})
    cfg = TrialConfig(encoder="bert", checkpoint=str(tmp_path / "cut"), **TINY)
    with pytest.warns(UserWarning, match="1 encoder weights are not in the checkpoint"):
        ENCODERS["bert"].from_config(cfg, vocab=RUN_VOCAB, max_seq_len=20)
