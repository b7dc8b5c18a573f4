"""GPU check of the submission path: search -> confirm -> ensemble -> predict, fold models on CUDA.

    python -m benchmarks.gpu_submission_check [--trials 2] [--top 2] [--folds 2] [--gpus-per-trial 0.25]
        [--rows 3000] [--hidden 768 --layers 12 --heads 12] [--out DIR]

Runs the README's recipe with the user's own commands (`cli.main.main`, in this process, each
timed) on synthetic data: `launch` of `--trials` trials of a random-init encoder (BERT-base size by
default) for `--max-epochs`, `confirm --top --folds` at `--gpus-per-trial` (several fold jobs
share the GPU), `ensemble`, then `predict` of the synthetic test texts on CUDA, and again on the
CPU for the first `--cpu-rows` rows. nvidia-smi samples the GPU during confirm. It prints each
stage's wall time, every confirm job's device, time, peak GPU memory and score, and checks:

1. every stage exited 0;
2. every network fold job trained on CUDA (jobs.json's `device`), hence under bf16 autocast
   (model/inference.py `autocast`), and reported its peak GPU memory;
3. predict on CUDA wrote one valid level-2 label per input row, in input order;
4. its labels agree with predict's on the CPU (fp32) on at least `--min-agreement` of the rows
   both predicted (bf16 rounding may flip a near tie, not more).

Exit status 0 when all hold, 1 otherwise. `--out DIR` keeps the run directory, the submissions
and a summary.json there (to bring the results back from a lent machine); without it they live
in a temporary directory. `--allow-cpu` (with small `--hidden/--layers`) smoke-tests the script
where no GPU is present; the CUDA checks then read "cpu".
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from benchmarks.gpu_check import encoder_yaml, gpu_sampling
from cli import main as cli
from model import metrics as M
from model.synthetic import synthesize
from rundir import keys as K
from rundir.confirm import LINEAR_MEMBER
from rundir.io import read_json

NAME = "submission-check"


def space_yaml(args: argparse.Namespace) -> str:
    return encoder_yaml(args) + f"""  batch_size: {args.batch_size}
params:
  lr: {{float: [2.0e-5, 1.0e-4], log: true}}
  dropout: {{float: [0.1, 0.3]}}
"""


def run_stage(name: str, argv: list[str], timings: dict[str, Any]) -> bool:
    """Run `python -m search <argv>` in this process; note its wall seconds and exit status."""
    print(f"\n=== {name}: python -m search {' '.join(argv)}", flush=True)
    started = time.perf_counter()
    code = 0
    try:
        cli.main(argv)
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    timings[name] = {"seconds": round(time.perf_counter() - started, 1), "exit": code}
    print(f"=== {name}: exit {code} in {timings[name]['seconds']:.0f} s", flush=True)
    return code == 0


def job_rows(jobs: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The confirm jobs as table rows, in job-id order."""
    return [{"job": key, "device": job.get(K.DEVICE), "status": job["status"], "time_s": job.get("time_s"),
             "gpu_mem_peak_gb": job.get(K.GPU_MEM_PEAK_GB), "level2_macro_f1": job.get(M.LEVEL2_MACRO_F1)}
            for key, job in sorted(jobs.items())]


def network_jobs_on(jobs: dict[str, dict[str, Any]], device_type: str) -> bool:
    """Every network fold job (not the linear member's) completed on a `device_type` device, and
    on CUDA reported its peak GPU memory."""
    network = [job for job in jobs.values() if job["member"] != LINEAR_MEMBER]
    return bool(network) and all(
        job["status"] == "completed" and str(job.get(K.DEVICE) or "").split(":")[0] == device_type
        and (device_type != "cuda" or job.get(K.GPU_MEM_PEAK_GB) is not None) for job in network)


def submission_matches(submission: pd.DataFrame, ids: pd.Series, labels: list[str]) -> bool:
    """One row per input row, in input order, each with a label of the training file."""
    return (list(submission.columns) == ["id", "label"] and submission["id"].tolist() == ids.tolist()
            and submission["label"].isin(labels).all())


