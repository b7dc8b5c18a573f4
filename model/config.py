"""`TrialConfig`: the one schema of a trial.

Every field carries its valid range (or its registry) in the dataclass metadata, so the same
rules check a config built by hand, a config sampled by Optuna and the bounds a search space
declares (see `check_value` and `spaces/space.py`). A space may only name these fields.
"""

from __future__ import annotations

import functools
import math
import typing
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from model.errors import ConfigError
from model.registry import Registry

# Sanity limits: generous upper bounds on sizes and counts that have no natural maximum. No trial on
# today's hardware comes near them; a value above one is a typo (an extra zero, `1e29`) that would
# otherwise pass every check and only fail when a trial allocates memory, after Ray has started.
# {field: (limit, why this limit)}. Raise one here if a larger value is intended.
LIMITS: dict[str, tuple[int, str]] = {
    "hidden_size": (16_384, "16x BERT-base's 768, above the largest public transformers"),
    "intermediate_size": (65_536, "4x the hidden_size limit, the usual feed-forward ratio"),
    "num_layers": (256, "above the deepest public transformers (~100 layers)"),
    "num_heads": (256, "above the most heads of any public transformer (128)"),
    "batch_size": (65_536, "the largest batches in the literature are ~64k sequences"),
    "max_epochs": (10_000, "a fine-tuning search runs a few to a few hundred epochs"),
    "swa_start": (10_000, "the max_epochs limit"),
    "patience": (10_000, "the max_epochs limit"),
    "eval_every": (10_000_000, "more optimizer steps than any trial takes"),
    "seed": (2**32 - 1, "numpy's seed must fit in 32 bits"),
    "embedding_dim": (4_096, "word vectors have 100-300 dimensions, BERT-large's embeddings 1024"),
    "cnn_filters": (16_384, "the hidden_size limit; TextCNN and DPCNN use 100-300 filters"),
    "rnn_hidden": (16_384, "the hidden_size limit"),
    "freeze_embeddings": (10_000, "the max_epochs limit"),
}
# Fields that TrialConfig's cross-field rules (`__post_init__`, an encoder's `check_config`) relate to
# each other. A search space checks every combination of their values it can draw
# (`spaces.space.check_combinations`), so a rule added there names its fields here.
CROSS_FIELDS = ("encoder", "checkpoint", "hidden_size", "num_heads", "rnn", "swa_start", "max_epochs", "cnn_filters",
                "cnn_kernels", "view")
# The most kernel widths `cnn_kernels` may list, and the widest kernel: Kim (2014) used 3 widths up
# to 5; more only multiplies the encoder's cost.
MAX_KERNELS, MAX_KERNEL_WIDTH = 8, 32


def kernel_widths(text: str) -> tuple[int, ...]:
    """`cnn_kernels` ("1,2,3,4") -> (1, 2, 3, 4), or a `ConfigError` saying the expected form."""
    parts = [p.strip() for p in text.split(",")]
    if not all(p.isdigit() for p in parts):
        raise ConfigError(f"`cnn_kernels` is {text!r}, but must be kernel widths separated by commas, e.g. '2,3,4'")
    widths = tuple(int(p) for p in parts)
    if not all(1 <= w <= MAX_KERNEL_WIDTH for w in widths) or len(set(widths)) != len(widths):
        raise ConfigError(f"`cnn_kernels` is {text!r}, but its widths must be distinct and in 1..{MAX_KERNEL_WIDTH}")
    if len(widths) > MAX_KERNELS:
        raise ConfigError(f"`cnn_kernels` is {text!r}: {len(widths)} widths, but at most {MAX_KERNELS} are allowed")
    return widths


def _param(
    default: Any,
    doc: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    choices: tuple | None = None,
    registry: str | None = None,
    syntax: Callable[[str], Any] | None = None,
) -> Any:
    """A field with its doc and valid values. `syntax`: for a str field whose value is structured
    text, a parser raising `ConfigError` on a malformed value (so spaces check their choices too)."""
    meta = dict(doc=doc, low=low, high=high, low_open=low_open, high_open=high_open,
                choices=choices, registry=registry, syntax=syntax)
    return field(default=default, metadata=meta)


