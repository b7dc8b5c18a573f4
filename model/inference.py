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
from model.filemode import as_if_opened
from model.network import Classifier, build_model

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

    def to_dict(self) -> dict:
        return {"config": self.config.to_dict(), "vocab": list(self.vocab.tokens), "max_seq_len": self.max_seq_len,
                "level2_labels": list(self.labels.level2)}

    @classmethod
    def from_dict(cls, values: dict) -> ModelInfo:
        return cls(config=TrialConfig.from_dict(values["config"]), vocab=Vocab(tokens=tuple(values["vocab"])),
                   max_seq_len=int(values["max_seq_len"]), labels=LabelSet.from_labels(values["level2_labels"]))


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


def load_model_dir(directory: str | Path, *, device: torch.device | str = "cpu") -> tuple[Classifier, ModelInfo]:
    """The classifier of a model directory, in eval mode on `device`, and its `ModelInfo`."""
    directory = Path(directory)
    missing = [name for name in (WEIGHTS_FILE, META_FILE) if not (directory / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{directory} is not a model directory (missing {', '.join(missing)}); it is "
                                "written by `python -m search confirm`")
    info = ModelInfo.from_dict(json.loads((directory / META_FILE).read_text(encoding="utf-8")))
    model = build_model(info.config, vocab=info.vocab.tokens, max_seq_len=info.max_seq_len,
                        num_labels=len(info.labels.level2), num_level1=len(info.labels.level1))
    model.load_state_dict(torch.load(directory / WEIGHTS_FILE, weights_only=True, map_location="cpu"))
    return model.to(device).eval(), info
