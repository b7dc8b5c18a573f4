"""The encoders over word vectors (model/wordvec_encoders.py): checkpoint init, shapes and masks,
padding, determinism, adversarial training, frozen embeddings and exact resume."""

import numpy as np
import pytest
import torch

from model.adversarial import ADVERSARIAL
from model.config import TrialConfig
from model.encoders import check_checkpoint, output_mask
from model.errors import ConfigError
from model.network import build_model
from model.train import fit
from model.training_loss import TrainingLoss
from model.wordvec import token_pairs, write_checkpoint
from model.wordvec_encoders import DPCNN, BigramIndex, TextCNN, downsample
from tests.conftest import toy_vocab

WORDVEC_ENCODERS = ("textcnn", "dpcnn", "bigru", "bilstm")
RUN_VOCAB = toy_vocab(40)
SMALL = dict(cnn_filters=8, cnn_kernels="1,2,3", rnn_hidden=6, dpcnn_blocks=2, embedding_dim=12)


def write_vectors(directory, tokens, dim=12, seed=0):
    vectors = np.random.default_rng(seed).normal(size=(len(tokens), dim)).astype(np.float32)
    write_checkpoint(directory, tokens=list(tokens), vectors=vectors, record={"format": "wordvec", "dim": dim})
    return vectors


def config(**values):
    return TrialConfig(**{**SMALL, "encoder_dropout": 0.0, **values})


def write_pairs(directory, pairs, dim=12, seed=0):
    """A checkpoint of the bigram view (`embed --view bigrams`): one vector per "a b" pair."""
    vectors = np.random.default_rng(seed).normal(size=(len(pairs), dim)).astype(np.float32)
    write_checkpoint(directory, tokens=list(pairs), vectors=vectors,
                     record={"format": "wordvec", "dim": dim, "view": "bigrams"})
    return vectors


# Every pair of the run's ordinary tokens (ids 5..39), whatever order a random batch puts them in
ALL_PAIRS = [f"{a} {b}" for a in RUN_VOCAB[5:] for b in RUN_VOCAB[5:]]


def view_config(view, tmp_path, **values):
    """`config(**values)` reading `view`: the bigram view with a checkpoint of every pair."""
    if view == "tokens":
        return config(**values)
    write_pairs(tmp_path / "pairs", ALL_PAIRS)
    return config(**values, view="bigrams", checkpoint=str(tmp_path / "pairs"), embedding_dim=0)


# ----------------------------------------------------------------------------- the embedding


@pytest.mark.parametrize("name", WORDVEC_ENCODERS)
def test_a_checkpoint_initialises_the_run_tokens_it_has_and_only_those(name, tmp_path):
    # the checkpoint has run tokens 5..29 in another order, and tokens the run never saw
    tokens = list(reversed(RUN_VOCAB[5:30])) + ["never", "seen"]
    vectors = write_vectors(tmp_path / "wv", tokens)
    torch.manual_seed(0)
    cfg = config(encoder=name, checkpoint=str(tmp_path / "wv"), embedding_dim=0)
    weight = build_model(cfg, vocab=RUN_VOCAB, max_seq_len=16, num_labels=5).encoder.word_embeddings.weight.detach()
    assert weight.shape == (40, 12)  # embedding_dim 0: the checkpoint's
    for run_id in range(5, 30):
        assert torch.equal(weight[run_id], torch.from_numpy(vectors[tokens.index(RUN_VOCAB[run_id])]))
    assert torch.equal(weight[0], torch.zeros(12))  # [PAD]
    others = weight[[1, 2, 3, 4, *range(30, 40)]]  # specials but [PAD], and run tokens the checkpoint lacks
    assert (others != 0).all() and others.std().item() == pytest.approx(float(vectors.std()), rel=0.35)