@dataclass(frozen=True, kw_only=True)
class TrialConfig:
    # --- encoder (the `tiny` encoder is a random-init BERT of these dimensions) ---
    encoder: str = _param("tiny", "encoder name (model/encoders.py)", registry="encoder")
    hidden_size: int = _param(64, "encoder hidden size", low=8)
    num_layers: int = _param(2, "transformer layers", low=1)
    num_heads: int = _param(2, "attention heads; must divide hidden_size", low=1)
    intermediate_size: int = _param(128, "feed-forward size", low=8)
    encoder_dropout: float = _param(0.1, "dropout inside the encoder", low=0, high=1, high_open=True)
    checkpoint: str = _param("", "bert, albert, nezha: local checkpoint directory (config, weights, vocab.txt); "
                             "textcnn, dpcnn, bigru, bilstm: a word-vector directory (`python -m search embed`), "
                             "or empty for random init; its files are checked by preflight and when the encoder "
                             "is built, not here")
    rnn: str = _param("none", "bidirectional RNN layer after the encoder, or none (model/rnn.py)", registry="rnn")
    rnn_layers: int = _param(1, "stacked layers of each RNN that `rnn` names, and of the bigru and bilstm encoders",
                             low=1, high=4)

    # --- encoders over word vectors (model/wordvec_encoders.py) ---
    embedding_dim: int = _param(0, "textcnn, dpcnn, bigru, bilstm: word-embedding size; 0 = the checkpoint's "
                                "(128 at random init); with a checkpoint a nonzero value must equal its size", low=0)
    cnn_filters: int = _param(128, "textcnn: filters per kernel width; dpcnn: feature maps of every layer", low=1)
    cnn_kernels: str = _param("1,2,3,4", "textcnn: kernel widths run in parallel, comma-separated",
                              syntax=kernel_widths)
    dpcnn_blocks: int = _param(3, "dpcnn: downsampling blocks, each halving the sequence", low=1, high=12)
    rnn_hidden: int = _param(128, "bigru, bilstm encoders: units per direction (the output is twice as wide)",
                             low=1)
    view: str = _param("tokens", "textcnn, dpcnn, bigru, bilstm: what the embedding reads: the tokens, or each "
                       "token with the next (bigrams; their vocabulary is the checkpoint's, so a checkpoint of "
                       "`embed --view bigrams` is needed)", choices=("tokens", "bigrams"))

    # --- input: texts longer than max_seq_len (the data is encoded once; each trial cuts its own way) ---
    truncation: str = _param("head", "what a text longer than max_seq_len - 2 tokens keeps: its head, its tail, "
                             "or head_share of the tokens from its head and the rest from its tail",
                             choices=("head", "tail", "head_tail"))
    head_share: float = _param(0.25, "head_tail truncation: share of the kept tokens taken from the head "
                               "(0.25 of 126 keeps 32 + 94)", low=0, high=1, low_open=True, high_open=True)

    # --- pooling and head ---
    pooler: str = _param("cls", "pooler name, or several joined by '+' (concatenated), e.g. cls+mean",
                         registry="pooler")
    routing_capsules: int = _param(4, "dynamic_routing pooler: output capsules", low=1, high=64)
    routing_iters: int = _param(3, "dynamic_routing pooler: routing iterations", low=1, high=10)
    msd_count: int = _param(1, "multi-sample dropout: number of dropout samples", low=1, high=16)
    msd_reduce: str = _param("mean", "how the k sample logits combine", choices=("mean", "sum"))
    dropout: float = _param(0.1, "dropout before the classifier", low=0, high=1, high_open=True)

    # --- loss ---
    loss: str = _param("ce", "loss name (model/losses.py)", registry="loss")
    label_smoothing: float = _param(0.0, "label smoothing of ce", low=0, high=1, high_open=True)
    focal_gamma: float = _param(2.0, "focusing parameter of the focal loss", low=0, low_open=True)
    class_weights: str = _param("none", "per-class weights of ce and focal from training counts",
                                choices=("none", "inverse", "sqrt_inverse"))
    dice_alpha: float = _param(0.0, "dice loss: exponent of the (1 - p) self-adjusting factor (0 = plain)",
                               low=0)
    dice_smooth: float = _param(1e-4, "dice loss: smoothing term", low=0, low_open=True)
    contrastive: str = _param("none", "supervised contrastive loss on pooled features (model/contrastive.py)",
                              registry="contrastive")
    contrastive_weight: float = _param(0.1, "weight of the contrastive loss", low=0)
    contrastive_temperature: float = _param(0.5, "temperature of the contrastive loss", low=0, low_open=True)
    contrastive_target: str = _param("samples", "contrast samples, or samples and class embeddings",
                                     choices=("samples", "samples+classes"))
    aux_level1_weight: float = _param(0.0, "weight of an auxiliary level-1 head's loss (0 = no head)", low=0)
    flood_b: float = _param(0.0, "flooding level b: train on |loss - b| + b (0 = off)", low=0)

    # --- adversarial training (model/adversarial.py) ---
    adversarial: str = _param("none", "attack on the word embeddings", registry="adversarial")
    adv_epsilon: float = _param(1.0, "size (fgm) or radius (pgd) of the perturbation", low=0, low_open=True)
    pgd_alpha: float = _param(0.3, "pgd: size of each ascent step", low=0, low_open=True)
    pgd_steps: int = _param(3, "pgd: ascent steps", low=1, high=10)
    adv_rate: float = _param(1.0, "probability that a batch is attacked", low=0, low_open=True, high=1)

    # --- optimisation ---
    lr: float = _param(1e-3, "peak learning rate (AdamW) of the encoder", low=0, low_open=True, high=1)
    embedding_lr: float = _param(0.0, "learning rate of the embeddings (0 = lr)", low=0, high=1)
    head_lr: float = _param(0.0, "learning rate of the layers after the encoder (0 = lr)", low=0, high=1)
    freeze_embeddings: int = _param(0, "the word embeddings are not updated in the first this many epochs (0: "
                                    "trained from the start; >= max_epochs: frozen throughout)", low=0)
    weight_decay: float = _param(0.01, "AdamW weight decay (not on biases and LayerNorm)", low=0)
    warmup_ratio: float = _param(0.1, "fraction of steps with linear warmup", low=0, high=1,
                                 high_open=True)
    schedule: str = _param("cosine", "learning-rate decay after warmup",
                           choices=("cosine", "linear", "constant"))
    max_grad_norm: float = _param(1.0, "gradient clipping norm (0 = off)", low=0)
    batch_size: int = _param(32, "training batch size", low=1)
    grad_accum: int = _param(1, "batches whose gradients add up before each optimizer step", low=1, high=64)
    sampler: str = _param("random", "random: each row once per epoch; weighted: rows drawn with chance "
                          "1/sqrt(rows of their label)", choices=("random", "weighted"))
    swa_start: int = _param(0, "average the weights from this epoch on and evaluate the average (0 = off)",
                            low=0)
    eval_every: int = _param(0, "also evaluate every this many optimizer steps (0 = at epoch ends only)",
                             low=0)
    max_epochs: int = _param(3, "training epochs (the full budget of a trial)", low=1)
    patience: int = _param(0, "stop after this many evaluations without improvement (0 = off)", low=0)
    seed: int = _param(0, "seed of initialisation, shuffling and dropout", low=0)

    def __post_init__(self) -> None:
        """Pure validation, no I/O: a config naming a checkpoint rebuilds on any machine. Whether
        the checkpoint directory holds a model is checked by `model.encoders.check_checkpoint`
        (rundir/preflight.py before Ray starts, and the encoder when it is built)."""
        for f in fields(self):
            check_value(f.name, getattr(self, f.name))
        encoder = _registry("encoder")[self.encoder]
        if self.view not in getattr(encoder, "views", ("tokens",)):
            raise ConfigError(f"`view` is {self.view!r}, but encoder {self.encoder!r} reads tokens only; the "
                              "bigram view is for textcnn, dpcnn, bigru and bilstm")
        if hasattr(encoder, "check_config"):
            encoder.check_config(self)  # the encoder's own cross-field rules, e.g. `checkpoint` is set
        if self.swa_start > self.max_epochs:
            raise ConfigError(f"`swa_start` {self.swa_start} is after the last epoch ({self.max_epochs}); lower it "
                              "or set 0 to turn SWA off")
        if self.rnn != "none" and self.hidden_size % 2:
            raise ConfigError(f"`hidden_size` {self.hidden_size} is odd, but a bidirectional `rnn` needs it even")
        if self.hidden_size % self.num_heads:
            raise ConfigError(
                f"`hidden_size` {self.hidden_size} is not divisible by `num_heads` {self.num_heads}; "
                "pick a hidden_size that is a multiple of num_heads"
            )

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrialConfig:
        unknown = sorted(set(values) - set(field_names()))
        if unknown:
            raise ConfigError(
                f"unknown TrialConfig field(s) {', '.join(map(repr, unknown))}; "
                f"valid fields are: {', '.join(field_names())}"
            )
        return cls(**{k: coerce_value(k, v) for k, v in values.items()})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def poolers(self) -> tuple[str, ...]:
        return tuple(self.pooler.split("+"))

    @property
    def kernel_widths(self) -> tuple[int, ...]:
        """`cnn_kernels` as numbers: "2,3,4" -> (2, 3, 4)."""
        return kernel_widths(self.cnn_kernels)


