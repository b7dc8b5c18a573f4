"""The flags of `python -m search pretrain`: every dest of the model, masking, optimisation and
budget groups is a `PretrainConfig` field (model/pretrain/config.py, whose defaults they show)."""

from __future__ import annotations

import argparse

from cli.flags import above, at_least, finite_float
from model.pretrain.config import PretrainConfig, defaults

_D = defaults()
DEFAULT_EPOCHS = 1.0  # the budget when none of --steps, --epochs, --time-budget is given


def add_pretrain_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of `pretrain`; every dest of the model and training groups is a `PretrainConfig` field."""
    io = p.add_argument_group("input and output")
    io.add_argument("--corpus", nargs="+", required=True, metavar="FILE",
                    help="unlabeled text: CSV files with a `text` column (train.csv and test.csv both serve) or "
                    "text files (any other suffix) with one document per line")
    io.add_argument("--out", required=True, metavar="DIR",
                    help="the checkpoint directory to write (config.json, model.safetensors, vocab.txt, "
                    "pretrain.json, checkpoints/); running again on it continues the run")
    io.add_argument("--resume", action="store_true",
                    help="continue from the last checkpoint in --out and fail if there is none (without it, an "
                    "--out with a checkpoint of the same run is continued too)")
    io.add_argument("--save-every", type=at_least(0), default=500, metavar="STEPS",
                    help="checkpoint every that many optimizer steps (0: only at the end)")
    io.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_model_arguments(p)
    _add_masking_arguments(p)
    _add_optimisation_arguments(p)
    _add_budget_arguments(p)
    _add_resource_arguments(p)


def _add_model_arguments(p: argparse.ArgumentParser) -> None:
    m = p.add_argument_group("model")
    m.add_argument("--arch", default=_D["arch"],
                   help="bert: transformers' BertForMaskedLM; nezha: model/nezha.py with an MLM head")
    m.add_argument("--hidden-size", type=int, default=_D["hidden_size"], help="hidden size")
    m.add_argument("--num-layers", type=int, default=_D["num_layers"], help="transformer layers")
    m.add_argument("--num-heads", type=int, default=_D["num_heads"], help="attention heads (divide --hidden-size)")
    m.add_argument("--intermediate-size", type=int, default=_D["intermediate_size"], help="feed-forward size")
    m.add_argument("--max-seq-len", type=int, default=_D["max_seq_len"],
                   help="tokens per document incl. [CLS]/[SEP] (longer ones keep their head); also the longest "
                   "sequence the checkpoint takes when fine-tuned")
    m.add_argument("--max-relative-position", type=int, default=_D["max_relative_position"],
                   help="nezha: relative distances are clipped to this")
    m.add_argument("--min-count", type=int, default=_D["min_count"],
                   help="a token enters the vocabulary if it occurs this often in the corpus (rarer: [UNK])")


def _add_masking_arguments(p: argparse.ArgumentParser) -> None:
    mk = p.add_argument_group("masking")
    mk.add_argument("--mask-prob", type=finite_float, default=_D["mask_prob"],
                    help="fraction of a document's tokens masked")
    mk.add_argument("--ngram-max", type=int, default=_D["ngram_max"],
                    help="longest masked span (n-gram masking: n tokens with probability ~ 1/n; 1: single tokens); "
                    "each span is [MASK] 80%%, random tokens 10%%, kept 10%%")


def _add_optimisation_arguments(p: argparse.ArgumentParser) -> None:
    o = p.add_argument_group("optimisation")
    o.add_argument("--lr", type=finite_float, default=_D["lr"], help="peak learning rate of AdamW")
    o.add_argument("--warmup-ratio", type=finite_float, default=_D["warmup_ratio"],
                   help="linear warmup over this fraction of the steps (of one epoch under --time-budget)")
    o.add_argument("--warmup-steps", type=int, default=None, help="warmup steps (overrides --warmup-ratio)")
    o.add_argument("--weight-decay", type=finite_float, default=_D["weight_decay"],
                   help="AdamW weight decay (not on biases and LayerNorm weights)")
    o.add_argument("--max-grad-norm", type=finite_float, default=_D["max_grad_norm"], help="gradient clipping (0: off)")
    o.add_argument("--batch-size", type=int, default=_D["batch_size"],
                   help="documents per micro-batch, over all workers together")
    o.add_argument("--grad-accum", type=int, default=_D["grad_accum"], help="micro-batches per optimizer step")
    o.add_argument("--seed", type=at_least(0), default=_D["seed"],
                   help="seed of the weights, the data order and the masks")
    o.add_argument("--log-every", type=int, default=_D["log_every"],
                   help="a loss-curve point (mean MLM loss and masked-token accuracy) every that many steps")


def _add_budget_arguments(p: argparse.ArgumentParser) -> None:
    b = p.add_argument_group("budget (one of them; default: --epochs 1)")
    budget = b.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=int, default=None, help="optimizer steps (lr decays linearly to 0 at the end)")
    budget.add_argument("--epochs", type=finite_float, default=None,
                        help="passes over the corpus (lr decays linearly to 0 at the end)")
    budget.add_argument("--time-budget", type=finite_float, default=None, metavar="MINUTES",
                        help="train this many minutes (lr constant after warmup); a continued run counts its "
                        "earlier training time")


def _add_resource_arguments(p: argparse.ArgumentParser) -> None:
    r = p.add_argument_group("resources")
    r.add_argument("--device", default=None,
                   help="cpu, cuda, cuda:1 ... (default: cuda if present; bf16 autocast on CUDA); with Ray, each "
                   "worker uses the device Ray gives it")
    r.add_argument("--threads", type=at_least(1), default=None,
                   help="torch CPU threads (per worker with Ray; default: the CPUs this process may use, less one)")
    r.add_argument("--address", default=None,
                   help="run data-parallel with Ray Train on this cluster: auto, HOST:PORT or ray://HOST:PORT")
    r.add_argument("--num-workers", type=at_least(1), default=None,
                   help="Ray Train workers (DDP: gloo on CPU, NCCL on GPU); given alone, a local Ray")
    r.add_argument("--gpus-per-worker", type=at_least(0, cast=float), default=0, help="GPUs per Ray Train worker")
    r.add_argument("--cpus-per-worker", type=above(0), default=1, help="CPUs per Ray Train worker")
    r.add_argument("--storage-path", default=None,
                   help="with Ray: where checkpoints go, shared by every node (NFS path or cloud URI; default: "
                   "OUT/ray); a run continues from there")
    r.add_argument("--max-failures", type=at_least(0), default=2,
                   help="with Ray: restarts of the worker group after a failure, from the last checkpoint")


def config_from_args(args: argparse.Namespace) -> PretrainConfig:
    values = {name: getattr(args, name) for name in PretrainConfig.__dataclass_fields__}
    if values["steps"] is None and values["epochs"] is None and values["time_budget"] is None:
        values["epochs"] = DEFAULT_EPOCHS
    return PretrainConfig.from_dict(values)