def test_without_a_checkpoint_the_embedding_is_random_and_embedding_dim_wide():
    torch.manual_seed(0)
    encoder = build_model(config(encoder="textcnn", embedding_dim=0), vocab=RUN_VOCAB, max_seq_len=16,
                          num_labels=5).encoder
    assert encoder.word_embeddings.weight.shape == (40, 128)
    assert build_model(config(encoder="textcnn"), vocab=RUN_VOCAB, max_seq_len=16,
                       num_labels=5).encoder.word_embeddings.weight.shape == (40, 12)
    assert torch.equal(encoder.word_embeddings.weight[0], torch.zeros(128))
    assert encoder.word_embeddings.padding_idx == 0


def test_a_checkpoint_of_other_tokens_is_warned_about(tmp_path):
    write_vectors(tmp_path / "wv", [f"foreign{i}" for i in range(30)])
    with pytest.warns(UserWarning, match=r"only 0 of the run's 40 tokens have a vector there"):
        build_model(config(encoder="textcnn", checkpoint=str(tmp_path / "wv"), embedding_dim=0), vocab=RUN_VOCAB,
                    max_seq_len=16, num_labels=5)


def test_checkpoint_problems_are_found_before_the_encoder_is_built(tmp_path):
    write_vectors(tmp_path / "wv", RUN_VOCAB[5:], dim=12)
    cfg = config(encoder="dpcnn", checkpoint=str(tmp_path / "wv"), embedding_dim=16)  # no I/O: builds anywhere
    with pytest.raises(ConfigError, match=r"its vectors have 12 dimensions and `embedding_dim` is 16; set "
                                          r"embedding_dim 0 \(take the checkpoint's\) or 12"):
        check_checkpoint(cfg)
    missing = config(encoder="bigru", checkpoint=str(tmp_path / "none"))
    with pytest.raises(ConfigError, match=r"`checkpoint` is '.*none' \(word vectors of encoder 'bigru'\), but .* does "
                                          r"not exist .*python -m search embed"):
        check_checkpoint(missing)
    with pytest.raises(ConfigError, match=r"does not exist"):
        build_model(missing, vocab=RUN_VOCAB, max_seq_len=16, num_labels=5)
    check_checkpoint(config(encoder="textcnn"))  # random init: nothing to check


@pytest.mark.parametrize("values, message", [
    (dict(cnn_kernels="2,x"), r"`cnn_kernels` is '2,x', but must be kernel widths separated by commas"),
    (dict(cnn_kernels="3,3"), r"its widths must be distinct and in 1..32"),
    (dict(cnn_kernels="0"), r"its widths must be distinct and in 1..32"),
    (dict(encoder="textcnn", cnn_filters=3, cnn_kernels="1,2,3", rnn="gru"),
     r"encoder 'textcnn' is 9 wide \(odd\) .* `rnn` 'gru' needs an even width"),
    (dict(head_share=1.0), r"`head_share` is 1.0, but must be < 1"),
    (dict(truncation="middle"), r"`truncation` is 'middle', but must be one of: head, tail, head_tail"),
])
def test_bad_values_of_the_new_fields_are_refused(values, message):
    with pytest.raises(ConfigError, match=message):
        TrialConfig(**values)


# ----------------------------------------------------------------------------- the bigram view


def test_token_pairs_join_each_token_to_the_next():
    assert token_pairs(["a", "b", "c"]) == ["a b", "b c"]
    assert token_pairs(["a"]) == [] and token_pairs([]) == []


