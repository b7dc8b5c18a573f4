"""Damaged pretraining checkpoints (issue 26, items 2, 3 and 6): every file a `pretrain` output
directory holds, damaged, against every command that reads it, is refused before any work with exit
status 2 and one error line naming the file, what is wrong and how to get it back; nothing changes.

The commands: `pretrain` again (it continues from checkpoints/step-*/state.pt and run.json), and
a fine-tune of the checkpoint (`launch` and `train-one` with `--set encoder=bert --set
checkpoint=OUT`), whose preflight reads the config, the weights' header and vocab.txt before Ray
starts or data is encoded. A planted pickle in state.pt never runs.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from tests.catalogue.conftest import pretrain_argv
from tests.catalogue.test_run_files import deleted, edited_json, emptied, garbage, invalid_json, truncated
from tests.conftest import E2E_SPACE

DAMAGED = ["is damaged", "nothing was changed"]
AGAIN = ["run the same `python -m search pretrain` command again"]  # a damaged checkpoint of the run
REWRITE = ["rerun its command", "with a new --out"]  # a damaged export, read by a fine-tune


def as_list(value: object) -> list:
    return [value]


def with_value(key: str, value: object):
    def edit(config: dict) -> dict:
        return {**config, key: value}
    edit.__name__ = f"{key}_{json.dumps(value)}"
    return edit


def without(key: str):
    def edit(config: dict) -> dict:
        return {k: v for k, v in config.items() if k != key}
    edit.__name__ = f"without_{key}"
    return edit


def longer_vocab(path: Path) -> None:
    tokens = path.read_text(encoding="utf-8").splitlines()
    path.write_text("\n".join(tokens + [f"extra{i}" for i in range(50)]) + "\n", encoding="utf-8")


def foreign_vocab(path: Path) -> None:
    path.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"abcde"]) + "\n", encoding="utf-8")


def not_utf8(path: Path) -> None:
    path.write_bytes(b"\xff\xfe\x00bad\n" * 10)


def foreign_state(path: Path) -> None:
    import torch

    torch.save({"weights": torch.zeros(3)}, path)


class Planted:
    """A pickle that runs a command when loaded (`__reduce__`): what a planted state.pt would hold."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def planted_code(path: Path) -> None:
    path.write_bytes(pickle.dumps({"model": Planted(path.parent / "PLANTED-CODE-RAN")}))


# (file relative to OUT, damage, command, needles)
CASES = [
    ("model.safetensors", truncated, "launch", [*DAMAGED, "incomplete metadata", *REWRITE]),
    ("model.safetensors", truncated, "train-one", [*DAMAGED, "not readable weights", *REWRITE]),
    ("model.safetensors", garbage, "launch", [*DAMAGED, "not readable weights", *REWRITE]),
    ("model.safetensors", emptied, "train-one", [*DAMAGED, "not readable weights", *REWRITE]),
    ("model.safetensors", deleted, "launch", ["has no model.safetensors or pytorch_model.bin"]),
    ("config.json", invalid_json, "launch", [*DAMAGED, "not valid JSON", *REWRITE]),
    ("config.json", invalid_json, "train-one", [*DAMAGED, "not valid JSON", *REWRITE]),
    ("config.json", edited_json(as_list), "launch", [*DAMAGED, "where an object belongs", *REWRITE]),
    ("config.json", edited_json(with_value("vocab_size", 99)), "launch", [*DAMAGED, "have 1736 rows", *REWRITE]),
    ("config.json", edited_json(without("hidden_size")), "train-one", [*DAMAGED, "`hidden_size` is None", *REWRITE]),
    ("config.json", edited_json(with_value("num_attention_heads", 3)), "launch",
     [*DAMAGED, "not a multiple", *REWRITE]),
    ("config.json", edited_json(with_value("max_position_embeddings", 64)), "train-one",
     [*DAMAGED, "position embeddings", *REWRITE]),
    ("config.json", deleted, "train-one", ["has no config.json or bert_config.json"]),
    ("vocab.txt", longer_vocab, "launch", [*DAMAGED, "not this checkpoint's", *REWRITE]),
    ("vocab.txt", not_utf8, "train-one", [*DAMAGED, "not UTF-8", *REWRITE]),
    ("vocab.txt", foreign_vocab, "launch", ["would all become [UNK]", "pretrain on this corpus"]),
    ("vocab.txt", foreign_vocab, "train-one", ["would all become [UNK]", "pretrain on this corpus"]),
    ("vocab.txt", deleted, "launch", ["has no vocab.txt"]),
    ("checkpoints/step-0000003/state.pt", truncated, "pretrain", [*DAMAGED, "loads as data", *AGAIN]),
    ("checkpoints/step-0000003/state.pt", garbage, "pretrain", [*DAMAGED, "loads as data", *AGAIN]),
    ("checkpoints/step-0000003/state.pt", emptied, "pretrain", [*DAMAGED, "loads as data", *AGAIN]),
    ("checkpoints/step-0000003/state.pt", truncated, "pretrain-resume", [*DAMAGED, "loads as data", *AGAIN]),
    ("checkpoints/step-0000003/state.pt", foreign_state, "pretrain", [*DAMAGED, "no model", *AGAIN]),
    ("checkpoints/step-0000003/state.pt", planted_code, "pretrain", [*DAMAGED, "loads as data", *AGAIN]),
    ("checkpoints/step-0000003/run.json", garbage, "pretrain", [*DAMAGED, "not valid JSON", *AGAIN]),
    ("checkpoints/step-0000003/run.json", invalid_json, "pretrain-resume", [*DAMAGED, "not valid JSON", *AGAIN]),
    ("checkpoints/step-0000003/run.json", edited_json(as_list), "pretrain", [*DAMAGED, "fingerprint", *AGAIN]),
    ("checkpoints/step-0000003/run.json", edited_json(without("settings")), "pretrain",
     [*DAMAGED, "fingerprint", *AGAIN]),
]


