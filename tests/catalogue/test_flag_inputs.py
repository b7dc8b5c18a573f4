"""Bad flags of every command: non-finite and out-of-range numbers, paths given as names, storage
and output paths that are files, directories or the run's own files, and flags that exclude each
other. Each is refused before Ray starts (these cases never start it), naming the flag and the fix.

In an argv, `{run}` is a finished run (a private copy where the case would damage it), `{tmp}` a
fresh directory, `{file}` a plain file in it; the case watches them, so nothing may change.
"""

from __future__ import annotations

import pytest

from tests.conftest import E2E_SPACE

NOT_FINITE = ["finite number"]

LAUNCH = {
    "reduction factor nan": (["--reduction-factor", "nan"], ["--reduction-factor", *NOT_FINITE]),
    "reduction factor inf": (["--reduction-factor", "inf"], ["--reduction-factor", *NOT_FINITE]),
    "reduction factor -inf": (["--reduction-factor=-inf"], ["--reduction-factor", *NOT_FINITE]),
    "reduction factor 1": (["--reduction-factor", "1"], ["--reduction-factor is 1", "must be > 1"]),
    "cpus per trial nan": (["--cpus-per-trial", "nan"], ["--cpus-per-trial", *NOT_FINITE]),
    "cpus per trial inf": (["--cpus-per-trial", "inf"], ["--cpus-per-trial", *NOT_FINITE]),
    "cpus per trial 0": (["--cpus-per-trial", "0"], ["--cpus-per-trial is 0", "must be > 0"]),
    "gpus per trial nan": (["--gpus-per-trial", "nan"], ["--gpus-per-trial", *NOT_FINITE]),
    "gpus per trial negative": (["--gpus-per-trial", "-1"], ["--gpus-per-trial is -1", "must be >= 0"]),
    "num samples 0": (["--num-samples", "0"], ["--num-samples is 0", "must be >= 1"]),
    "num samples not a number": (["--num-samples", "many"], ["--num-samples", "invalid int value"]),
    "max epochs 0": (["--max-epochs", "0"], ["--max-epochs is 0", "must be >= 1"]),
    "grace period 0": (["--grace-period", "0"], ["--grace-period is 0", "must be >= 1"]),
    "grace period beyond budget": (["--grace-period", "3", "--max-epochs", "2"],
                                   ["--grace-period 3", "Lower --grace-period or raise --max-epochs"]),
    "max concurrent 0": (["--max-concurrent", "0"], ["--max-concurrent is 0", "must be >= 1"]),
    "max failures negative": (["--max-failures", "-1"], ["--max-failures is -1", "must be >= 0"]),
    "seed negative": (["--seed", "-1"], ["--seed", "pass a number >= 0"]),
    "synthetic seed negative": (["--synthetic-seed", "-1"], ["--synthetic-seed", "pass a number >= 0"]),
    "max seq len 2": (["--max-seq-len", "2"], ["--max-seq-len is 2", "must be >= 3"]),
    "one fold": (["--folds", "1"], ["--folds is 1", "must be >= 2"]),
    "fold out of range": (["--fold", "5"], ["--fold is 5", "0..4 for --folds 5"]),
    "data and synthetic": (["--data", "{tmp}", "--synthetic"], ["--data and --synthetic exclude each other"]),
    "name climbs out": (["--name", "../escaped"], ["--name", "is a path, not a name", "--storage-path"]),
    "name absolute": (["--name", "{tmp}/abs"], ["--name", "is a path, not a name", "plain name"]),
    "name dot": (["--name", "."], ["--name", "'.' is not a name", "plain name"]),
    "name dot dot": (["--name", ".."], ["--name", "'..' is not a name", "plain name"]),
    "name empty": (["--name", ""], ["--name", "'' is not a name", "plain name"]),
    "name of a half-made run": (["--storage-path", "{tmp}", "--name", "half"],
                                ["half already exists but holds no started search", "rm -r"]),
    "name of a file": (["--storage-path", "{tmp}", "--name", "file.txt"],
                       ["file.txt already exists", "pick another --name"]),
    "storage path a file": (["--storage-path", "{file}"], ["--storage-path", "is a file, not a directory"]),
    "storage path under a file": (["--storage-path", "{file}/runs"], ["--storage-path", "is a file, not a directory"]),
    "storage path unwritable": (["--storage-path", "/sys/runs"], ["--storage-path /sys/runs is not writable",
                                                                  "a directory you can write to"]),
}