@pytest.mark.parametrize("name", WORDVEC_ENCODERS)
def test_the_bigram_view_reads_the_checkpoint_vector_of_each_token_and_the_next(name, tmp_path):
    t = RUN_VOCAB
    pairs = [f"{t[7]} {t[8]}", f"{t[8]} {t[9]}", f"{t[9]} {t[7]}", "never seen", f"{t[7]} never"]
    vectors = write_pairs(tmp_path / "pairs", pairs)
    torch.manual_seed(0)
    encoder = build_model(config(encoder=name, view="bigrams", checkpoint=str(tmp_path / "pairs"), embedding_dim=0),
                          vocab=RUN_VOCAB, max_seq_len=16, num_labels=5).encoder.eval()
    weight = encoder.word_embeddings.weight.detach()
    assert weight.shape == (2 + 3, 12)  # [PAD], every other pair, the 3 pairs of run tokens
    assert torch.equal(weight[BigramIndex.PAD_ROW], torch.zeros(12)) and (weight[BigramIndex.OTHER_ROW] != 0).all()
    ids = torch.tensor([[2, 7, 8, 9, 7, 5, 3], [2, 9, 7, 3, 0, 0, 0]])  # [CLS] ... [SEP] [PAD]
    mask = ids != 0
    got = encoder.embed(ids, mask)
    want = {0: "other", 1: pairs[0], 2: pairs[1], 3: pairs[2], 4: "other", 5: "other", 6: "pad"}
    for position, pair in want.items():
        row = {"other": weight[BigramIndex.OTHER_ROW], "pad": torch.zeros(12)}.get(pair)
        expected = row if row is not None else torch.from_numpy(vectors[pairs.index(pair)])
        assert torch.equal(got[0, position], expected), position
    assert torch.equal(got[1, 1], torch.from_numpy(vectors[2]))  # "9 7"
    assert torch.equal(got[1, 3:], torch.zeros(4, 12))  # [SEP] (no next token) and padding


@pytest.mark.parametrize("values, message", [
    (dict(encoder="textcnn", view="bigrams"), r"`view` bigrams \(encoder 'textcnn'\) takes its pairs from a "
                                              r"checkpoint, but `checkpoint` is empty; .*embed --view bigrams"),
    (dict(encoder="tiny", view="bigrams"), r"encoder 'tiny' reads tokens only"),
    (dict(view="words"), r"`view` is 'words', but must be one of: tokens, bigrams"),
])
def test_bigram_view_configs_that_cannot_work_are_refused(values, message):
    with pytest.raises(ConfigError, match=message):
        TrialConfig(**values)


def test_a_checkpoint_of_the_other_view_is_refused_before_the_encoder_is_built(tmp_path):
    write_vectors(tmp_path / "tokens", RUN_VOCAB[5:])
    write_pairs(tmp_path / "pairs", ALL_PAIRS[:10])
    wrong = [config(encoder="textcnn", view="bigrams", checkpoint=str(tmp_path / "tokens"), embedding_dim=0),
             config(encoder="bigru", checkpoint=str(tmp_path / "pairs"), embedding_dim=0)]
    for cfg, held, fix in zip(wrong, ["tokens", "bigrams"], ["bigrams", "tokens"], strict=True):
        message = rf"it holds vectors of {held} and `view` is '{cfg.view}'; set view={held}, or embed with --view {fix}"
        with pytest.raises(ConfigError, match=message):
            check_checkpoint(cfg)
        with pytest.raises(ConfigError, match=message):
            build_model(cfg, vocab=RUN_VOCAB, max_seq_len=16, num_labels=5)


def test_a_checkpoint_of_other_pairs_is_warned_about(tmp_path):
    write_pairs(tmp_path / "pairs", [f"foreign{i} foreign{i + 1}" for i in range(30)])
    with pytest.warns(UserWarning, match=r"only 0% of its token pairs are pairs of the run's tokens"):
        build_model(config(encoder="textcnn", view="bigrams", checkpoint=str(tmp_path / "pairs"), embedding_dim=0),
                    vocab=RUN_VOCAB, max_seq_len=16, num_labels=5)


# ----------------------------------------------------------------------------- shapes, masks, padding