def agreement(first: pd.DataFrame, second: pd.DataFrame) -> float:
    """Share of the ids both submissions hold on which their labels agree."""
    joined = first.merge(second, on="id", suffixes=("_a", "_b"))
    return float((joined["label_a"] == joined["label_b"]).mean()) if len(joined) else 0.0


def check(name: str, ok: bool, results: list[dict[str, Any]]) -> None:
    print(f"{'PASS' if ok else 'FAIL'}: {name}")
    results.append({"check": name, "ok": bool(ok)})


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=2)
    parser.add_argument("--max-epochs", type=int, default=2)
    parser.add_argument("--top", type=int, default=2, help="confirm --top")
    parser.add_argument("--folds", type=int, default=2, help="confirm --folds")
    parser.add_argument("--gpus-per-trial", type=float, default=0.25, help="per trial and per fold job")
    parser.add_argument("--cpus-per-trial", type=float, default=2)
    parser.add_argument("--rows", type=int, default=3000, help="synthetic training rows")
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--cpu-rows", type=int, default=100, help="test rows predicted again on the CPU")
    parser.add_argument("--min-agreement", type=float, default=0.97)
    parser.add_argument("--out", type=Path, default=None, help="keep the run and a summary.json in this directory")
    parser.add_argument("--allow-cpu", action="store_true", help="run without a GPU (smoke test of this script)")
    return parser.parse_args(argv)


def stage_commands(args: argparse.Namespace, root: Path, run_dir: Path, *, gpus: str, device_type: str
                   ) -> list[tuple[str, list[str]]]:
    """The user's commands, in order: launch, confirm, ensemble, predict here and on the CPU."""
    resources = ["--cpus-per-trial", f"{args.cpus_per_trial:g}", "--gpus-per-trial", gpus]
    return [
        ("launch", ["launch", "--space", str(root / "space.yaml"), "--synthetic-rows", str(args.rows),
                    "--num-samples", str(args.trials), "--max-epochs", str(args.max_epochs),
                    "--grace-period", str(args.max_epochs), "--max-seq-len", "128",
                    "--storage-path", str(root / "runs"), "--name", NAME, *resources]),
        ("confirm", ["confirm", str(run_dir), "--top", str(args.top), "--folds", str(args.folds), *resources]),
        ("ensemble", ["ensemble", str(run_dir)]),
        ("predict", ["predict", str(run_dir), "--data", str(root / "test.csv"),
                     "--out", str(root / "submission.csv"), "--device", device_type, "--no-progress"]),
        ("predict-cpu", ["predict", str(run_dir), "--data", str(root / "test-head.csv"),
                         "--out", str(root / "submission-cpu.csv"), "--device", "cpu", "--no-progress"]),
    ]


def print_tables(summary: dict[str, Any], args: argparse.Namespace, *, gpus: str) -> None:
    print(f"\n{summary['device']}: {args.trials} trials, confirm of the top {args.top} x {args.folds} folds "
          f"of a {args.layers}-layer hidden-{args.hidden} encoder at {gpus} GPU per job\n")
    print("| stage | exit | wall s |\n|---|---|---|")
    for name, timing in summary["timings"].items():
        print(f"| {name} | {timing['exit']} | {timing['seconds']:.0f} |")
    print("\n| job | device | status | time s | peak GPU GB | level-2 macro-F1 |\n|---|---|---|---|---|---|")
    for row in summary["jobs"]:
        memory = "" if row["gpu_mem_peak_gb"] is None else f"{row['gpu_mem_peak_gb']:.2f}"
        score = "" if row["level2_macro_f1"] is None else f"{row['level2_macro_f1']:.4f}"
        print(f"| {row['job']} | {row['device']} | {row['status']} | {row['time_s']} | {memory} | {score} |")
    if "confirm_gpu" in summary:
        gpu = summary["confirm_gpu"]
        print(f"\nGPU during confirm: utilization mean {gpu['utilization_mean']:.0f}%, peak "
              f"{gpu['utilization_peak']:.0f}%; memory used peak {gpu['memory_peak_gib']:.1f} GiB")


