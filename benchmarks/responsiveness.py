"""How fast the command line answers, and what predict's thread count costs.

Part 1 (always): the wall time of `python -m search --help`, of every sub-command's `--help` and of a
refused bad flag, each in a fresh interpreter (best of `--repeats`), side by side with
`python -c pass` (the interpreter alone) and with importing what building the parser used to import
(torch and transformers, through the `pretrain` sub-command). The ratio is what the light parser
(docs/architecture.md, "The command line is light") saves.

Part 2 (`--predict RUN_DIR --data FILE`): `python -m search predict` of the run with `--threads 1`,
the default (the CPUs this process may use, less one) and one thread per core (torch's own default),
side by side, each output checked to be the same file.

    python -m benchmarks.responsiveness [--repeats 3] [--predict RUN_DIR --data test.csv]

Prints markdown tables; ratios compare runs made side by side in this one process.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from model.threads import default_threads

COMMANDS = ("launch", "resume", "status", "export", "report", "confirm", "ensemble", "predict", "pipeline",
            "train-one", "pretrain", "embed")
HEAVY_IMPORT = "import torch, transformers"  # what building the parser imported before the layers


def timed(argv: list[str], *, repeats: int, expect: int | None = 0) -> float:
    """Best wall time of `argv` over `repeats` runs, in seconds; its exit status must be `expect`."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, text=True)
        best = min(best, time.perf_counter() - started)
        if expect is not None and done.returncode != expect:
            raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}, not {expect}:\n{done.stderr[-2000:]}")
    return best


def startup_rows(repeats: int) -> list[tuple[str, float]]:
    python = [sys.executable]
    rows = [("python -c pass", timed([*python, "-c", "pass"], repeats=repeats)),
            (f"python -c '{HEAVY_IMPORT}'", timed([*python, "-c", HEAVY_IMPORT], repeats=repeats)),
            ("python -m search --help", timed([*python, "-m", "search", "--help"], repeats=repeats))]
    rows += [(f"python -m search {c} --help", timed([*python, "-m", "search", c, "--help"], repeats=repeats))
             for c in COMMANDS]
    refusals = {"launch --num-samples zero": ["launch", "--num-samples", "zero"],
                "launch --data nowhere.csv": ["launch", "--data", "nowhere.csv"],
                "confirm nowhere": ["confirm", "nowhere"],
                "predict nowhere --data t.csv --out o.csv": ["predict", "nowhere", "--data", "t.csv", "--out", "o.csv"],
                "embed --corpus nowhere.txt --out v": ["embed", "--corpus", "nowhere.txt", "--out", "v"]}
    rows += [(f"python -m search {name} (refused)", timed([*python, "-m", "search", *args], repeats=repeats, expect=2))
             for name, args in refusals.items()]
    return rows


def predict_rows(run_dir: str, data: str, repeats: int) -> list[tuple[str, float]]:
    cores = os.cpu_count() or 1
    counts = {"--threads 1": 1, f"default (--threads {default_threads()})": default_threads(),
              f"one per core (--threads {cores})": cores}
    rows, outputs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for label, threads in counts.items():
            out = Path(tmp) / f"threads{threads}-{len(outputs)}.csv"
            seconds = timed([sys.executable, "-m", "search", "predict", run_dir, "--data", data, "--out", str(out),
                             "--threads", str(threads), "--no-progress"], repeats=repeats)
            rows.append((label, seconds))
            outputs.append(out)
        if not all(filecmp.cmp(outputs[0], other, shallow=False) for other in outputs[1:]):
            raise RuntimeError("the thread counts gave different predictions")
    return rows


def table(rows: list[tuple[str, float]], *, baseline: str) -> str:
    base = dict(rows)[baseline]
    lines = ["| command | seconds | ratio to " + baseline + " |", "|---|---:|---:|"]
    lines += [f"| `{name}` | {seconds:.2f} | {seconds / base:.2f} |" for name, seconds in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs of each command; the best time counts")
    parser.add_argument("--predict", metavar="RUN_DIR", help="also time predict of this run (confirmed or not)")
    parser.add_argument("--data", help="the test CSV for --predict")
    args = parser.parse_args(argv)
    if args.predict and not args.data:
        parser.error("--predict needs --data")
    print(f"## Command-line startup ({os.cpu_count()} CPUs, best of {args.repeats})\n")
    print(table(startup_rows(args.repeats), baseline=f"python -c '{HEAVY_IMPORT}'"))
    if args.predict:
        print(f"\n## predict {args.predict} --data {args.data}\n")
        print(table(predict_rows(args.predict, args.data, args.repeats), baseline="--threads 1"))


if __name__ == "__main__":
    main()