def argv_of(command: str, ckpt: Path, corpus: Path, tmp_path: Path, *, max_seq_len: int = 32) -> list:
    space = tmp_path / "space.yaml"
    space.write_text(E2E_SPACE)
    data = ["--space", space, "--synthetic-rows", "300", "--max-seq-len", str(max_seq_len), "--max-epochs", "1",
            "--set", "encoder=bert", "--set", f"checkpoint={ckpt}"]
    return {"pretrain": pretrain_argv(corpus, ckpt),
            "pretrain-resume": pretrain_argv(corpus, ckpt, "--resume"),
            "launch": ["launch", *data, "--num-samples", "1", "--storage-path", tmp_path / "runs", "--name", "ft"],
            "train-one": ["train-one", *data, "--no-progress"]}[command]


@pytest.mark.parametrize("name, damage, command, needles", CASES,
                         ids=[f"{n.split('/')[-1]}-{d.__name__}-{c}" for n, d, c, _ in CASES])
def test_damaged_checkpoint_file_is_refused(refused, pretrained_copy, pretrain_corpus, tmp_path, name, damage,
                                            command, needles):
    path = pretrained_copy / name
    damage(path)
    err = refused(argv_of(command, pretrained_copy, pretrain_corpus, tmp_path), [path.name, *needles],
                  watch=(pretrained_copy, tmp_path / "runs"))
    assert len([line for line in err.splitlines() if line.strip()]) == 1, err
    assert not (path.parent / "PLANTED-CODE-RAN").exists()


@pytest.mark.parametrize("command", ["launch", "train-one"])
def test_a_max_seq_len_above_the_checkpoints_positions_is_refused(refused, pretrained, pretrain_corpus, tmp_path,
                                                                  command):
    argv = argv_of(command, pretrained, pretrain_corpus, tmp_path, max_seq_len=64)
    refused(argv, ["--max-seq-len 64 exceeds the 32 positions", str(pretrained), "--max-seq-len 32 or less"],
            watch=(pretrained, tmp_path / "runs"))


def test_pretraining_too_short_to_learn_says_so(pretrain_corpus, tmp_path, capsys):
    from cli.main import main

    main(pretrain_argv(pretrain_corpus, tmp_path / "short"))  # 3 steps, a loss curve of one point
    assert "warning: 3 step(s) give 1 point(s) of the loss curve: too short to learn" in capsys.readouterr().out


def test_pretraining_on_a_one_token_corpus_says_so(tmp_path, capsys):
    from cli.main import main

    corpus = tmp_path / "one.txt"
    corpus.write_text("7 7 7 7\n" * 40)
    main(pretrain_argv(corpus, tmp_path / "one", "--log-every", "1"))
    out = capsys.readouterr().out
    assert "warning: the corpus has 1 distinct token(s): there is nothing to predict" in out


@pytest.mark.parametrize("losses, warned", [([7.45, 7.44, 7.46], True), ([7.45, 6.0], False)])
def test_a_loss_that_did_not_go_down_is_warned_about(losses, warned):
    from model.pretrain.loop import Summary
    from stages.pretrain import learning_warnings

    curve = [{"step": 10 * (i + 1), "loss": loss, "masked_acc": 0.0} for i, loss in enumerate(losses)]
    summary = Summary(steps=10 * len(losses), curve=curve, seconds=1.0, tokens_per_s=1.0, finished=True,
                      record={"vocab_size": 900, "documents": 500, "flags": {"batch_size": 64}})
    said = learning_warnings(summary)
    assert any("the MLM loss did not go down" in w for w in said) == warned and len(said) == int(warned)


def test_a_model_too_large_for_the_machine_is_refused_with_the_numbers(refused, pretrain_corpus, tmp_path):
    argv = pretrain_argv(pretrain_corpus, tmp_path / "huge", "--hidden-size", "8192", "--num-layers", "48",
                         "--num-heads", "64", "--intermediate-size", "32768", "--device", "cpu")
    refused(argv, ["--hidden-size 8192", "--num-layers 48", "GiB to train", "the machine's memory is",
                   "lower them"], watch=(tmp_path / "huge",))