def test_textcnn_features_are_relu_convolutions_of_every_width_per_position():
    torch.manual_seed(0)
    encoder = TextCNN.build(config(encoder="textcnn"), embedding=torch.nn.Embedding(40, 12, padding_idx=0)).eval()
    ids = torch.tensor([[2, 7, 8, 9, 3]])
    out = encoder(ids, torch.ones(1, 5, dtype=torch.bool))  # (1, 5, 3 widths * 8 filters)
    assert out.shape == (1, 5, 24) and (out >= 0).all()
    x = encoder.embedding(ids).transpose(1, 2)  # (1, 12, 5)
    conv = encoder.convs[1]  # width 2: `same` padding puts its zero after the text
    want = torch.relu(conv(torch.nn.functional.pad(x, (0, 1)))).transpose(1, 2)
    assert torch.allclose(out[..., 8:16], want, atol=1e-6)


def test_dpcnn_downsampling_pools_windows_of_three_over_real_positions_only():
    x = torch.tensor([[[1.0, 5.0, 2.0, 0.0, 7.0, 9.0]]])  # (1, 1, 6); positions 4, 5 are padding
    mask = torch.tensor([[True, True, True, True, False, False]])
    pooled, kept = downsample(x, mask)
    assert kept.tolist() == [[True, True, False]]
    assert pooled.tolist() == [[[5.0, 2.0, 0.0]]]  # windows 0..2, 2..4 (4 is padding), then a padded position
    encoder = DPCNN.build(config(encoder="dpcnn", dpcnn_blocks=3), embedding=torch.nn.Embedding(40, 12))
    lengths = torch.tensor([1, 2, 5, 8, 9, 16])
    mask = torch.arange(16)[None, :] < lengths[:, None]
    assert output_mask(encoder, mask).sum(1).tolist() == [1, 1, 1, 1, 2, 2]  # ceil(n / 2^3)
    assert encoder(torch.randint(5, 40, (6, 16)), mask).shape == (6, 2, 8)


@pytest.mark.parametrize("view", ["tokens", "bigrams"])
@pytest.mark.parametrize("name", WORDVEC_ENCODERS)
def test_appending_padding_changes_nothing(name, view, tmp_path):
    torch.manual_seed(0)
    model = build_model(view_config(view, tmp_path, encoder=name, pooler="mean+max", msd_count=2,
                                    aux_level1_weight=0.2),
                        vocab=RUN_VOCAB, max_seq_len=32, num_labels=5, num_level1=2).eval()
    ids = torch.randint(5, 40, (3, 11))
    lengths = torch.tensor([11, 6, 3])
    mask = torch.arange(11)[None, :] < lengths[:, None]
    ids = ids.masked_fill(~mask, 0)
    out = model(ids, mask)
    padded_ids = torch.cat([ids, torch.zeros(3, 13, dtype=torch.long)], dim=1)
    padded_mask = torch.cat([mask, torch.zeros(3, 13, dtype=torch.bool)], dim=1)
    again = model(padded_ids, padded_mask)
    assert torch.allclose(again.logits, out.logits, atol=1e-5)
    assert torch.allclose(again.level1_logits, out.level1_logits, atol=1e-5)
    alone = model(ids[2:, :3], mask[2:, :3])  # the shortest row in a batch of its own
    assert torch.allclose(alone.logits, out.logits[2:], atol=1e-5)


@pytest.mark.parametrize("name", WORDVEC_ENCODERS)
def test_a_seed_decides_the_initial_weights(name, tmp_path):
    write_vectors(tmp_path / "wv", RUN_VOCAB[5:30])

    def weights(seed):
        torch.manual_seed(seed)
        model = build_model(config(encoder=name, checkpoint=str(tmp_path / "wv"), embedding_dim=0), vocab=RUN_VOCAB,
                            max_seq_len=16, num_labels=5)
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    assert torch.equal(weights(0), weights(0)) and not torch.equal(weights(0), weights(1))


# ----------------------------------------------------------------------------- adversarial training


