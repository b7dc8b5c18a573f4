"""`python -m search pretrain`: flags, a run then a fine-tune of its output with train-one and with a
search of spaces/pretrained.yaml, a SIGKILL mid-run and the same command again, refusals; and the
data-parallel path on a 2-worker Ray Train run."""

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import model.pretrain.loop
from cli import main as cli
from cli.pretrain_flags import config_from_args
from model.config import TrialConfig
from model.encoders import ENCODERS
from model.pretrain.config import CHECKPOINTS, PretrainConfig
from model.synthetic import synthesize
from rundir.settings import Settings
from search.driver import launch
from tests.conftest import own_err

REPO = Path(__file__).resolve().parents[2]
TINY = ["--hidden-size", "32", "--num-layers", "1", "--num-heads", "2", "--intermediate-size", "64",
        "--max-seq-len", "64", "--batch-size", "16", "--lr", "3e-3", "--threads", "1", "--no-progress"]


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread, as the subprocesses use (same numerics; and a second thread on a shared
    2-core machine makes tiny runs 10x slower)."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    train, test = synthesize(300, seed=1)
    train.to_csv(root / "train.csv", index=False)
    test.to_csv(root / "test.csv", index=False)
    return root


def pretrain_args(corpus: Path, out: Path, *extra: str) -> list[str]:
    return ["pretrain", "--corpus", str(corpus / "train.csv"), str(corpus / "test.csv"), "--out", str(out),
            *TINY, *extra]


def parser() -> argparse.ArgumentParser:
    (action,) = [a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return action.choices["pretrain"]


def test_model_and_training_flags_map_onto_pretrain_config_and_the_budget_defaults_to_one_epoch():
    args = parser().parse_args(["--corpus", "a.csv", "--out", "o"])
    assert config_from_args(args) == PretrainConfig(epochs=1)
    dests = {a.dest for a in parser()._actions}
    assert {f for f in PretrainConfig.__dataclass_fields__} <= dests
    args = parser().parse_args(["--corpus", "a.csv", "--out", "o", "--time-budget", "15", "--arch", "nezha"])
    assert config_from_args(args) == PretrainConfig(epochs=None, time_budget=15.0, arch="nezha")


def test_two_budgets_are_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["pretrain", "--corpus", "a.csv", "--out", "o", "--steps", "3", "--epochs", "1"])
    assert exit_.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


def test_pretrain_then_fine_tune_the_output_with_train_one(corpus, tmp_path, capsys):
    out = tmp_path / "ckpt"
    cli.main(pretrain_args(corpus, out, "--steps", "20", "--arch", "nezha"))
    printed = capsys.readouterr().out
    assert "pretrained 20 steps" in printed and f"--set encoder=nezha --set checkpoint={out}" in printed
    record = json.loads((out / "pretrain.json").read_text())
    assert record["command"][:4] == ["python", "-m", "search", "pretrain"] and record["flags"]["arch"] == "nezha"
    cli.main(["train-one", "--data", str(corpus / "train.csv"), "--max-seq-len", "48", "--max-epochs", "1",
              "--set", "encoder=nezha", "--set", f"checkpoint={out}", "--set", "pooler=mean", "--threads", "1",
              "--no-progress"])
    assert "level-2" in capsys.readouterr().out


def test_a_search_of_the_pretrained_space_fine_tunes_the_checkpoint(corpus, tmp_path, local_ray):
    ckpt = tmp_path / "ckpt"
    cli.main(pretrain_args(corpus, ckpt, "--steps", "20"))  # --arch bert, the pretrained space's encoder
    settings = Settings(data=str(corpus / "train.csv"), space="pretrained", sets=(f"checkpoint={ckpt}",),
                        max_seq_len=48, folds=4, num_samples=2, max_epochs=1, scheduler="fifo",
                        storage_path=str(tmp_path / "runs"), name="p", seed=0)
    files, frame = launch(settings, argv=["launch"], out=lambda line: None)
    assert len(frame) == 2 and (frame["status"] == "completed").all()
    assert all(f"checkpoint={ckpt}" in command for command in frame["command"])
    # Each trial's encoder started from the checkpoint's weights: after one epoch at a fine-tuning
    # rate of at most 1e-4 (a few Adam steps) they are still within 1e-3 of them, where a random
    # init would differ by about its own scale (std 0.02).
    pretrained = load_file(ckpt / "model.safetensors")
    for _, row in frame.iterrows():
        assert row["param.lr"] <= 1e-4
        state = torch.load(Path(row["checkpoint"]) / "state.pt", weights_only=False)["model"]
        for name in ("embeddings.word_embeddings.weight", "encoder.layer.0.attention.self.query.weight"):
            torch.testing.assert_close(state[f"encoder.model.{name}"], pretrained[f"bert.{name}"], atol=1e-3, rtol=0)


