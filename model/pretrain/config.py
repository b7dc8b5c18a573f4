"""What a pretraining run is: its settings (`PretrainConfig`, the CLI flags one to one), its
fingerprint, and the names of its files. Light on purpose: the command line builds its flags from
these defaults without loading torch."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

from model.errors import ConfigError

CHECKPOINTS = "checkpoints"  # OUT/checkpoints/step-0000123/{state.pt, run.json}


STATE_FILE, RUN_FILE, RECORD_FILE = "state.pt", "run.json", "pretrain.json"


EXPORT_FILES = ("config.json", "model.safetensors", "vocab.txt", RECORD_FILE)


@dataclass(frozen=True, kw_only=True)
class PretrainConfig:
    """Everything that decides what a pretraining run computes (the CLI flags, one to one).

    Its fields (less `time_budget`'s value) and the corpus hashes are a run's fingerprint: an
    output directory holding a checkpoint of another fingerprint is refused."""

    arch: str = "bert"
    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 1024
    max_seq_len: int = 128
    max_relative_position: int = 64  # nezha only
    min_count: int = 1
    mask_prob: float = 0.15
    ngram_max: int = 3
    lr: float = 5e-4
    warmup_ratio: float = 0.06
    warmup_steps: int | None = None
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    batch_size: int = 64
    grad_accum: int = 1
    steps: int | None = None
    epochs: float | None = None
    time_budget: float | None = None  # minutes of training
    seed: int = 0
    log_every: int = 10

    def __post_init__(self) -> None:
        from model.pretrain.mlm import MLM_ARCHS  # here: the CLI reads this module's defaults without torch

        MLM_ARCHS.get_class(self.arch, field="arch")
        positive = ("hidden_size", "num_layers", "num_heads", "intermediate_size", "min_count", "ngram_max",
                    "batch_size", "grad_accum", "log_every", "max_relative_position")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} is {getattr(self, name)}, but must be >= 1")
        if self.hidden_size % self.num_heads:
            raise ConfigError(f"--hidden-size {self.hidden_size} is not a multiple of --num-heads {self.num_heads}")
        if self.max_seq_len < 3:
            raise ConfigError(f"--max-seq-len is {self.max_seq_len}, but must be >= 3 ([CLS], a token, [SEP])")
        if not 0 < self.mask_prob < 1:
            raise ConfigError(f"--mask-prob is {self.mask_prob}, but must be in (0, 1), e.g. 0.15")
        if not self.lr > 0 or self.weight_decay < 0 or self.max_grad_norm < 0:
            raise ConfigError("--lr must be > 0, --weight-decay and --max-grad-norm >= 0")
        if not 0 <= self.warmup_ratio < 1 or (self.warmup_steps is not None and self.warmup_steps < 0):
            raise ConfigError("--warmup-ratio must be in [0, 1) and --warmup-steps >= 0")
        budgets = [n for n in ("steps", "epochs", "time_budget") if getattr(self, n) is not None]
        if len(budgets) != 1:
            raise ConfigError(f"give exactly one budget: --steps, --epochs or --time-budget (got {budgets or 'none'})")
        if not getattr(self, budgets[0]) > 0:
            raise ConfigError(f"--{budgets[0].replace('_', '-')} is {getattr(self, budgets[0])}, but must be > 0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PretrainConfig:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ConfigError(f"unknown pretraining setting(s) {unknown}; valid: {sorted(names)}")
        return cls(**values)


def fingerprint(cfg: PretrainConfig, corpus: Sequence[dict]) -> dict[str, Any]:
    """What must match for a checkpoint to be continued: the settings and the corpus contents.
    The time budget's value may change (continue a timed run for longer); its presence may not."""
    settings = cfg.to_dict()
    if settings["time_budget"] is not None:
        settings["time_budget"] = "set"
    return {"settings": settings, "corpus": [{"sha256": f["sha256"], "rows": f["rows"]} for f in corpus]}


def check_fingerprint(stored: dict, current: dict, *, where: str) -> None:
    """Raise a ConfigError naming every difference between a checkpoint's fingerprint and this run's."""
    if stored == current:
        return
    diffs = [f"--{k.replace('_', '-')} {stored['settings'].get(k)!r} -> {v!r}"
             for k, v in current["settings"].items() if stored["settings"].get(k) != v]
    if stored["corpus"] != current["corpus"]:
        diffs.append(f"corpus {_short(stored['corpus'])} -> {_short(current['corpus'])}")
    raise ConfigError(f"{where} holds the checkpoint of a different pretraining run ({'; '.join(diffs)}). "
                      f"Pass another --out, repeat that run's flags (see its {RECORD_FILE}) to continue it, "
                      "or delete the directory to start over")


def _short(corpus: list[dict]) -> str:
    return "[" + ", ".join(f"{f['sha256'][:8]}({f['rows']} rows)" for f in corpus) + "]"


def record_fingerprint(record: dict) -> dict:
    """The fingerprint of the run a pretrain.json describes."""
    return fingerprint(PretrainConfig.from_dict(record["flags"]), record["corpus"])


def record_is_done(record: dict, cfg: PretrainConfig) -> bool:
    """Whether the run a pretrain.json describes has nothing left to train under `cfg` (a timed run
    given a longer --time-budget has)."""
    longer = cfg.time_budget is not None and record["wall_time_s"] < cfg.time_budget * 60
    return record["finished"] and not longer


def defaults() -> dict[str, Any]:
    """Each setting's default, without building a config (which checks the --arch registry)."""
    return {f.name: f.default for f in fields(PretrainConfig)}