@pytest.mark.parametrize("view", ["tokens", "bigrams"])
@pytest.mark.parametrize("attack", ["fgm", "pgd"])
@pytest.mark.parametrize("name", WORDVEC_ENCODERS)
def test_attacks_restore_the_embeddings_bit_for_bit_and_add_their_gradient(name, attack, view, tmp_path):
    torch.manual_seed(0)
    cfg = view_config(view, tmp_path, encoder=name, adversarial=attack, adv_epsilon=0.5, pgd_alpha=0.2, pgd_steps=2,
                      pooler="max")
    model = build_model(cfg, vocab=RUN_VOCAB, max_seq_len=16, num_labels=5).eval()
    loss = TrainingLoss.from_config(cfg, class_counts=np.ones(5), level1_of=np.zeros(5, dtype=int))
    ids, mask, labels = torch.randint(5, 40, (4, 9)), torch.ones(4, 9, dtype=torch.bool), torch.tensor([0, 1, 2, 3])
    loss(model(ids, mask), labels).backward()
    weight = model.encoder.word_embeddings.weight
    before, clean = weight.detach().clone(), weight.grad.clone()
    seen = []

    def loss_fn():
        seen.append(weight.detach().clone())
        return loss(model(ids, mask), labels)

    adv_loss = ADVERSARIAL[attack].from_config(cfg, model=model).attack(loss_fn)
    assert adv_loss is not None and torch.equal(weight, before)
    assert not torch.equal(seen[-1], before) and not torch.equal(weight.grad, clean)


# ----------------------------------------------------------------------------- training


def small(**values):
    return TrialConfig(**{**SMALL, "encoder": "textcnn", "pooler": "max", "max_epochs": 2, "lr": 3e-3,
                          "batch_size": 32, **values})


def scores(evaluations):
    return [{k: v for k, v in e.metrics.items() if k != "train_samples_per_s"} for e in evaluations]


def embeddings_after_each_epoch(cfg, data):
    torch.manual_seed(cfg.seed)  # fit seeds the same way: the model it builds starts from `initial`
    initial = build_model(cfg, vocab=data.vocab.tokens, max_seq_len=data.max_seq_len, num_labels=data.num_labels
                          ).encoder.word_embeddings.weight.detach().clone()
    seen = []
    fit(cfg, data, lambda e: seen.append(e.snapshot()["model"]))
    return initial, [(s["encoder.embedding.weight"], s["encoder.convs.0.weight"]) for s in seen]


@pytest.mark.parametrize("adversarial", ["none", "fgm"])
def test_frozen_embeddings_stay_as_they_are_for_n_epochs_then_train(small_data, adversarial):
    initial, epochs = embeddings_after_each_epoch(small(max_epochs=3, freeze_embeddings=2, adversarial=adversarial),
                                                  small_data)
    _, plain = embeddings_after_each_epoch(small(max_epochs=1), small_data)
    assert torch.equal(epochs[0][0], initial) and torch.equal(epochs[1][0], initial)
    assert not torch.equal(epochs[2][0], initial)  # epoch 3 trains them
    assert not torch.equal(plain[0][0], initial)  # unfrozen, epoch 1 already moves them
    assert not torch.equal(epochs[0][1], epochs[1][1])  # the rest of the model trains all along
    _, frozen = embeddings_after_each_epoch(small(max_epochs=2, freeze_embeddings=5), small_data)
    assert all(torch.equal(weight, initial) for weight, _ in frozen)  # >= max_epochs: frozen throughout


@pytest.mark.parametrize("values", [
    dict(freeze_embeddings=1, eval_every=11),  # resume mid-epoch, in the frozen epoch
    dict(encoder="dpcnn", adversarial="fgm", swa_start=1, freeze_embeddings=1, eval_every=20),
    dict(encoder="bigru", pooler="attention", truncation="head_tail", head_share=0.3, msd_count=2,
         aux_level1_weight=0.2),
])
def test_resume_continues_exactly(small_data, values):
    cfg = small(**values)
    states = []
    full = fit(cfg, small_data, lambda e: states.append(e.snapshot()))
    resumed = fit(cfg, small_data, resume=states[0])
    assert scores(resumed.history) == scores(full.history[1:])


