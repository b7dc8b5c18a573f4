"""GPU check of failure isolation: one of the trials sharing a GPU runs out of memory.

    python -m benchmarks.gpu_oom_check [--huge-batch 8192] [--hidden 768 --layers 12 --heads 12]

Runs `python -m search launch`'s code path on one GPU with four trials at `--gpus-per-trial 0.5`
(two at a time) of a random-init BERT-base-sized encoder on the synthetic data: warm start `huge`
trains at batch `--huge-batch` (far beyond the GPU's memory at this size), the others at batch 32
for up to 2 epochs under ASHA (grace 1), so some are stopped by ASHA. nvidia-smi samples the GPU's
memory once a second. It prints every trial's status, attempts and error, and checks:

1. every trial at the huge batch (the `huge` warm start, and any the sampler draws) ended in error,
   and its leaderboard error says CUDA out of memory (with the advice to lower batch_size);
2. every batch-32 trial, the one sharing the GPU with `huge` included, went on and ended
   (completed or stopped by ASHA);
3. the trials that errored, completed or were stopped by ASHA released their memory: every trial
   that started on a worker an earlier trial had used (workers are reused) found under 0.25 GiB
   still held there (`gpu_mem_left_gb` in its results; torch's reserved memory in that process),
   and there was at least one such trial. The GPU's memory in use before the search and after Ray
   shut down is printed too, but proves nothing: ending Ray ends the processes holding memory.

It also prints how many huge-batch trials were judged not to fit even alone, whose retries then
did not train again (search/trainable.py); that depends on what the neighbour held at the time.

Exit status 0 when all hold, 1 otherwise. `--allow-cpu` (with small `--hidden/--layers`) smoke-tests
the script where no GPU is present; the out-of-memory checks are then skipped.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.gpu_check import encoder_yaml, launch_sampling_gpu
from rundir import keys as K
from rundir.settings import Settings
from rundir.trials import COMPLETED, ERROR, PRUNED


def gpu_memory_used_mib() -> float | None:
    """Memory in use on GPU 0 now (nvidia-smi), or None where nvidia-smi is missing or cannot say."""
    if not shutil.which("nvidia-smi"):
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", "0"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
        return float(out.strip().splitlines()[0])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


LEFT_LIMIT_GB = 0.25  # what a reused worker may still hold as its next trial starts


def memory_left(records: dict) -> list[float]:
    """`gpu_mem_left_gb` of every trial that reported it (those that started on a reused worker)."""
    return [h[K.GPU_MEM_LEFT_GB] for r in records.values() for h in r.history[:1] if K.GPU_MEM_LEFT_GB in h]


def space_yaml(args: argparse.Namespace) -> str:
    return encoder_yaml(args) + f"""params:
  batch_size: {{choice: [32, {args.huge_batch}]}}
  lr: {{float: [2.0e-5, 1.0e-4], log: true}}
warm_start:
  huge: {{batch_size: {args.huge_batch}, lr: 5.0e-5}}
  fits: {{batch_size: 32, lr: 5.0e-5}}
"""


def check(name: str, ok: bool) -> bool:
    print(f"{'PASS' if ok else 'FAIL'}: {name}")
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--huge-batch", type=int, default=8192, help="batch size of the trial that must not fit")
    parser.add_argument("--rows", type=int, default=3000,
                        help="synthetic training rows (at 14009 the check ran over 3 minutes on an H100)")
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--cpus-per-trial", type=float, default=2)
    parser.add_argument("--allow-cpu", action="store_true", help="run without a GPU (smoke test of this script)")
    args = parser.parse_args()
    on_gpu = torch.cuda.is_available()
    if not on_gpu and not args.allow_cpu:
        sys.exit("no CUDA device visible: run this on a GPU machine (or pass --allow-cpu to smoke-test it)")

    before = gpu_memory_used_mib()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "space.yaml").write_text(space_yaml(args))
        settings = Settings(space=str(root / "space.yaml"), synthetic_rows=args.rows, num_samples=4, max_epochs=2,
                            grace_period=1, reduction_factor=2, cpus_per_trial=args.cpus_per_trial,
                            gpus_per_trial=0.5 if on_gpu else 0, storage_path=str(root / "runs"), name="oom",
                            max_seq_len=128, sampler="random")
        frame, records, wall, samples = launch_sampling_gpu(settings)
    time.sleep(5)  # let the driver's Ray shut its workers down
    after = gpu_memory_used_mib()

    print(f"\n{torch.cuda.get_device_name(0) if on_gpu else 'CPU'}: 4 trials, 2 sharing the GPU at a time; "
          f"wall {wall:.0f} s\n")
    print("| trial | warm start | batch | status | epochs | error |")
    print("|---|---|---|---|---|---|")
    for row in frame.itertuples():
        record = records[row.trial_id]
        error = (record.error or "").splitlines()[0][:160] if record.error else ""
        print(f"| {row.optuna_number} | {record.warm_start or ''} | {record.params.get('batch_size')} | "
              f"{row.status} | {row.epochs} | {error} |")
    left = memory_left(records)
    print(f"\nmemory a reused worker still held as its next trial started (GiB): {left or 'no trial reported it'}")
    if samples and before is not None and after is not None:
        print(f"GPU memory used: before {before / 1024:.1f} GiB, peak {max(m for _, m in samples) / 1024:.1f} GiB, "
              f"after Ray shut down {after / 1024:.1f} GiB")
    if not on_gpu:
        print("\nno GPU: the out-of-memory checks were skipped")
        return
    huge = [r for r in records.values() if r.params.get("batch_size") == args.huge_batch]
    others = [r for r in records.values() if r.params.get("batch_size") != args.huge_batch]
    # Not a check: it depends on what the neighbour held at that moment (search/trainable.py OTHERS_SHARE).
    print(f"huge-batch trials judged not to fit even alone, so their retries did not train again: "
          f"{sum('retries on this GPU are not run' in (r.error or '') for r in huge)} of {len(huge)}")
    results = [
        check("every huge-batch trial ended in error naming CUDA out of memory and the fix",
              bool(huge) and all(r.status == ERROR and "CUDA out of memory" in (r.error or "")
                                 and "batch_size" in (r.error or "") for r in huge)),
        check("every batch-32 trial ended (completed or stopped by ASHA), the one sharing the GPU too",
              bool(others) and all(r.status in (COMPLETED, PRUNED) for r in others)),
        check(f"every trial on a reused worker found under {LEFT_LIMIT_GB} GiB left by the trials before it "
              f"({len(left)} such trials)", bool(left) and all(x < LEFT_LIMIT_GB for x in left)),
    ]
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
