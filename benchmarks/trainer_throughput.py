"""Trainer throughput: `fit` against a bare PyTorch loop, and what each trick costs.

    python -m benchmarks.trainer_throughput [--rows 3000 --epochs 2 --threads 2 --repeats 2]

The bare loop trains the same model on the same batches with cross-entropy and AdamW and nothing
else (no scheduler, clipping, accumulation bookkeeping or adversary). Both measure training only,
samples per second over the epochs after the first (the first warms up allocators and caches);
each configuration runs `--repeats` times, alternating, and keeps its best figure, since this
machine is shared and noisy. Then each trick runs through `fit` alone on top of the baseline;
its cost is baseline samples/s divided by its samples/s.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

from model import metrics as M
from model.config import TrialConfig
from model.data import prepare_data
from model.inference import batches
from model.network import build_model
from model.synthetic import synthesize
from model.train import epoch_batches, fit, seed_everything

BASE = dict(hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128, pooler="cls", batch_size=32,
            lr=1e-3, warmup_ratio=0.0)
TRICKS = {
    "baseline (fit)": {},
    "msd_count 8": dict(msd_count=8, msd_reduce="sum"),
    "supcon (samples+classes)": dict(contrastive="supcon", contrastive_target="samples+classes"),
    "aux level-1 head + flooding": dict(aux_level1_weight=0.5, flood_b=0.2),
    "dice loss": dict(loss="dice"),
    "fgm": dict(adversarial="fgm"),
    "pgd, 3 steps": dict(adversarial="pgd", pgd_steps=3),
    "rnn lstm": dict(rnn="lstm"),
    "rnn lstm_gru": dict(rnn="lstm_gru"),
    "dynamic_routing pooler": dict(pooler="dynamic_routing"),
    "attention pooler": dict(pooler="attention"),
}


def bare_loop(cfg: TrialConfig, data, epochs: int) -> float:
    """Samples/s of plain forward/backward/step on fit's batches (epochs after the first)."""
    seed_everything(cfg.seed)
    model = build_model(cfg, vocab=data.vocab.tokens, max_seq_len=data.max_seq_len, num_labels=data.num_labels)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    device = torch.device("cpu")
    speeds = []
    for epoch in range(1, epochs + 1):
        groups = epoch_batches(cfg, data, epoch)
        started, seen = time.perf_counter(), 0
        model.train()
        for ids, mask, labels in batches(data.train, groups, device):
            loss = F.cross_entropy(model(ids, mask).logits, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            seen += len(labels)
        speeds.append(seen / (time.perf_counter() - started))
    return float(np.mean(speeds[1:] or speeds))


def fit_speed(cfg: TrialConfig, data) -> float:
    result = fit(cfg, data, device="cpu")
    speeds = [e.metrics[M.TRAIN_SAMPLES_PER_S] for e in result.history]
    return float(np.mean(speeds[1:] or speeds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--max-seq-len", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = prepare_data(synthesize(args.rows, seed=0)[0], max_seq_len=args.max_seq_len, source="synthetic")
    base = TrialConfig(**BASE, max_epochs=args.epochs)

    bare, fitted = [], []
    for _ in range(args.repeats):  # alternate, so drifts in machine load hit both alike
        bare.append(bare_loop(base, data, args.epochs))
        fitted.append(fit_speed(base, data))
    print(f"\n{len(data.train)} training rows, tiny encoder (hidden 64, 2 layers), batch 32, {args.threads} threads, "
          f"best of {args.repeats}\n")
    print(f"| loop | samples/s | ratio to bare |\n|---|---|---|\n| bare PyTorch | {max(bare):.0f} | 1.00 |\n"
          f"| fit | {max(fitted):.0f} | {max(fitted) / max(bare):.2f} |")

    baseline = max(fitted)
    print("\n| trick (alone, on the baseline) | samples/s | cost (x baseline time) |\n|---|---|---|")
    for name, values in TRICKS.items():
        cfg = TrialConfig(**{**BASE, **values}, max_epochs=args.epochs)
        speed = baseline if not values else max(fit_speed(cfg, data) for _ in range(args.repeats))
        print(f"| {name} | {speed:.0f} | {baseline / speed:.2f} |")


if __name__ == "__main__":
    main()
