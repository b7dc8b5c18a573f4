"""NEZHA (Wei et al. 2019): BERT with functional relative position encoding, written here because
transformers no longer ships it. Module and parameter names follow BERT's, so the public NEZHA
PyTorch checkpoints (huawei-noah/Pretrained-Language-Model, keys under `bert.`; the transformers
port, keys under `nezha.`) load as they are (see `load_nezha`).

Differences from BERT: no absolute position embeddings; every attention layer adds fixed
sinusoidal embeddings of the clipped relative distance j - i to the keys (scores) and to the
values (context), shared by all heads and layers.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

CONFIG_FILES = ("config.json", "bert_config.json")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


@dataclass(frozen=True)
class NezhaConfig:
    vocab_size: int
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512  # the longest sequence the model takes
    max_relative_position: int = 64
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12

    @classmethod
    def from_dict(cls, values: dict) -> NezhaConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})


def relative_position_table(length: int, depth: int, max_relative_position: int) -> torch.Tensor:
    """(length, length, depth) sinusoidal embedding of clip(j - i) for query i and key j, exactly as
    the reference implementation computes it (the sinusoid of the shifted index clip + max)."""
    positions = np.arange(2 * max_relative_position + 1)[:, None]
    rates = np.power(10000, 2 * np.arange(depth // 2) / depth)[None, :]
    table = np.zeros((2 * max_relative_position + 1, depth))
    table[:, 0::2], table[:, 1::2] = np.sin(positions / rates), np.cos(positions / rates)
    distance = np.arange(length)[None, :] - np.arange(length)[:, None]
    index = np.clip(distance, -max_relative_position, max_relative_position) + max_relative_position
    return torch.tensor(table[index], dtype=torch.float32)


class NezhaEmbeddings(nn.Module):
    def __init__(self, config: NezhaConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=0)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        embedded = self.word_embeddings(input_ids) + self.token_type_embeddings(torch.zeros_like(input_ids))
        return self.dropout(self.LayerNorm(embedded))  # (B, T, H)


class NezhaSelfAttention(nn.Module):
    def __init__(self, config: NezhaConfig):
        super().__init__()
        self.heads = config.num_attention_heads
        self.head_size = config.hidden_size // config.num_attention_heads
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = nn.Dropout(config.attention_probs_dropout_prob)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.heads, self.head_size).transpose(1, 2)  # (B, heads, T, d)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor, relative: torch.Tensor) -> torch.Tensor:
        b, t, h = hidden.shape
        q, k, v = self._split(self.query(hidden)), self._split(self.key(hidden)), self._split(self.value(hidden))
        relative = relative.to(q.dtype)  # (T, T, d)
        scores = q @ k.transpose(-1, -2) + torch.einsum("bhid,ijd->bhij", q, relative)  # (B, heads, T, T)
        scores = scores / math.sqrt(self.head_size)
        scores = scores.masked_fill(~mask[:, None, None, :], torch.finfo(scores.dtype).min)
        probs = self.dropout(scores.softmax(dim=-1))
        context = probs @ v + torch.einsum("bhij,ijd->bhid", probs, relative)  # (B, heads, T, d)
        return context.transpose(1, 2).reshape(b, t, h)


class NezhaSelfOutput(nn.Module):
    def __init__(self, config: NezhaConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(hidden)) + residual)


class NezhaAttention(nn.Module):
    def __init__(self, config: NezhaConfig):
        super().__init__()
        self.self = NezhaSelfAttention(config)
        self.output = NezhaSelfOutput(config)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor, relative: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(hidden, mask, relative), hidden)


class NezhaIntermediate(nn.Module):
    def __init__(self, config: NezhaConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(hidden))


class NezhaOutput(NezhaSelfOutput):
    def __init__(self, config: NezhaConfig):
        super().__init__(config)
        self.dense = nn.Linear(config.intermediate_size, config.hidden_size)


class NezhaLayer(nn.Module):
    def __init__(self, config: NezhaConfig):
        super().__init__()
        self.attention = NezhaAttention(config)
        self.intermediate = NezhaIntermediate(config)
        self.output = NezhaOutput(config)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor, relative: torch.Tensor) -> torch.Tensor:
        attended = self.attention(hidden, mask, relative)
        return self.output(self.intermediate(attended), attended)


class NezhaEncoder(nn.Module):
    def __init__(self, config: NezhaConfig):
        super().__init__()
        self.layer = nn.ModuleList(NezhaLayer(config) for _ in range(config.num_hidden_layers))


class NezhaModel(nn.Module):
    """(B, T) ids, (B, T) bool mask -> (B, T, H) token states."""

    def __init__(self, config: NezhaConfig):
        super().__init__()
        self.config = config
        self.embeddings = NezhaEmbeddings(config)
        self.encoder = NezhaEncoder(config)
        head_size = config.hidden_size // config.num_attention_heads
        table = relative_position_table(config.max_position_embeddings, head_size, config.max_relative_position)
        self.register_buffer("relative_positions", table, persistent=False)  # fixed, not a weight
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:  # BERT's initialisation
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        t = input_ids.shape[1]
        if t > self.config.max_position_embeddings:
            raise ValueError(f"sequence of {t} tokens, but this NEZHA takes at most "
                             f"{self.config.max_position_embeddings}")
        hidden = self.embeddings(input_ids)
        relative = self.relative_positions[:t, :t]
        for layer in self.encoder.layer:
            hidden = layer(hidden, mask, relative)
        return hidden

    def save(self, directory: str | Path) -> None:
        """Write config.json and model.safetensors (keys under `bert.`, as the public checkpoints)."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "config.json").write_text(json.dumps(asdict(self.config), indent=1))
        save_file({f"bert.{k}": v.contiguous() for k, v in self.state_dict().items()},
                  str(directory / "model.safetensors"))