TRAIN_ONE = {
    "max epochs 0": (["--max-epochs", "0"], ["--max-epochs", "pass a number >= 1"]),
    "threads 0": (["--threads", "0"], ["--threads", "pass a number >= 1"]),
    "threads negative": (["--threads", "-2"], ["--threads", "pass a number >= 1"]),
    "seed negative": (["--seed", "-1"], ["--seed", "pass a number >= 0"]),
    "fold negative": (["--fold", "-1"], ["--fold is -1", "0..4 for --folds 5"]),
    "device unknown": (["--device", "gpu"], ["--device gpu is not a device", "pass cpu, cuda or cuda:N"]),
    # cuda:99 is refused on every machine: on one without CUDA, and on one with fewer GPUs.
    "device beyond the GPUs": (["--device", "cuda:99"], ["--device cuda:99", "pass"]),
}

ON_RUN = {  # (argv after the command, needles, whether the case needs its own copy of the run)
    "resume num samples 0": (["resume", "{run}", "--num-samples", "0"], ["--num-samples is 0", "must be >= 1"]),
    "resume below its trials": (["resume", "{run}", "--num-samples", "1"],
                                ["--num-samples 1 is below the 2 trials", "pass at least that many"]),
    "resume max failures negative": (["resume", "{run}", "--max-failures", "-1"],
                                     ["--max-failures is -1", "must be >= 0"]),
    "confirm top negative": (["confirm", "{run}", "--top", "-1"], ["--top", "-1 is below 0", "pass a number >= 0"]),
    "confirm top 0 without linear": (["confirm", "{run}", "--top", "0", "--no-linear"],
                                     ["--top 0 confirms the linear member alone", "drop --no-linear"]),
    "confirm one fold": (["confirm", "{run}", "--folds", "1"], ["--folds is 1", "must be >= 2"]),
    "confirm seeds 0": (["confirm", "{run}", "--seeds", "0"], ["--seeds is 0", "must be >= 1"]),
    "confirm cpus nan": (["confirm", "{run}", "--cpus-per-trial", "nan"], ["--cpus-per-trial", *NOT_FINITE]),
    "confirm gpus inf": (["confirm", "{run}", "--gpus-per-trial", "inf"], ["--gpus-per-trial", *NOT_FINITE]),
    "confirm cpus negative": (["confirm", "{run}", "--cpus-per-trial", "-1"], ["--cpus-per-trial is -1", "> 0"]),
    "confirm max concurrent 0": (["confirm", "{run}", "--max-concurrent", "0"], ["--max-concurrent is 0", ">= 1"]),
    "export over trials.json": (["export", "{run}", "--out", "{run}/trials.json"],
                                ["--out", "trials.json is inside the run directory", "write it elsewhere"]),
    "export over leaderboard.csv as markdown": (["export", "{run}", "--out", "{run}/leaderboard.csv", "--format", "md"],
                                                ["--out", "the run's own leaderboard", "rebuilt whole, as CSV"]),
    "export into ray dir": (["export", "{run}", "--out", "{run}/ray/board.csv"],
                            ["--out", "inside the run directory", "write it elsewhere"]),
    "export onto the run dir": (["export", "{run}", "--out", "{run}"], ["--out", "is a directory", "file name"]),
    "export onto a directory": (["export", "{run}", "--out", "{tmp}"], ["--out", "is a directory", "file name"]),
    "export under a file": (["export", "{run}", "--out", "{file}/board.csv"],
                            ["--out", "is a file, not a directory"]),
    "export link into the run": (["export", "{run}", "--out", "{tmp}/link.json"],
                                 ["--out", "inside the run directory", "write it elsewhere"]),
    "export top 0": (["export", "{run}", "--top", "0"], ["--top is 0", "must be >= 1"]),
    "export unknown status": (["export", "{run}", "--status", "done"], ["--status done is not a status", "pruned"]),
    "status top 0": (["status", "{run}", "--top", "0"], ["--top", "pass a number >= 1"]),
    "ensemble max members 0": (["ensemble", "{run}", "--max-members", "0"], ["--max-members is 0", "in 1..1000"]),
    "predict over run.json": (["predict", "{run}", "--data", "{file}", "--out", "{run}/run.json"],
                              ["--out", "inside the run directory", "write it elsewhere"]),
    "predict probs over study.db": (["predict", "{run}", "--data", "{file}", "--out", "{tmp}/s.csv",
                                     "--probs", "{run}/study.db"], ["--probs", "inside the run directory"]),
    "predict over its own data": (["predict", "{run}", "--data", "{file}", "--out", "{file}"],
                                  ["--out", "is the --data file", "overwrite the texts", "another file name"]),
    "predict probs over its data": (["predict", "{run}", "--data", "{file}", "--out", "{tmp}/s.csv",
                                     "--probs", "{file}"], ["--probs", "is the --data file"]),
    "predict probs over out": (["predict", "{run}", "--data", "{file}", "--out", "{tmp}/s.csv",
                                "--probs", "{tmp}/s.csv"], ["--probs", "is the --out file", "two file names"]),
    "predict batch size 0": (["predict", "{run}", "--data", "{file}", "--out", "{tmp}/s.csv", "--batch-size", "0"],
                             ["--batch-size is 0", "must be >= 1"]),
    "predict device unknown": (["predict", "{run}", "--data", "{file}", "--out", "{tmp}/s.csv", "--device", "gpu"],
                               ["--device gpu is not a device", "pass cpu, cuda or cuda:N"]),
    "predict device beyond the GPUs": (["predict", "{run}", "--data", "{file}", "--out", "{tmp}/s.csv",
                                        "--device", "cuda:99"], ["--device cuda:99", "pass"]),
}