@pytest.mark.parametrize("name", WORDVEC_ENCODERS)
def test_every_encoder_learns(small_data, name):
    # Random init, 32 wide, 4 epochs on 900 rows: measured train loss 3.3-3.5 -> 2.2 (CNNs) and 2.9-3.0
    # (RNNs), dev accuracy 0.15-0.34 against 0.13 for the majority label.
    cfg = small(encoder=name, max_epochs=4, lr=1e-2, dropout=0.1, encoder_dropout=0.0, cnn_filters=32,
                embedding_dim=32, rnn_hidden=16)
    result = fit(cfg, small_data)
    first, last = (e.metrics for e in (result.history[0], result.history[-1]))
    assert last["train_loss"] < 0.92 * first["train_loss"]
    majority = np.bincount(small_data.dev.labels).max() / len(small_data.dev)
    assert last["accuracy"] > majority


def test_vectors_gensim_trained_on_the_corpus_are_what_the_encoder_starts_from(small_data, small_frame, tmp_path):
    from model.wordvec import WordVecConfig, load_vectors, train_vectors

    (tmp_path / "corpus.txt").write_text("\n".join(small_frame["text"]) + "\n")
    train_vectors(WordVecConfig(dim=12, epochs=1), [tmp_path / "corpus.txt"], tmp_path / "wv", progress=None)
    trained = load_vectors(tmp_path / "wv")
    model = build_model(small(checkpoint=str(tmp_path / "wv"), embedding_dim=0), vocab=small_data.vocab.tokens,
                        max_seq_len=48, num_labels=35)
    weight = model.encoder.word_embeddings.weight.detach()
    rows = {token: row for row, token in enumerate(trained.tokens)}
    shared = [i for i, token in enumerate(small_data.vocab.tokens) if token in rows]
    assert len(shared) == len(small_data.vocab) - 5  # every run token but the special ones
    assert all(torch.equal(weight[i], torch.from_numpy(trained.vectors[rows[small_data.vocab.tokens[i]]]))
               for i in shared)


def test_the_bigram_view_learns_and_its_saved_model_loads_after_the_vectors_went(small_data, small_frame, tmp_path):
    from model.inference import ModelInfo, load_model_dir, save_model_dir
    from model.wordvec import WordVecConfig, train_vectors

    (tmp_path / "corpus.txt").write_text("\n".join(small_frame["text"]) + "\n")
    train_vectors(WordVecConfig(dim=16, epochs=1, view="bigrams"), [tmp_path / "corpus.txt"], tmp_path / "pairs",
                  progress=None)
    cfg = small(encoder="textcnn", view="bigrams", checkpoint=str(tmp_path / "pairs"), embedding_dim=0,
                max_epochs=4, lr=1e-2, dropout=0.1, encoder_dropout=0.0, cnn_filters=32)
    states = []
    result = fit(cfg, small_data, lambda e: states.append(e.snapshot()["model"]))
    first, last = (e.metrics for e in (result.history[0], result.history[-1]))
    assert last["train_loss"] < 0.92 * first["train_loss"]
    assert last["accuracy"] > np.bincount(small_data.dev.labels).max() / len(small_data.dev)

    model = build_model(cfg, vocab=small_data.vocab.tokens, max_seq_len=48, num_labels=small_data.num_labels)
    model.load_state_dict(states[-1])
    model.eval()
    info = ModelInfo(config=cfg, vocab=small_data.vocab, max_seq_len=48, labels=small_data.labels)
    directory = save_model_dir(tmp_path / "model", weights=model.state_dict(), info=info)
    (tmp_path / "pairs").rename(tmp_path / "moved")
    loaded, _ = load_model_dir(directory)
    assert torch.equal(loaded.encoder.bigrams.keys, model.encoder.bigrams.keys)
    ids = torch.from_numpy(small_data.dev.ids[:8]).long()
    mask = ids != 0
    with torch.no_grad():
        assert torch.allclose(loaded(ids, mask).logits, model(ids, mask).logits, atol=1e-6)