class NezhaPredictionHeadTransform(nn.Module):
    def __init__(self, config: NezhaConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(F.gelu(self.dense(hidden)))


class NezhaLMPredictionHead(nn.Module):
    """(..., H) -> (..., vocab) logits; the decoder shares its weight with the word embeddings."""

    def __init__(self, config: NezhaConfig, word_embeddings: nn.Embedding):
        super().__init__()
        self.transform = NezhaPredictionHeadTransform(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.decoder.weight = word_embeddings.weight  # tied, as in BERT and the NEZHA release
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.transform(hidden)) + self.bias


class NezhaOnlyMLMHead(nn.Module):
    def __init__(self, config: NezhaConfig, word_embeddings: nn.Embedding):
        super().__init__()
        self.predictions = NezhaLMPredictionHead(config, word_embeddings)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.predictions(hidden)


class NezhaForMaskedLM(nn.Module):
    """NEZHA with BERT's masked-language-model head, for pretraining (model/pretrain/).

    Parameter names are those of the public NEZHA pretraining checkpoints (`bert.*` for the encoder,
    `cls.predictions.*` for the head), so what `save` writes loads with `load_nezha`, which keeps
    the encoder and ignores the head. `(B, T) ids, (B, T) bool mask -> (B, T, vocab)` logits;
    `bert(ids, mask)` and `cls(states)` give the two halves (pretraining runs the head only on the
    masked positions).
    """

    def __init__(self, config: NezhaConfig):
        super().__init__()
        self.config = config
        self.bert = NezhaModel(config)
        self.cls = NezhaOnlyMLMHead(config, self.bert.embeddings.word_embeddings)
        self.cls.predictions.transform.apply(NezhaModel._init_weights)  # the decoder is the embeddings'

    def forward(self, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.cls(self.bert(input_ids, mask))

    def save(self, directory: str | Path) -> None:
        """Write config.json and model.safetensors: `bert.*` and `cls.predictions.*` keys; the tied
        decoder weight is stored once, as the word embeddings."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "config.json").write_text(json.dumps(asdict(self.config), indent=1))
        state = {k: v.contiguous() for k, v in self.state_dict().items() if k != "cls.predictions.decoder.weight"}
        save_file(state, str(directory / "model.safetensors"))


def _read_weights(directory: Path) -> dict[str, torch.Tensor]:
    for name in WEIGHT_FILES:
        path = directory / name
        if path.exists():
            if name.endswith(".safetensors"):
                from safetensors.torch import load_file

                return load_file(str(path))
            return torch.load(path, map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"{directory}: no weights ({' or '.join(WEIGHT_FILES)})")


def _rename(key: str) -> str:
    for prefix in ("bert.", "nezha."):
        if key.startswith(prefix):
            key = key[len(prefix):]
    # TF-converted checkpoints name LayerNorm parameters gamma/beta
    return key.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")


def load_nezha(directory: str | Path, **overrides) -> NezhaModel:
    """A NezhaModel from a checkpoint directory (config.json or bert_config.json, and the weights).
    Heads of the pre-training (cls.*, pooler) are ignored; a missing encoder weight is an error."""
    directory = Path(directory)
    config_path = next((directory / n for n in CONFIG_FILES if (directory / n).exists()), None)
    if config_path is None:
        raise FileNotFoundError(f"{directory}: no {' or '.join(CONFIG_FILES)}")
    config = NezhaConfig.from_dict({**json.loads(config_path.read_text()), **overrides})
    model = NezhaModel(config)
    weights = {_rename(k): v for k, v in _read_weights(directory).items()}
    expected = set(model.state_dict())
    missing = sorted(expected - set(weights))
    if missing:
        raise ValueError(f"{directory}: the checkpoint lacks {len(missing)} NEZHA weight(s), e.g. {missing[:3]}")
    model.load_state_dict({k: v for k, v in weights.items() if k in expected})
    return model
