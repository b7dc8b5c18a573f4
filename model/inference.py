"""Running a trained classifier: batched logits and probabilities, and fold-model directories.

`logits` is the one batched forward pass over encoded rows: the training loop's evaluation, the
out-of-fold predictions of `confirm` and `predict` on a test file all go through it, so they
agree row for row. A *model directory* is what a confirmed fold model leaves behind and what
`predict` loads: the weights of its best evaluation (`model.pt`, loadable with
`torch.load(weights_only=True)`), and `model.json` with its `TrialConfig`, its vocabulary (the
ids its inputs refer to), `max_seq_len` and the level-2 labels in index order.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from model.config import TrialConfig
from model.data import EncodedSplit, LabelSet, Truncation, Vocab
from model.errors import DamagedFile, DataError, UserError, read_json_file
from model.filemode import as_if_opened
from model.network import Classifier, build_for_weights

WEIGHTS_FILE = "model.pt"
META_FILE = "model.json"


def autocast(device: torch.device):
    """bf16 autocast on CUDA (no loss scaling needed); full precision on CPU."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def batches(split: EncodedSplit, groups: Iterable[np.ndarray], device: torch.device, *,
            truncation: Truncation = Truncation()) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Yield (ids (B, L), mask (B, L), labels (B,)) per group of row indices, L = its longest row,
    long texts cut as `truncation` says (the model's: `Classifier.truncation`).

    The arrays are already padded to max_seq_len and live in memory, so slicing them is all a
    DataLoader with a padding collate would do, without its worker overhead.
    """
    for idx in groups:
        width = int(split.lengths[idx].max())
        ids = torch.from_numpy(truncation.select(split, idx, width).astype(np.int64))
        mask = torch.arange(width)[None, :] < torch.from_numpy(split.lengths[idx])[:, None]
        labels = torch.from_numpy(split.labels[idx])
        yield (ids.to(device, non_blocking=True), mask.to(device, non_blocking=True),
               labels.to(device, non_blocking=True))


@torch.no_grad()
def logits(model: Classifier, split: EncodedSplit, *, batch_size: int, device: torch.device,
           progress: bool = False) -> torch.Tensor:
    """(N, num_labels) float32 level-2 logits on the CPU, in the row order of `split`.

    Rows run in order of length (similar lengths together: less padding). Leaves `model` in eval
    mode. `progress` shows a progress bar (on stderr).
    """
    from tqdm.auto import tqdm

    model.eval()
    order = np.argsort(split.lengths, kind="stable")
    groups = np.split(order, range(batch_size, len(order), batch_size))
    out = torch.empty(len(split), model.head.classifier.out_features)
    bar = tqdm(zip(groups, batches(split, groups, device, truncation=model.truncation), strict=True),
               total=len(groups), unit="batch", desc="predict", leave=False, disable=not progress)
    for idx, (ids, mask, _) in bar:
        with autocast(device):
            out[torch.from_numpy(idx)] = model(ids, mask).logits.float().cpu()
    return out


def probabilities(model: Classifier, split: EncodedSplit, *, batch_size: int, device: torch.device,
                  progress: bool = False) -> np.ndarray:
    """(N, num_labels) float32 softmax of `logits`."""
    return torch.softmax(logits(model, split, batch_size=batch_size, device=device, progress=progress),
                         dim=-1).numpy()


def encode_texts(texts: Sequence[str], vocab: Vocab, *, max_seq_len: int) -> EncodedSplit:
    """Unlabeled texts as a split (labels 0, unused); tokens unseen by `vocab` become [UNK]. With
    their tails, so a model cuts long texts as it was trained to (its `truncation`)."""
    ids, lengths = vocab.encode(texts, max_seq_len=max_seq_len)
    return EncodedSplit(ids=ids, lengths=lengths, labels=np.zeros(len(lengths), dtype=np.int64),
                        tails=vocab.encode_tails(texts, max_seq_len=max_seq_len))


# --- model directories ---


@dataclass(frozen=True)
class ModelInfo:
    """What a model directory says about its model, besides the weights."""

    config: TrialConfig
    vocab: Vocab
    max_seq_len: int
    labels: LabelSet
    # The pretraining checkpoint's config (model/encoders.py `encoder_architecture`): the model
    # builds without that checkpoint. None for other encoders and in directories written before it.
    encoder_architecture: dict | None = None

    def to_dict(self) -> dict:
        return {"config": self.config.to_dict(), "vocab": list(self.vocab.tokens), "max_seq_len": self.max_seq_len,
                "level2_labels": list(self.labels.level2), "encoder_architecture": self.encoder_architecture}

    @classmethod
    def from_dict(cls, values: dict) -> ModelInfo:
        return cls(config=TrialConfig.from_dict(values["config"]), vocab=Vocab(tokens=tuple(values["vocab"])),
                   max_seq_len=int(values["max_seq_len"]), labels=LabelSet.from_labels(values["level2_labels"]),
                   encoder_architecture=values.get("encoder_architecture"))


def save_model_dir(directory: str | Path, *, weights: dict[str, torch.Tensor], info: ModelInfo) -> Path:
    """Write a model directory (a temporary sibling renamed into place: a reader or a crash sees
    the whole directory or none)."""
    import shutil
    import tempfile

    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}."))
    try:
        torch.save({k: v.detach().cpu() for k, v in weights.items()}, tmp / WEIGHTS_FILE)
        (tmp / META_FILE).write_text(json.dumps(info.to_dict()), encoding="utf-8")
        as_if_opened(tmp)  # mkdtemp makes it 0700
        if directory.exists():
            shutil.rmtree(directory)
        tmp.rename(directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def read_model_info(path: Path) -> ModelInfo:
    """model.json; one that is not JSON, lacks a key or holds a config this code rejects is `DamagedFile`."""
    values = read_json_file(path, expect=dict)
    missing = [k for k in ("config", "vocab", "max_seq_len", "level2_labels") if k not in values]
    if missing:
        raise DamagedFile(path, f"no {', '.join(f'`{k}`' for k in missing)}")
    if not isinstance(values["vocab"], list) or not all(isinstance(t, str) for t in values["vocab"]) \
            or not isinstance(values["config"], dict) or isinstance(values["max_seq_len"], bool) \
            or not isinstance(values["max_seq_len"], int) or values["max_seq_len"] < 3:
        raise DamagedFile(path, "`config` must be an object, `vocab` a list of tokens, `max_seq_len` a count >= 3")
    if not isinstance(values.get("encoder_architecture"), dict | None):
        raise DamagedFile(path, "`encoder_architecture` must be an object (a checkpoint's config) or null")
    try:
        return ModelInfo.from_dict(values)
    except (UserError, DataError, TypeError, ValueError) as err:
        raise DamagedFile(path, f"not a model this code can build: {err}") from None


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """model.pt, loaded as data only (`weights_only`); a truncated or foreign file is `DamagedFile`."""
    try:
        weights = torch.load(path, weights_only=True, map_location="cpu")
    except OSError as err:
        raise DamagedFile(path, err.strerror or str(err)) from None
    except Exception as err:  # noqa: BLE001 - torch reports a damaged file as many kinds of error
        raise DamagedFile(path, f"not readable weights ({type(err).__name__}: {str(err)[:200]})") from None
    if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise DamagedFile(path, "not readable weights (not a dict of tensors)")
    return weights


def load_model_dir(directory: str | Path, *, device: torch.device | str = "cpu") -> tuple[Classifier, ModelInfo]:
    """The classifier of a model directory, in eval mode on `device`, and its `ModelInfo`; a missing,
    damaged or foreign file of it is `DamagedFile`."""
    directory = Path(directory)
    for name in (META_FILE, WEIGHTS_FILE):
        if not (directory / name).is_file():
            raise DamagedFile(directory / name, "missing" if not (directory / name).exists() else "not a file")
    info = read_model_info(directory / META_FILE)
    weights = read_weights(directory / WEIGHTS_FILE)
    try:
        model = build_for_weights(info.config, weights, vocab=info.vocab.tokens, max_seq_len=info.max_seq_len,
                                  num_labels=len(info.labels.level2), num_level1=len(info.labels.level1),
                                  architecture=info.encoder_architecture)
    except (TypeError, ValueError) as err:  # an architecture the model classes reject
        raise DamagedFile(directory / META_FILE, f"`encoder_architecture` does not build a model ({err})") from None
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:
        raise DamagedFile(directory / WEIGHTS_FILE, f"the weights do not fit the model {META_FILE} describes "
                          f"({str(err).splitlines()[0][:200]})") from None
    return model.to(device).eval(), info