PRETRAIN = {
    "lr inf": (["--lr", "inf"], ["--lr", *NOT_FINITE]),
    "lr nan": (["--lr", "nan"], ["--lr", *NOT_FINITE]),
    "weight decay nan": (["--weight-decay", "nan"], ["--weight-decay", *NOT_FINITE]),
    "max grad norm -inf": (["--max-grad-norm=-inf"], ["--max-grad-norm", *NOT_FINITE]),
    "mask prob nan": (["--mask-prob", "nan"], ["--mask-prob", *NOT_FINITE]),
    "mask prob 1": (["--mask-prob", "1"], ["--mask-prob is 1.0", "in (0, 1)"]),
    "warmup ratio inf": (["--warmup-ratio", "inf"], ["--warmup-ratio", *NOT_FINITE]),
    "epochs inf": (["--epochs", "inf"], ["--epochs", *NOT_FINITE]),
    "epochs 0": (["--epochs", "0"], ["--epochs is 0.0", "must be > 0"]),
    "time budget nan": (["--time-budget", "nan"], ["--time-budget", *NOT_FINITE]),
    "two budgets": (["--epochs", "1", "--steps", "10"], ["--steps", "not allowed with argument --epochs"]),
    "cpus per worker 0": (["--cpus-per-worker", "0"], ["--cpus-per-worker", "must be > 0"]),
    "gpus per worker negative": (["--gpus-per-worker", "-1"], ["--gpus-per-worker", "pass a number >= 0"]),
    "gpus per worker nan": (["--gpus-per-worker", "nan"], ["--gpus-per-worker", *NOT_FINITE]),
    "save every negative": (["--save-every", "-1"], ["--save-every", "pass a number >= 0"]),
    "threads 0": (["--threads", "0"], ["--threads", "pass a number >= 1"]),
    "max failures negative": (["--max-failures", "-1"], ["--max-failures", "pass a number >= 0"]),
    "num workers 0": (["--num-workers", "0"], ["--num-workers", "pass a number >= 1"]),
    "seed negative": (["--seed", "-3"], ["--seed", "pass a number >= 0"]),
    "device beyond the GPUs": (["--device", "cuda:99"], ["--device cuda:99", "pass"]),
    "workers sharing a GPU": (["--num-workers", "2", "--gpus-per-worker", "0.5"],
                              ["--gpus-per-worker is 0.5 with --num-workers 2", "--gpus-per-worker 1"]),
}