def field_names() -> list[str]:
    return [f.name for f in fields(TrialConfig)]


def field_type(name: str) -> type:
    return _type_hints()[name]


@functools.cache
def _type_hints() -> dict[str, type]:
    return typing.get_type_hints(TrialConfig)


def field_meta(name: str) -> dict[str, Any]:
    for f in fields(TrialConfig):
        if f.name == name:
            return dict(f.metadata)
    raise ConfigError(f"unknown TrialConfig field {name!r}; valid fields are: {', '.join(field_names())}")


def _registry(kind: str) -> Registry:
    # Imported on first use so that importing the schema (spaces/, the CLI) does not load torch and
    # transformers. Not to break a cycle: the components import this module only under
    # TYPE_CHECKING, and tests/model/test_imports.py counts this function-level import too.
    from model.components import registry

    return registry(kind)


def coerce_value(name: str, value: Any) -> Any:
    """Convert harmless representation differences (2.0 for an int field, 1 for a float one)."""
    kind = field_type(name)
    if kind is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def check_value(name: str, value: Any) -> None:
    """Raise `ConfigError` unless `value` is valid for field `name` (type, range, choices, registry)."""
    meta = field_meta(name)
    kind = field_type(name)
    ok_type = (
        isinstance(value, str) if kind is str
        else isinstance(value, int) and not isinstance(value, bool) if kind is int
        else isinstance(value, (int, float)) and not isinstance(value, bool)
    )
    if not ok_type:
        raise ConfigError(f"`{name}` is {value!r} ({type(value).__name__}), but must be a {kind.__name__}")
    if kind is float and not math.isfinite(value):
        raise ConfigError(f"`{name}` is {value!r}, but must be a finite number")
    low, high = meta["low"], meta["high"]
    if low is not None and (value < low or (meta["low_open"] and value == low)):
        raise ConfigError(f"`{name}` is {value!r}, but must be {'>' if meta['low_open'] else '>='} {low}")
    if high is not None and (value > high or (meta["high_open"] and value == high)):
        raise ConfigError(f"`{name}` is {value!r}, but must be {'<' if meta['high_open'] else '<='} {high}")
    if name in LIMITS and value > LIMITS[name][0]:
        limit, why = LIMITS[name]
        raise ConfigError(f"`{name}` is {value!r}, above its sanity limit {limit} ({why}); if the value is "
                          f"intended, raise LIMITS[{name!r}] in model/config.py")
    if meta["syntax"] is not None:
        meta["syntax"](value)
    if meta["choices"] is not None and value not in meta["choices"]:
        raise ConfigError(f"`{name}` is {value!r}, but must be one of: {', '.join(meta['choices'])}")
    if meta["registry"] is not None:
        registry = _registry(meta["registry"])
        for part in value.split("+") if meta["registry"] == "pooler" else [value]:
            if part not in registry:
                raise ConfigError(
                    f"`{name}` is {value!r}, but {part!r} is not a known {registry.kind}; "
                    f"valid {registry.kind} names are: {', '.join(sorted(registry))}"
                )