def run_checks(summary: dict[str, Any], args: argparse.Namespace, root: Path, run_dir: Path, jobs: dict,
               test: pd.DataFrame, *, stages: int, device_type: str, on_gpu: bool) -> list[dict[str, Any]]:
    """The PASS/FAIL checks over what the stages left, printed and returned."""
    results: list[dict[str, Any]] = []
    timings = summary["timings"]
    check("every stage exited 0", len(timings) == stages and all(t["exit"] == 0 for t in timings.values()), results)
    check(f"every network fold job completed on {device_type}"
          + (" (bf16 autocast) and reported its peak GPU memory" if on_gpu else ""),
          network_jobs_on(jobs, device_type), results)
    submission = pd.read_csv(root / "submission.csv", dtype=str) if (root / "submission.csv").is_file() else None
    labels = read_json(run_dir / "confirm" / "confirm.json")["labels"] if jobs else []
    check(f"predict on {device_type} wrote one valid label per input row, in input order",
          submission is not None and submission_matches(submission, test["id"], labels), results)
    cpu = root / "submission-cpu.csv"
    share = agreement(submission, pd.read_csv(cpu, dtype=str)) if submission is not None and cpu.is_file() else 0.0
    summary["cpu_agreement"] = share
    check(f"its labels agree with predict on the CPU on {share:.1%} of {min(args.cpu_rows, len(test))} rows "
          f"(at least {args.min_agreement:.0%})", share >= args.min_agreement, results)
    return results


def prepare(root: Path, args: argparse.Namespace) -> pd.DataFrame:
    """The space file and the test files the stages read; returns the synthetic test texts."""
    (root / "space.yaml").write_text(space_yaml(args))
    test = synthesize(args.rows, seed=0)[1].astype({"id": str})  # the launch's own synthetic test texts
    test.to_csv(root / "test.csv", index=False)
    test.head(args.cpu_rows).to_csv(root / "test-head.csv", index=False)
    return test


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    on_gpu = torch.cuda.is_available()
    if not on_gpu and not args.allow_cpu:
        sys.exit("no CUDA device visible: run this on a GPU machine (or pass --allow-cpu to smoke-test it)")
    gpus = f"{args.gpus_per_trial if on_gpu else 0:g}"
    device_type = "cuda" if on_gpu else "cpu"
    with contextlib.ExitStack() as stack:
        root = args.out if args.out is not None else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        root.mkdir(parents=True, exist_ok=True)
        run_dir = root / "runs" / NAME
        if run_dir.exists():
            sys.exit(f"{run_dir} exists: pass another --out, or remove it")
        test = prepare(root, args)
        samples: list[tuple[float, float]] = []
        summary: dict[str, Any] = {"device": torch.cuda.get_device_name(0) if on_gpu else "cpu",
                                   "torch": torch.__version__, "args": {k: str(v) for k, v in vars(args).items()},
                                   "timings": {}}
        stages = stage_commands(args, root, run_dir, gpus=gpus, device_type=device_type)
        for name, command in stages:
            with gpu_sampling(samples) if name == "confirm" else contextlib.nullcontext():
                ok = run_stage(name, command, summary["timings"])
            (root / "summary.json").write_text(json.dumps(summary, indent=1))
            if not ok:
                break
        jobs_json = run_dir / "confirm" / "jobs.json"
        jobs = read_json(jobs_json) if jobs_json.is_file() else {}
        summary["jobs"] = job_rows(jobs)
        if samples:
            utils = [u for u, _ in samples]
            summary["confirm_gpu"] = {"utilization_mean": sum(utils) / len(utils), "utilization_peak": max(utils),
                                      "memory_peak_gib": max(m for _, m in samples) / 1024}
        print_tables(summary, args, gpus=gpus)
        results = run_checks(summary, args, root, run_dir, jobs, test, stages=len(stages), device_type=device_type,
                             on_gpu=on_gpu)
        summary["checks"] = results
        (root / "summary.json").write_text(json.dumps(summary, indent=1))
    sys.exit(0 if all(r["ok"] for r in results) else 1)


if __name__ == "__main__":
    main()