def test_a_space_may_choose_among_checkpoints(corpus, tmp_path, local_ray):
    short, long = tmp_path / "steps-10", tmp_path / "steps-30"
    cli.main(pretrain_args(corpus, short, "--steps", "10"))
    cli.main(pretrain_args(corpus, long, "--steps", "30"))
    (tmp_path / "space.yaml").write_text(f"""fixed: {{encoder: bert, batch_size: 32, pooler: mean}}
params:
  checkpoint: {{choice: [{short}, {long}]}}
  lr: {{float: [1.0e-5, 1.0e-4], log: true}}
warm_start:
  short: {{checkpoint: {short}, lr: 5.0e-5}}
  long: {{checkpoint: {long}, lr: 5.0e-5}}
""")
    settings = Settings(data=str(corpus / "train.csv"), space=str(tmp_path / "space.yaml"), max_seq_len=48, folds=4,
                        num_samples=2, max_epochs=1, scheduler="fifo", storage_path=str(tmp_path / "runs"), name="c")
    _, frame = launch(settings, argv=["launch"], out=lambda line: None)
    assert sorted(frame["param.checkpoint"]) == sorted([str(short), str(long)])
    for _, row in frame.iterrows():  # each trial fine-tuned the checkpoint it drew, not the other
        state = torch.load(Path(row["checkpoint"]) / "state.pt", weights_only=False)["model"]
        name = "encoder.layer.0.attention.self.query.weight"
        own = load_file(Path(row["param.checkpoint"]) / "model.safetensors")[f"bert.{name}"]
        other = load_file(Path(long if row["param.checkpoint"] == str(short) else short) / "model.safetensors")
        torch.testing.assert_close(state[f"encoder.model.{name}"], own, atol=1e-3, rtol=0)
        assert (state[f"encoder.model.{name}"] - other[f"bert.{name}"]).abs().max() > 1e-2


def test_a_different_run_on_the_same_out_is_refused_with_exit_2(corpus, tmp_path, capsys):
    cli.main(pretrain_args(corpus, tmp_path, "--steps", "2"))
    with pytest.raises(SystemExit) as exit_:
        cli.main(pretrain_args(corpus, tmp_path, "--steps", "2", "--mask-prob", "0.2"))
    err = own_err(capsys)
    assert exit_.value.code == 2
    assert err.startswith(f"error: --out {tmp_path} holds the checkpoint of a different pretraining run "
                          "(--mask-prob 0.15 -> 0.2)")


@pytest.mark.slow
def test_sigkill_mid_run_then_the_same_command_continues_from_the_last_checkpoint(corpus, tmp_path, monkeypatch):
    argv = pretrain_args(corpus, tmp_path / "killed", "--steps", "150", "--save-every", "10")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen([sys.executable, "-m", "search", *argv], cwd=REPO, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    checkpoints = tmp_path / "killed" / CHECKPOINTS
    deadline = time.monotonic() + 120
    while not (checkpoints.is_dir() and any(p.name.startswith("step-") and not p.name.endswith(".tmp")
                                            for p in checkpoints.iterdir())):
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline, "no checkpoint within 120 s"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    (last,) = [p for p in checkpoints.iterdir() if not p.name.endswith(".tmp")]
    killed_at = int(last.name.removeprefix("step-"))
    assert 10 <= killed_at < 150, "the run ended before it was killed: make it longer"

    batches = []
    real = model.pretrain.loop.make_batch
    monkeypatch.setattr(model.pretrain.loop, "make_batch", lambda *a, **k: (batches.append(1), real(*a, **k))[1])
    cli.main(argv)  # the same command again
    assert len(batches) == 150 - killed_at  # it continued; it did not start over
    monkeypatch.undo()
    cli.main(pretrain_args(corpus, tmp_path / "whole", "--steps", "150", "--save-every", "10"))
    resumed = json.loads((tmp_path / "killed" / "pretrain.json").read_text())
    whole = json.loads((tmp_path / "whole" / "pretrain.json").read_text())
    assert resumed["loss_curve"] == whole["loss_curve"] and resumed["steps"] == 150
    a = load_file(str(tmp_path / "whole" / "model.safetensors"))
    b = load_file(str(tmp_path / "killed" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)  # bit for bit, across processes


@pytest.mark.ray
def test_a_two_worker_ray_train_run_writes_the_same_kind_of_checkpoint_and_continues_from_storage(
        corpus, tmp_path, local_ray, capsys):
    out = tmp_path / "ddp"
    timed = ["--save-every", "4", "--log-every", "2", "--warmup-steps", "0"]
    argv = pretrain_args(corpus, out, "--num-workers", "2", *timed)
    cli.main([*argv, "--time-budget", "0.002"])  # 0.12 s of training
    assert f"checkpoint: {out}" in capsys.readouterr().out
    assert {"config.json", "model.safetensors", "vocab.txt", "pretrain.json"} <= {p.name for p in out.iterdir()}
    first = json.loads((out / "pretrain.json").read_text())
    assert first["workers"] == 2 and first["finished"] and first["steps"] >= 2
    assert (out / "ray" / "pretrain" / f"step-{first['steps']:07d}" / "state.pt").is_file()
    encoder = ENCODERS["bert"].from_config(TrialConfig(encoder="bert", checkpoint=str(out)),
                                           vocab=(out / "vocab.txt").read_text().splitlines(), max_seq_len=64)
    assert encoder.hidden_size == 32

    cli.main([*argv, "--time-budget", "0.01"])  # a longer budget: the run goes on from its checkpoint in storage
    second = json.loads((out / "pretrain.json").read_text())
    assert second["started_at_steps"] == [0, first["steps"]] and second["steps"] > first["steps"]
    assert second["loss_curve"][: len(first["loss_curve"])] == first["loss_curve"]
    assert second["wall_time_s"] >= 0.6

    # the same global batches and masks as one process: the loss differs only by the workers' dropout
    cli.main([*pretrain_args(corpus, tmp_path / "single", *timed), "--time-budget", "0.002"])
    single = json.loads((tmp_path / "single" / "pretrain.json").read_text())
    assert second["loss_curve"][0]["step"] == single["loss_curve"][0]["step"] == 2
    assert second["loss_curve"][0]["loss"] == pytest.approx(single["loss_curve"][0]["loss"], abs=0.05)
