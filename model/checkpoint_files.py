"""Reading an encoder checkpoint directory's files without building the model: is it usable?

A `bert`, `albert` or `nezha` checkpoint is a config (config.json or bert_config.json), weights
(model.safetensors or pytorch_model.bin) and vocab.txt. `inspect_checkpoint` reads the config, the
weights' names and shapes (the safetensors header only: no tensor is loaded) and the vocabulary,
and checks that they fit together; a file that is cut short, not its format or disagrees with the
others is `DamagedFile`. Preflight runs it before Ray starts (rundir/preflight.py), so a damaged
checkpoint is refused in a second rather than failing every trial.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from model.errors import DamagedFile, read_json_file
from model.nezha import CONFIG_FILES, WEIGHT_FILES

RECOVERY = ("restore the directory from a backup, or write it again: for a `python -m search pretrain` checkpoint, "
            "rerun its command (`command` in its pretrain.json) with a new --out")


@dataclass(frozen=True)
class CheckpointFacts:
    vocab_size: int  # rows of the word embeddings (the config's vocab_size)
    vocab_tokens: int  # lines of vocab.txt
    max_positions: int  # the longest sequence it takes (max_position_embeddings)


def _damaged(path: Path, problem: str) -> DamagedFile:
    return DamagedFile(path, problem, RECOVERY)


def read_config(directory: Path) -> tuple[Path, dict]:
    """(path, values) of the checkpoint's config, checked for what the encoders read."""
    path = next(directory / n for n in CONFIG_FILES if (directory / n).exists())
    values = read_json_file(path, expect=dict, damaged=_damaged)
    for key in ("vocab_size", "hidden_size", "num_attention_heads", "max_position_embeddings"):
        value = values.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise _damaged(path, f"`{key}` is {value!r}, not a count >= 1")
    if values["hidden_size"] % values["num_attention_heads"]:
        raise _damaged(path, f"`hidden_size` {values['hidden_size']} is not a multiple of `num_attention_heads` "
                       f"{values['num_attention_heads']}")
    return path, values


def read_vocab_lines(path: Path) -> list[str]:
    try:
        tokens = path.read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise _damaged(path, err.strerror or str(err)) from None
    except UnicodeDecodeError as err:
        raise _damaged(path, f"not UTF-8 text: {err}") from None
    if len(tokens) < 2:
        raise _damaged(path, f"{len(tokens)} token(s): not a vocabulary")
    return tokens


def weight_shapes(directory: Path) -> tuple[Path, dict[str, tuple[int, ...]]]:
    """(path, {name: shape}) of the checkpoint's weights, read without loading a tensor where the
    format allows (safetensors); a cut-short or foreign file is `DamagedFile`."""
    path = next(directory / n for n in WEIGHT_FILES if (directory / n).exists())
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), "pt") as handle:  # checks the header against the file's length
                return path, {k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()}  # noqa: SIM118
        import torch

        weights = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except OSError as err:
        raise _damaged(path, err.strerror or str(err)) from None
    except Exception as err:  # noqa: BLE001 - safetensors and torch report a damaged file as many kinds of error
        raise _damaged(path, f"not readable weights ({type(err).__name__}: {str(err)[:200]})") from None
    if not isinstance(weights, dict) or not all(hasattr(v, "shape") for v in weights.values()):
        raise _damaged(path, "not readable weights (not a dict of tensors)")
    return path, {k: tuple(v.shape) for k, v in weights.items()}


def inspect_checkpoint(directory: str | Path) -> CheckpointFacts:
    """Check that the config, the weights and vocab.txt of a checkpoint directory (whose files are
    there: `CheckpointEncoder.check_checkpoint`) are readable and fit together."""
    directory = Path(directory)
    config_path, config = read_config(directory)
    weights_path, shapes = weight_shapes(directory)
    vocab_path = directory / "vocab.txt"
    tokens = read_vocab_lines(vocab_path)
    embeddings = [shape for name, shape in shapes.items() if name.endswith("word_embeddings.weight")]
    if not embeddings:
        raise _damaged(weights_path, "no word embeddings (`...word_embeddings.weight`): not an encoder's weights")
    rows = embeddings[0][0]
    if rows != config["vocab_size"]:
        raise _damaged(config_path, f"`vocab_size` is {config['vocab_size']}, but the word embeddings in "
                       f"{weights_path.name} have {rows} rows: the config is not this checkpoint's")
    if len(tokens) > rows:
        raise _damaged(vocab_path, f"{len(tokens)} tokens, but the word embeddings have {rows} rows: the "
                       "vocabulary is not this checkpoint's")
    positions = [shape for name, shape in shapes.items() if name.endswith("position_embeddings.weight")
                 and "token_type" not in name]
    if positions and positions[0][0] != config["max_position_embeddings"]:
        raise _damaged(config_path, f"`max_position_embeddings` is {config['max_position_embeddings']}, but the "
                       f"position embeddings in {weights_path.name} have {positions[0][0]} rows")
    return CheckpointFacts(vocab_size=rows, vocab_tokens=len(tokens), max_positions=config["max_position_embeddings"])
