"""GPU check: a short real search on one GPU with BERT-base dimensions, two trials per GPU.

    python -m benchmarks.gpu_check [--trials 4] [--max-epochs 2] [--gpus-per-trial 0.5] [--batch-size 64]

Runs `python -m search launch`'s code path (random-init encoder of BERT-base size: hidden 768,
12 layers, 12 heads, FFN 3072; bf16 autocast and TF32) on the synthetic data, samples the GPU's
utilization and memory with nvidia-smi, and prints per trial: training samples/s, peak GPU memory
(torch's max allocated) and scores, then the GPU's mean and peak utilization. `--allow-cpu` with
small `--hidden/--layers` smoke-tests the script where no GPU is present.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import torch

from model import metrics as M
from rundir import keys as K
from rundir.settings import Settings
from rundir.trials import load_records
from search.driver import launch


def sample_gpu(stop: threading.Event, samples: list[tuple[float, float]]) -> None:
    """(utilization %, memory used MiB) of GPU 0 once a second, until `stop`."""
    query = ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits", "-i", "0"]
    while not stop.is_set():
        try:
            out = subprocess.run(query, capture_output=True, text=True, timeout=5, check=True).stdout
            util, mem = (float(x) for x in out.strip().split(","))
            samples.append((util, mem))
        except (OSError, subprocess.SubprocessError, ValueError):
            pass
        stop.wait(1.0)


def encoder_yaml(args: argparse.Namespace) -> str:
    """The `fixed:` lines of a random-init encoder of `--hidden/--layers/--heads` (FFN 4 x hidden)."""
    return f"""fixed:
  encoder: tiny
  hidden_size: {args.hidden}
  num_layers: {args.layers}
  num_heads: {args.heads}
  intermediate_size: {4 * args.hidden}
  pooler: cls
"""


def space_yaml(args: argparse.Namespace) -> str:
    return encoder_yaml(args) + f"""  batch_size: {args.batch_size}
params:
  lr: {{float: [2.0e-5, 1.0e-4], log: true}}
  msd_count: {{int: [1, 4]}}
  dropout: {{float: [0.1, 0.4]}}
"""


@contextlib.contextmanager
def gpu_sampling(samples: list[tuple[float, float]]) -> Iterator[None]:
    """Append GPU 0's (utilization %, memory MiB) to `samples` once a second while the block runs
    (when nvidia-smi is there)."""
    stop = threading.Event()
    if shutil.which("nvidia-smi"):
        threading.Thread(target=sample_gpu, args=(stop, samples), daemon=True).start()
    try:
        yield
    finally:
        stop.set()


def launch_sampling_gpu(settings: Settings) -> tuple[pd.DataFrame, dict, float, list[tuple[float, float]]]:
    """Run `launch(settings)` while sampling GPU 0 (`gpu_sampling`); return the leaderboard, the
    trial records, the wall seconds and the (utilization %, memory MiB) samples."""
    samples: list[tuple[float, float]] = []
    started = time.perf_counter()
    with gpu_sampling(samples):
        files, frame = launch(settings, out=print)
    return frame, load_records(files), time.perf_counter() - started, samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--max-epochs", type=int, default=2)
    parser.add_argument("--gpus-per-trial", type=float, default=0.5, help="0.5 packs two trials per GPU")
    parser.add_argument("--cpus-per-trial", type=float, default=2)
    parser.add_argument("--rows", type=int, default=14009, help="synthetic training rows")
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--allow-cpu", action="store_true", help="run without a GPU (smoke test of this script)")
    args = parser.parse_args()
    if not torch.cuda.is_available() and not args.allow_cpu:
        sys.exit("no CUDA device visible: run this on a GPU machine (or pass --allow-cpu to smoke-test it)")
    gpus = args.gpus_per_trial if torch.cuda.is_available() else 0

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "space.yaml").write_text(space_yaml(args))
        settings = Settings(space=str(root / "space.yaml"), synthetic_rows=args.rows, num_samples=args.trials,
                            max_epochs=args.max_epochs, grace_period=args.max_epochs,
                            cpus_per_trial=args.cpus_per_trial, gpus_per_trial=gpus,
                            storage_path=str(root / "runs"), name="gpu-check", max_seq_len=128)
        frame, records, wall, samples = launch_sampling_gpu(settings)

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    print(f"\n{device}: {args.trials} trials of a {args.layers}-layer, hidden-{args.hidden} encoder, batch "
          f"{args.batch_size}, {args.gpus_per_trial if gpus else 0:g} GPU per trial; wall {wall:.0f} s\n")
    print("| trial | status | epochs | train samples/s (mean) | peak GPU memory GB | level-2 macro-F1 |")
    print("|---|---|---|---|---|---|")
    for row in frame.itertuples():
        history = records[row.trial_id].history
        speed = [h[M.TRAIN_SAMPLES_PER_S] for h in history if M.TRAIN_SAMPLES_PER_S in h]
        memory = [h[K.GPU_MEM_PEAK_GB] for h in history if K.GPU_MEM_PEAK_GB in h]
        print(f"| {row.optuna_number} | {row.status} | {row.epochs} | "
              f"{sum(speed) / len(speed) if speed else float('nan'):.0f} | "
              f"{max(memory) if memory else float('nan'):.2f} | {getattr(row, M.LEVEL2_MACRO_F1):.4f} |")
    if samples:
        utils = [u for u, _ in samples]
        print(f"\nGPU utilization: mean {sum(utils) / len(utils):.0f}%, peak {max(utils):.0f}% "
              f"({len(samples)} samples); memory used peak {max(m for _, m in samples) / 1024:.1f} GiB")
    else:
        print("\nGPU utilization: not sampled (no nvidia-smi)")


if __name__ == "__main__":
    main()