@pytest.fixture
def place(tmp_path):
    """Fill an argv's `{tmp}` and `{file}`; `{run}` is filled by the case."""
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "file.txt").write_text("id,text\n1,5 6 7\n")
    (tmp_path / "work" / "space.yaml").write_text(E2E_SPACE)
    (tmp_path / "work" / "half").mkdir()  # what a launch that failed early used to leave

    def fill(argv: list[str], run: str = "") -> list[str]:
        return [a.format(tmp=tmp_path / "work", file=tmp_path / "work" / "file.txt", run=run) for a in argv]
    return fill, tmp_path / "work"


@pytest.mark.parametrize("case", list(LAUNCH))
def test_launch(refused, place, case):
    fill, work = place
    flags, needles = LAUNCH[case]
    storage = [] if "--storage-path" in flags else ["--storage-path", str(work / "runs")]
    argv = ["launch", "--space", str(work / "space.yaml"), "--synthetic-rows", "600", *storage, *fill(flags)]
    refused(argv, [fill([n])[0] for n in needles], watch=(work,))


@pytest.mark.parametrize("case", list(TRAIN_ONE))
def test_train_one(refused, place, case):
    fill, work = place
    flags, needles = TRAIN_ONE[case]
    refused(["train-one", "--space", str(work / "space.yaml"), "--synthetic-rows", "600", *fill(flags)], needles,
            watch=(work,))


@pytest.mark.parametrize("case", list(ON_RUN))
def test_on_a_run(refused, place, run_copy, case):
    fill, work = place
    argv, needles = ON_RUN[case]
    if case == "export link into the run":
        (work / "link.json").symlink_to(run_copy / "trials.json")
    refused(fill(argv, run=str(run_copy)), needles, watch=(work, run_copy))


@pytest.mark.parametrize("case", list(PRETRAIN))
def test_pretrain(refused, place, case):
    fill, work = place
    flags, needles = PRETRAIN[case]
    refused(["pretrain", "--corpus", str(work / "file.txt"), "--out", str(work / "ckpt"), *flags], needles,
            watch=(work,))


@pytest.mark.parametrize("command", ["confirm", "launch"])
def test_an_address_where_no_cluster_answers_is_refused_within_the_timeout(refused, run_copy, tmp_path, command):
    import socket
    import time

    with socket.socket() as free:  # a port nothing listens on
        free.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{free.getsockname()[1]}"
    argv = {"confirm": ["confirm", run_copy, "--top", "1", "--folds", "2", "--address", address],
            "launch": ["launch", "--synthetic-rows", "300", "--num-samples", "1", "--storage-path", tmp_path / "runs",
                       "--name", "x", "--address", address]}[command]
    started = time.perf_counter()
    refused(argv, [f"no Ray cluster answers at --address {address}", "ray start --head"],
            watch=(run_copy, tmp_path / "runs"))
    assert time.perf_counter() - started < 60


STAGE_LIMITS = [
    (["confirm", "--top", "1", "--seeds", "1000000"], ["--seeds is 1000000, above 10"]),
    (["confirm", "--top", "1", "--seeds", "0"], ["--seeds is 0, but must be >= 1"]),
    (["confirm", "--top", "1", "--max-concurrent", "0"], ["--max-concurrent is 0"]),
    (["ensemble", "--max-members", "1000000000"], ["--max-members is 1000000000", "1..1000"]),
    (["ensemble", "--max-members", "0"], ["--max-members is 0"]),
]


@pytest.mark.parametrize("argv, needles", STAGE_LIMITS, ids=[" ".join(a) for a, _ in STAGE_LIMITS])
def test_counts_a_stage_cannot_use_are_refused_up_front(refused, confirmed_copy, argv, needles):
    refused([argv[0], confirmed_copy, *argv[1:]], needles, watch=(confirmed_copy,))


def test_more_confirm_folds_than_rows_are_refused_before_ray(refused, run_copy):
    refused(["confirm", run_copy, "--top", "1", "--folds", "100000"], ["--folds", "100000"], watch=(run_copy,))
