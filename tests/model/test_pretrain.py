"""MLM pretraining without Ray: the corpus, the batches, learning, the checkpoint directory the
encoders load, exact resume after a kill, and the refusal of a different run's output."""

import dataclasses
import hashlib
import json
import os
import stat

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from model import metrics as M
from model.config import TrialConfig
from model.corpus import read_corpus
from model.data import prepare_data
from model.encoders import ENCODERS
from model.errors import ConfigError, DataError
from model.nezha import NezhaConfig, NezhaForMaskedLM, load_nezha
from model.pretrain.config import CHECKPOINTS, STATE_FILE, PretrainConfig
from model.pretrain.data import prepare_corpus
from model.pretrain.loop import epoch_batches, make_batch, pretrain
from model.pretrain.mlm import build_mlm
from model.synthetic import synthesize
from model.train import fit

TINY = dict(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, max_seq_len=64, batch_size=16,
            lr=3e-3, log_every=10)


class Killed(Exception):
    pass


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: these runs are tiny, and on a shared 2-core machine a second thread makes them
    10x slower (measured 14 s vs 1 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A labeled CSV (300 rows), an unlabeled CSV (80) and a text file (49 lines), all synthetic."""
    root = tmp_path_factory.mktemp("corpus")
    train, test = synthesize(300, seed=1)
    train.to_csv(root / "train.csv", index=False)
    test.iloc[:80].to_csv(root / "test.csv", index=False)
    (root / "docs.txt").write_text("\n".join(test["text"].iloc[80:]) + "\n\n  \n", encoding="utf-8")
    return [str(root / "train.csv"), str(root / "test.csv"), str(root / "docs.txt")]


def run(corpus, out, **kwargs):
    options = {k: kwargs.pop(k) for k in ("save_every", "on_step", "resume") if k in kwargs}
    return pretrain(PretrainConfig(**{**TINY, **kwargs}), corpus, out, **options)


def trained_mlm(out, arch):
    """The MLM of the last checkpoint in `out`, in eval mode."""
    (step,) = (out / CHECKPOINTS).iterdir()
    state = torch.load(step / STATE_FILE, weights_only=False)
    cfg = PretrainConfig.from_dict(state["fingerprint"]["settings"] | {"time_budget": None})
    vocab = (out / "vocab.txt").read_text(encoding="utf-8").splitlines()
    mlm = build_mlm(cfg, vocab_size=len(vocab))
    mlm.load_state_dict(state["model"])
    assert cfg.arch == arch
    return mlm.eval(), vocab


# ----------------------------------------------------------------------------- corpus and batches


def test_the_corpus_reads_csv_text_columns_and_text_lines(corpus, tmp_path):
    read = read_corpus(corpus)
    assert [f["rows"] for f in read.files] == [300, 80, 49]  # the text file's blank lines are skipped
    assert len(read.texts) == 429 and all(t.strip() == t and t for t in read.texts)
    assert read.files[0]["sha256"] == hashlib.sha256(open(corpus[0], "rb").read()).hexdigest()
    bad = tmp_path / "bad.csv"
    bad.write_text("id,label\n1,2-3\n")
    with pytest.raises(DataError, match=r"bad.csv: no `text` column \(found id,label\)"):
        read_corpus([str(bad)])
    with pytest.raises(DataError, match="corpus file not found"):
        read_corpus([str(tmp_path / "missing.txt")])


def test_the_vocabulary_comes_from_the_corpus_special_tokens_first(corpus):
    data = prepare_corpus(corpus, PretrainConfig(**TINY, steps=1, min_count=2))
    assert data.vocab.tokens[:5] == ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
    assert data.vocab.tokens[5] == "，"  # the most frequent token
    assert data.ids.shape == (429, 64) and data.mask_id == 4 and data.special_ids == (0, 1, 2, 3, 4)


def test_the_data_order_is_a_function_of_seed_and_epoch():
    lengths = np.random.default_rng(0).integers(8, 60, size=250)
    cfg = PretrainConfig(**TINY, steps=1)
    a, b = epoch_batches(lengths, cfg, 3), epoch_batches(lengths, cfg, 3)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert {len(x) for x in a} == {16} and len(a) == 250 // 16  # full batches only
    assert len(np.unique(np.concatenate(a))) == 15 * 16  # no row twice in an epoch
    c = epoch_batches(lengths, cfg, 4)
    assert not np.array_equal(np.concatenate(a), np.concatenate(c))
    d = epoch_batches(lengths, dataclasses.replace(cfg, seed=1), 3)
    assert not np.array_equal(np.concatenate(a), np.concatenate(d))


def test_workers_share_a_global_batch_row_by_row(corpus):
    cfg = PretrainConfig(**TINY, steps=1)
    data = prepare_corpus(corpus, cfg)
    rows = epoch_batches(data.lengths, cfg, 0)[2]
    whole = make_batch(data, rows, cfg, epoch=0, micro=2)
    parts = [make_batch(data, rows, cfg, epoch=0, micro=2, rank=r, world=3) for r in range(3)]
    for r, part in enumerate(parts):
        assert torch.equal(part.ids, whole.ids[r::3]) and torch.equal(part.labels, whole.labels[r::3])
        assert part.global_masked == whole.global_masked == int((whole.labels != -100).sum())
    assert sum(p.tokens for p in parts) == whole.tokens == int(whole.mask.sum())


# ----------------------------------------------------------------------------- training and output


def test_a_short_run_lowers_the_mlm_loss_and_writes_a_checkpoint_directory(corpus, tmp_path):
    out = tmp_path / "out"
    summary = run(corpus, out, steps=60)
    curve = summary.curve
    assert [p["step"] for p in curve] == [10, 20, 30, 40, 50, 60]
    assert curve[-1]["loss"] < curve[0]["loss"] - 1.0  # measured 7.6 -> 6.0 (ln of the vocabulary: 7.6)
    assert curve[-1]["masked_acc"] > curve[0]["masked_acc"]
    assert sorted(p.name for p in out.iterdir()) == [CHECKPOINTS, "config.json", "model.safetensors",
                                                    "pretrain.json", "vocab.txt"]
    record = json.loads((out / "pretrain.json").read_text())
    assert record["finished"] and record["steps"] == 60 and record["loss_curve"] == curve
    assert [(f["rows"], len(f["sha256"])) for f in record["corpus"]] == [(300, 64), (80, 64), (49, 64)]
    assert record["flags"]["lr"] == 3e-3 and record["flags"]["steps"] == 60
    assert record["wall_time_s"] > 0 and record["tokens_per_s"] > 0 and record["tokens_seen"] > 60 * 16 * 8
    assert {"torch", "transformers", "python"} <= set(record["versions"])


@pytest.mark.parametrize("arch", ["bert", "nezha"])
def test_the_output_loads_through_the_encoder_registry_as_the_trained_encoder(corpus, tmp_path, arch):
    out = tmp_path / arch
    run(corpus, out, arch=arch, steps=12)
    mlm, vocab = trained_mlm(out, arch)
    cfg = TrialConfig(encoder=arch, checkpoint=str(out), encoder_dropout=0.0)
    run_vocab = vocab[:5] + vocab[5:][::-1] + ["never-seen"]  # another order, and a token the corpus lacks
    encoder = ENCODERS[arch].from_config(cfg, vocab=run_vocab, max_seq_len=64).eval()
    run_ids = torch.tensor([[2, 9, 40, 7, len(run_vocab) - 1, 3], [2, 11, 12, 3, 0, 0]])
    mask = run_ids != 0
    index = {t: i for i, t in enumerate(vocab)}
    ids = torch.tensor([[index.get(run_vocab[i], 1) for i in row] for row in run_ids.tolist()])
    with torch.no_grad():
        assert torch.equal(encoder(run_ids, mask), mlm.encode(ids, mask))


@pytest.mark.parametrize("arch", ["bert", "nezha"])
def test_fit_fine_tunes_a_pretrained_checkpoint(corpus, tmp_path, arch):
    out = tmp_path / arch
    run(corpus, out, arch=arch, steps=10)
    data = prepare_data(synthesize(300, seed=2)[0], folds=3, fold=0, seed=0, max_seq_len=48)  # other rows
    cfg = TrialConfig(encoder=arch, checkpoint=str(out), pooler="mean", max_epochs=1, lr=3e-3, batch_size=32)
    result = fit(cfg, data)
    assert [e.epoch for e in result.history] == [1]
    assert 0 <= result.best.metrics[M.LEVEL2_MACRO_F1] <= 1 and np.isfinite(result.best.metrics[M.DEV_LOSS])


def test_the_nezha_mlm_saves_its_head_and_loads_as_a_nezha_encoder(tmp_path):
    torch.manual_seed(0)
    model = NezhaForMaskedLM(NezhaConfig(vocab_size=30, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                         intermediate_size=32, max_position_embeddings=12)).eval()
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight
    model.save(tmp_path)
    keys = set(load_file(str(tmp_path / "model.safetensors")))
    assert {"cls.predictions.bias", "cls.predictions.transform.dense.weight"} <= keys
    assert "cls.predictions.decoder.weight" not in keys and "bert.embeddings.word_embeddings.weight" in keys
    ids, mask = torch.randint(5, 30, (2, 6)), torch.ones(2, 6, dtype=torch.bool)
    assert torch.equal(load_nezha(tmp_path).eval()(ids, mask), model.bert(ids, mask))
    assert model(ids, mask).shape == (2, 6, 30)


# ----------------------------------------------------------------------------- resume


@pytest.mark.parametrize("arch, grad_accum", [("bert", 2), ("nezha", 1)])
def test_a_killed_run_resumes_from_its_last_checkpoint_bit_exactly(corpus, tmp_path, arch, grad_accum):
    # 26 batches an epoch: with grad_accum 2, 13 steps, so the kill and the resume cross an epoch end
    steps = dict(arch=arch, grad_accum=grad_accum, steps=20, save_every=6, log_every=4)
    whole = run(corpus, tmp_path / "whole", **steps)

    def kill_at_15(step):
        if step == 15:
            raise Killed

    with pytest.raises(Killed):
        run(corpus, tmp_path / "killed", on_step=kill_at_15, **steps)
    assert [p.name for p in (tmp_path / "killed" / CHECKPOINTS).iterdir()] == ["step-0000012"]
    (tmp_path / "killed" / CHECKPOINTS / "step-0000018.tmp").mkdir()  # a save the kill cut short: ignored
    seen = []
    resumed = run(corpus, tmp_path / "killed", on_step=seen.append, resume=True, **steps)
    assert seen == list(range(13, 21))  # continued after the checkpoint at step 12
    assert resumed.curve == whole.curve  # the loss curve goes on as if never interrupted
    assert resumed.record["started_at_steps"] == [0, 12] and whole.record["started_at_steps"] == [0]
    a = load_file(str(tmp_path / "whole" / "model.safetensors"))
    b = load_file(str(tmp_path / "killed" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_finished_run_started_again_returns_at_once(corpus, tmp_path):
    first = run(corpus, tmp_path, steps=10)
    seen = []
    again = run(corpus, tmp_path, steps=10, on_step=seen.append)
    assert seen == [] and again.steps == 10 and again.curve == first.curve


@pytest.mark.parametrize("arch", ["bert", "nezha"])
@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o027, 0o640)])
def test_the_exported_files_get_the_umasks_mode(corpus, tmp_path, arch, mask, expected):
    """safetensors writes model.safetensors 0600; teammates sharing the checkpoint must read it."""
    old = os.umask(mask)
    try:
        run(corpus, tmp_path, arch=arch, steps=2)
    finally:
        os.umask(old)
    assert {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in tmp_path.iterdir() if p.is_file()} == \
        {name: oct(expected) for name in ("config.json", "model.safetensors", "pretrain.json", "vocab.txt")}


def test_a_time_budget_stops_training(corpus, tmp_path):
    summary = run(corpus, tmp_path, time_budget=0.02, log_every=2)  # 1.2 s
    assert summary.steps > 0 and summary.seconds >= 1.2
    record = json.loads((tmp_path / "pretrain.json").read_text())
    assert record["finished"] and record["total_steps"] is None and record["steps"] == summary.steps


def test_a_timed_run_continues_with_a_longer_time_budget(corpus, tmp_path):
    first = run(corpus, tmp_path, time_budget=0.005, log_every=2)  # 0.3 s
    seen = []
    longer = run(corpus, tmp_path, time_budget=0.02, log_every=2, on_step=seen.append)
    assert seen[0] == first.steps + 1 and longer.steps > first.steps
    assert longer.curve[: len(first.curve)] == first.curve and longer.seconds >= 1.2


# ----------------------------------------------------------------------------- refusals


def test_an_output_holding_another_runs_checkpoint_is_refused(corpus, tmp_path):
    run(corpus, tmp_path, steps=4)
    with pytest.raises(ConfigError, match=r"different pretraining run \(--lr 0.003 -> 0.001\)"):
        run(corpus, tmp_path, steps=4, lr=1e-3)
    with pytest.raises(ConfigError, match=r"corpus \[.*\(300 rows\).*\] -> \[.*\(300 rows\)\]"):
        pretrain(PretrainConfig(**TINY, steps=4), corpus[:1], tmp_path)


def test_foreign_outputs_and_a_resume_without_checkpoint_are_refused(corpus, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="holds notes.txt but no pretraining checkpoint"):
        run(corpus, tmp_path, steps=2)
    with pytest.raises(ConfigError, match="--resume: --out .* holds no checkpoint"):
        run(corpus, tmp_path / "new", steps=2, resume=True)


@pytest.mark.parametrize("kwargs, message", [
    (dict(steps=3, epochs=1), r"exactly one budget.*\['steps', 'epochs'\]"),
    (dict(), "exactly one budget"),
    (dict(steps=3, hidden_size=30, num_heads=4), "--hidden-size 30 is not a multiple of --num-heads 4"),
    (dict(steps=3, mask_prob=1.5), "--mask-prob is 1.5"),
    (dict(steps=3, arch="gpt"), "`arch` is 'gpt', but valid arch names are: bert, nezha"),
])
def test_bad_settings_say_what_to_fix(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        PretrainConfig(**{**{k: v for k, v in TINY.items() if k not in kwargs}, **kwargs})
