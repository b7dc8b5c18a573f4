"""The GPU checks `python -m benchmarks.gpu_kit run` runs, in order, and how each is judged.

Each check is one or more commands run as subprocesses (their own Python, so a crash, a hang or a
CUDA error stays in that check) under one time limit, and an `evaluate` that turns the exit status,
the output and the files the commands wrote into a status (pass, fail or missing) and the key
figures. Two sizes: `gpu` (what the lent machine runs) and `smoke` (`--cpu-smoke`: tiny models on
the CPU, so the runner and every check's command line are tested without a GPU).

Time limits (GPU sizes; their sum, 480 s, is the run's default budget, so the run fits in about 8
minutes of the device's 10-minute command limit with the kit's unpacking and the probe's imports
besides). Each is about twice what the check is expected to take on an H100, from the runs recorded
in the README (an H200 ran gpu_check's 4 trials x 14,009 rows in 99 s: about 35 s of it Ray's start
and the workers' imports, 450 samples/s per trial at 2 CPUs; gpu_oom_check needed over 3 minutes at
14,009 rows, hence 3,000 rows and retries that end at once):

| check | sizes | expected | limit |
|---|---|---|---|
| env | imports of torch, transformers, ray, optuna, the project | 10-20 s | 40 s |
| gpu_check | 2 trials sharing the GPU, 3,000 rows, 1 epoch, BERT-base size | 35-45 s | 70 s |
| gpu_oom_check | 4 trials, 2 at a time, 3,000 rows, 2 epochs, one batch 8192 | 60-90 s | 110 s |
| gpu_submission_check | launch 2 trials, confirm 2 x 2 folds, ensemble, predict x2 | 90-120 s | 150 s |
| pretrain | 300 steps of the default BERT (hidden 256, 4 layers, batch 64, 128 tokens) | 15-25 s | 35 s |
| encoder_NAME x3 | train-one, 1 epoch of 3,000 rows each | 10-15 s | 25 s each |
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The CPU-budget encoders over word embeddings (model/wordvec_encoders.py). One check each;
# a name the registry does not hold yet is reported as "missing".
ENCODER_NAMES = ("textcnn", "dpcnn", "bigru")
PASS, FAIL, TIMEOUT, MISSING, SKIPPED = "pass", "fail", "timeout", "missing", "skipped"
STATUSES = (PASS, FAIL, TIMEOUT, MISSING, SKIPPED)

Evaluate = Callable[[int, str], tuple[str, dict[str, Any]]]
Headline = Callable[[dict[str, Any]], str]


@dataclass(frozen=True)
class Check:
    """One check: `commands` run in order (stopping at the first that fails) within `limit_s`, then
    `evaluate(exit status of the last command run, all their output)` -> (status, figures); an
    evaluation that reads files knows their paths."""

    name: str
    limit_s: float
    commands: tuple[tuple[str, ...], ...]
    evaluate: Evaluate
    headline: Headline  # one line of the key figures, for the summary's table
    description: str = ""
    encoder: str | None = None  # the encoder an encoder check trains (to report it missing without running)


def last_json_line(output: str) -> dict[str, Any] | None:
    """The last line of `output` that is a JSON object (a probe's answer among log lines)."""
    for line in reversed(output.splitlines()):
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    return None


def fmt(value: Any, spec: str = ".0f") -> str:
    """`value` formatted, or "?" where a figure is missing."""
    return "?" if value is None else format(value, spec)


def number(text: str) -> float | None:
    """A table cell as a number; None for "nan" (no GPU memory on the CPU) or text: summary.json
    stays strict JSON."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


# ----------------------------------------------------------------------------- evaluations


def evaluate_env(expect_cuda: bool) -> Evaluate:
    """The probe passes when it answered, every import worked, CUDA is there (on a GPU run) and the
    machine's packages meet the kit's requirements."""

    def evaluate(code: int, output: str) -> tuple[str, dict[str, Any]]:
        found = last_json_line(output)
        if code != 0 or found is None:
            return FAIL, {}
        failed_imports = {k: v for k, v in found.get("imports_s", {}).items() if isinstance(v, str)}
        ok = not failed_imports and not found.get("unmet_requirements") and (
            found.get("cuda_available") or not expect_cuda)
        return (PASS if ok else FAIL), {**found, "failed_imports": failed_imports}

    return evaluate


GPU_CHECK_HEADER = re.compile(r"^(?P<device>.+): (?P<trials>\d+) trials of a .*; wall (?P<wall>\d+) s$")
TABLE_ROW = re.compile(r"^\|(.+)\|$")
UTILIZATION = re.compile(r"GPU utilization: mean (?P<mean>[\d.]+)%, peak (?P<peak>[\d.]+)%.*memory used peak "
                         r"(?P<memory>[\d.]+) GiB")


def table_rows(output: str, header_start: str) -> list[list[str]]:
    """The cells of the markdown table whose header line starts with `header_start`."""
    lines = output.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith(header_start)]
    if not starts:
        return []
    rows = []
    for line in lines[starts[-1] + 2:]:  # past the header and the |---| line
        match = TABLE_ROW.match(line.strip())
        if not match:
            break
        rows.append([cell.strip() for cell in match.group(1).split("|")])
    return rows


def parse_gpu_check(output: str) -> dict[str, Any]:
    """gpu_check's printed figures: the card, trials, wall seconds, each trial's row, the GPU's use."""
    figures: dict[str, Any] = {}
    for line in output.splitlines():
        if match := GPU_CHECK_HEADER.match(line.strip()):
            figures.update(device=match["device"], trials=int(match["trials"]), wall_s=float(match["wall"]))
        if match := UTILIZATION.search(line):
            figures.update(gpu_utilization_mean=float(match["mean"]), gpu_utilization_peak=float(match["peak"]),
                           gpu_memory_used_peak_gib=float(match["memory"]))
    figures["rows"] = [{"trial": r[0], "status": r[1], "epochs": r[2], "train_samples_per_s": number(r[3]),
                        "peak_gpu_memory_gb": number(r[4]), "level2_macro_f1": number(r[5])}
                       for r in table_rows(output, "| trial | status |") if len(r) == 6]
    if figures.get("wall_s"):
        figures["trials_per_min"] = round(60 * len(figures["rows"]) / figures["wall_s"], 2)
    return figures


def evaluate_gpu_check(expect_cuda: bool) -> Evaluate:
    """Passes when every trial completed (or ASHA stopped it), on the GPU in a GPU run."""

    def evaluate(code: int, output: str) -> tuple[str, dict[str, Any]]:
        figures = parse_gpu_check(output)
        rows = figures["rows"]
        ok = code == 0 and bool(rows) and all(r["status"] in ("completed", "pruned") for r in rows) and (
            not expect_cuda or figures.get("device", "CPU") != "CPU")
        return (PASS if ok else FAIL), figures

    return evaluate


def parse_oom_check(output: str) -> dict[str, Any]:
    """gpu_oom_check's verdicts (PASS/FAIL lines), trials and the memory reused workers found."""
    verdicts = [{"check": line[6:].strip(), "ok": line.startswith("PASS")} for line in output.splitlines()
                if line.startswith(("PASS: ", "FAIL: "))]
    trials = [{"trial": r[0], "warm_start": r[1], "batch": r[2], "status": r[3], "epochs": r[4], "error": r[5][:200]}
              for r in table_rows(output, "| trial | warm start |") if len(r) == 6]
    left = re.search(r"still held as its next trial started \(GiB\): (.+)$", output, re.MULTILINE)
    wall = re.search(r": 4 trials, 2 sharing the GPU at a time; wall (\d+) s", output)
    return {"verdicts": verdicts, "trials": trials, "memory_left_gib": left.group(1) if left else None,
            "wall_s": float(wall.group(1)) if wall else None,
            "oom_checks_skipped": "the out-of-memory checks were skipped" in output}


def evaluate_oom_check(expect_cuda: bool) -> Evaluate:
    """On a GPU: exit 0 with its three PASS lines. On the CPU (smoke) the out-of-memory checks are
    skipped by the script itself: exit 0 and every trial ended is what is left to check."""

    def evaluate(code: int, output: str) -> tuple[str, dict[str, Any]]:
        figures = parse_oom_check(output)
        verdicts = figures["verdicts"]
        if expect_cuda:
            ok = code == 0 and len(verdicts) == 3 and all(v["ok"] for v in verdicts)
        else:
            ok = code == 0 and figures["oom_checks_skipped"] and bool(figures["trials"])
        return (PASS if ok else FAIL), figures

    return evaluate


def read_json_file(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def evaluate_submission(out_dir: Path) -> Evaluate:
    """gpu_submission_check exits 0 only when its four checks hold; its summary.json has the figures."""

    def evaluate(code: int, output: str) -> tuple[str, dict[str, Any]]:
        summary = read_json_file(out_dir / "summary.json") or {}
        jobs = summary.get("jobs", [])
        peaks = [j["gpu_mem_peak_gb"] for j in jobs if j.get("gpu_mem_peak_gb") is not None]
        figures = {"device": summary.get("device"),
                   "stage_s": {name: t.get("seconds") for name, t in summary.get("timings", {}).items()},
                   "stage_exit": {name: t.get("exit") for name, t in summary.get("timings", {}).items()},
                   "cpu_agreement": summary.get("cpu_agreement"), "checks": summary.get("checks", []),
                   "fold_jobs": len(jobs), "fold_job_devices": sorted({str(j.get("device")) for j in jobs}),
                   "fold_job_peak_gpu_memory_gb": max(peaks) if peaks else None,
                   "confirm_gpu": summary.get("confirm_gpu")}
        ok = code == 0 and bool(figures["checks"]) and all(c.get("ok") for c in figures["checks"])
        return (PASS if ok else FAIL), figures

    return evaluate


def evaluate_pretrain(out_dir: Path, *, steps: int, device: str) -> Evaluate:
    """Passes when pretrain.json says the run finished its steps on `device` at some tokens/s."""

    def evaluate(code: int, output: str) -> tuple[str, dict[str, Any]]:
        record = read_json_file(out_dir / "pretrain.json") or {}
        curve = record.get("loss_curve") or []
        flags = record.get("flags", {})
        figures = {"tokens_per_s": record.get("tokens_per_s"), "steps": record.get("steps"),
                   "wall_time_s": record.get("wall_time_s"), "device": record.get("device"),
                   "tokens_seen": record.get("tokens_seen"),
                   "loss_first_last": [curve[0].get("loss"), curve[-1].get("loss")] if curve else None,
                   "model": {k: flags.get(k) for k in ("arch", "hidden_size", "num_layers", "batch_size",
                                                       "max_seq_len")}}
        ok = (code == 0 and record.get("steps") == steps and record.get("device") == device
              and (record.get("tokens_per_s") or 0) > 0)
        return (PASS if ok else FAIL), figures

    return evaluate


BEST_LINE = re.compile(r"^best: epoch (?P<epoch>\d+), level-2 macro-F1 (?P<f1>[\d.]+), level-1 macro-F1 "
                       r"(?P<f1_l1>[\d.]+) \((?P<seconds>\d+)s\)")
EPOCH_LINE = re.compile(r"^epoch (?P<epoch>\d+)/\d+ .*\((?P<seconds>\d+)s\)")


def unknown_encoder(name: str, output: str) -> bool:
    """Whether `output` is train-one's refusal of `name` as an encoder the registry lacks."""
    return f"'{name}'" in output and "valid encoder names are" in output


def evaluate_encoder(name: str) -> Evaluate:
    """train-one of one encoder: passes when it exits 0 after its best-evaluation line; an encoder
    the registry does not hold is "missing", not a failure."""

    def evaluate(code: int, output: str) -> tuple[str, dict[str, Any]]:
        best = next((m for line in output.splitlines() if (m := BEST_LINE.match(line.strip()))), None)
        epochs = [float(m["seconds"]) for line in output.splitlines() if (m := EPOCH_LINE.match(line.strip()))]
        figures = {"encoder": name, "epoch_end_s": epochs}
        if best:
            figures.update(level2_macro_f1=float(best["f1"]), level1_macro_f1=float(best["f1_l1"]),
                           train_s=float(best["seconds"]))
        if code != 0 and unknown_encoder(name, output):
            return MISSING, figures
        return (PASS if code == 0 and best else FAIL), figures

    return evaluate


# ----------------------------------------------------------------------------- headlines


def env_headline(f: dict[str, Any]) -> str:
    versions = f.get("versions") or {}
    return (f"{f.get('device_name') or 'no GPU'}; Python {f.get('python')}, torch {f.get('torch')}, ray "
            f"{versions.get('ray')}, optuna {versions.get('optuna')}; unmet requirements "
            f"{len(f.get('unmet_requirements') or [])}, failed imports {len(f.get('failed_imports') or {})}")


def gpu_check_headline(f: dict[str, Any]) -> str:
    rows = f.get("rows") or []
    speeds = [r["train_samples_per_s"] for r in rows if r.get("train_samples_per_s") is not None]
    peaks = [r["peak_gpu_memory_gb"] for r in rows if r.get("peak_gpu_memory_gb") is not None]
    return (f"{len(rows)} trials, {fmt(sum(speeds) / len(speeds) if speeds else None)} train samples/s per trial, "
            f"peak {fmt(max(peaks) if peaks else None, '.2f')} GB per trial, {fmt(f.get('trials_per_min'), '.2f')} "
            f"trials/min, GPU busy {fmt(f.get('gpu_utilization_mean'))}% (peak {fmt(f.get('gpu_utilization_peak'))}%)")


def oom_headline(f: dict[str, Any]) -> str:
    verdicts = f.get("verdicts") or []
    if f.get("oom_checks_skipped"):
        return f"no GPU: the script skips its out-of-memory checks; {len(f.get('trials') or [])} trials ended"
    return (f"{sum(v['ok'] for v in verdicts)}/{len(verdicts)} PASS; GiB left on reused workers: "
            f"{f.get('memory_left_gib')}")


def submission_headline(f: dict[str, Any]) -> str:
    stages = ", ".join(f"{k} {fmt(v)} s" for k, v in (f.get("stage_s") or {}).items())
    return (f"CPU/CUDA label agreement {fmt(f.get('cpu_agreement'), '.1%')}; {f.get('fold_jobs')} fold jobs on "
            f"{f.get('fold_job_devices')}; {stages}")


def pretrain_headline(f: dict[str, Any]) -> str:
    return f"{fmt(f.get('tokens_per_s'), ',.0f')} tokens/s over {f.get('steps')} steps on {f.get('device')}"


def encoder_headline(f: dict[str, Any]) -> str:
    if "registry" in f:
        return f"not in the registry ({', '.join(f['registry'])})"
    return f"level-2 macro-F1 {fmt(f.get('level2_macro_f1'), '.3f')} after 1 epoch of {fmt(f.get('train_s'))} s"


# ----------------------------------------------------------------------------- the checks


@dataclass(frozen=True)
class Sizes:
    """One size of every check: its limits and the flags that size its work."""

    device: str  # what the checks must run on: "cuda", or "cpu" for the smoke run
    limits: dict[str, float]  # by check name; "encoder" is each encoder check's
    gpu_check: tuple[str, ...]
    oom_check: tuple[str, ...]
    submission_check: tuple[str, ...]
    corpus_rows: int
    pretrain: tuple[str, ...]
    pretrain_steps: int
    train_one: tuple[str, ...]


GPU = Sizes(
    device="cuda",
    limits={"env": 40, "gpu_check": 70, "gpu_oom_check": 110, "gpu_submission_check": 150, "pretrain": 35,
            "encoder": 25},
    gpu_check=("--trials", "2", "--max-epochs", "1", "--rows", "3000", "--gpus-per-trial", "0.5"),
    oom_check=(),  # its defaults: 3,000 rows, 4 trials of BERT-base size, one at batch 8192
    submission_check=(),  # its defaults: 2 trials x 2 epochs, confirm top 2 x 2 folds at 0.25 GPU, 3,000 rows
    corpus_rows=14009,
    pretrain=("--save-every", "0"),  # the default model: BERT, hidden 256, 4 layers, batch 64, 128 tokens
    pretrain_steps=300,
    train_one=("--synthetic-rows", "3000", "--max-epochs", "1"),
)
TINY = ("--hidden", "32", "--layers", "1", "--heads", "2", "--rows", "800", "--cpus-per-trial", "1", "--allow-cpu")
SMOKE = Sizes(
    device="cpu",
    limits={"env": 120, "gpu_check": 240, "gpu_oom_check": 300, "gpu_submission_check": 420, "pretrain": 180,
            "encoder": 120},
    gpu_check=(*TINY, "--trials", "2", "--max-epochs", "1", "--batch-size", "32"),
    oom_check=(*TINY, "--huge-batch", "64"),
    submission_check=(*TINY, "--max-epochs", "1", "--batch-size", "32", "--cpu-rows", "50"),
    corpus_rows=400,
    pretrain=("--save-every", "0", "--hidden-size", "32", "--num-layers", "1", "--num-heads", "2",
              "--intermediate-size", "64", "--batch-size", "16", "--max-seq-len", "64", "--threads", "1"),
    pretrain_steps=3,
    train_one=("--synthetic-rows", "400", "--max-epochs", "1", "--threads", "1"),
)


def build_checks(sizes: Sizes, work: Path, *, manifest: Path | None = None, python: str = sys.executable,
                 encoders: tuple[str, ...] = ENCODER_NAMES) -> list[Check]:
    """Every check in the order they run, sized by `sizes`, writing under `work`: one per encoder
    of `encoders` at the end."""
    on_gpu, limits = sizes.device == "cuda", sizes.limits
    submission_out, pretrain_out, corpus = work / "submission", work / "pretrain", work / "corpus.csv"

    def module(name: str, *args: str) -> tuple[str, ...]:
        return (python, "-m", name, *args)

    checks = [
        Check("env", limits["env"],
              (module("benchmarks.gpu_kit.probe", "env", *(("--manifest", str(manifest)) if manifest else ())),),
              evaluate_env(on_gpu), env_headline,
              "Python, torch, CUDA and the card, versions, import times, the kit's requirements"),
        Check("gpu_check", limits["gpu_check"], (module("benchmarks.gpu_check", *sizes.gpu_check),),
              evaluate_gpu_check(on_gpu), gpu_check_headline,
              "launch's path, 2 trials sharing one GPU: samples/s and memory per trial"),
        Check("gpu_oom_check", limits["gpu_oom_check"], (module("benchmarks.gpu_oom_check", *sizes.oom_check),),
              evaluate_oom_check(on_gpu), oom_headline, "out-of-memory isolation; memory released on reused workers"),
        Check("gpu_submission_check", limits["gpu_submission_check"],
              (module("benchmarks.gpu_submission_check", *sizes.submission_check, "--out", str(submission_out)),),
              evaluate_submission(submission_out), submission_headline,
              "confirm and predict on CUDA, CPU/CUDA label agreement"),
        Check("pretrain", limits["pretrain"],
              (module("benchmarks.gpu_kit.probe", "corpus", "--rows", str(sizes.corpus_rows), "--out", str(corpus)),
               module("search", "pretrain", "--corpus", str(corpus), "--out", str(pretrain_out), "--steps",
                      str(sizes.pretrain_steps), "--device", sizes.device, "--no-progress", *sizes.pretrain)),
              evaluate_pretrain(pretrain_out, steps=sizes.pretrain_steps, device=sizes.device), pretrain_headline,
              "MLM pretraining throughput (bf16 autocast on CUDA): tokens/s from pretrain.json"),
    ]
    for name in encoders:
        command = module("search", "train-one", "--device", sizes.device, "--set", f"encoder={name}",
                         "--set", "pooler=max", "--no-progress", *sizes.train_one)
        checks.append(Check(f"encoder_{name}", limits["encoder"], (command,), evaluate_encoder(name),
                            encoder_headline, f"train-one of the {name} encoder", encoder=name))
    return checks
