"""trials.json: one record per trial, what the leaderboard and the searcher's reconciliation know.

The Ray callbacks (search/callbacks.py) keep it current while a search runs; `export`, `status`,
`report` and `confirm` read it. A record that reached a final status never changes again.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from model import metrics as M
from rundir import keys as K
from rundir.io import atomic_write_json, damaged, read_json
from rundir.paths import RunFiles

RUNNING, COMPLETED, PRUNED, ERROR = "running", "completed", "pruned", "error"


STATUSES = (COMPLETED, PRUNED, RUNNING, ERROR)  # also the leaderboard's order of sections


# Per-evaluation values a record keeps (the rest of a Tune result is bookkeeping).
HISTORY_KEYS = (M.EPOCH, M.LEVEL2_MACRO_F1, M.LEVEL1_MACRO_F1, M.ACCURACY, M.DEV_LOSS, M.WORST5_F1,
                M.TRAIN_LOSS, K.TIMESTAMP, M.TRAIN_SAMPLES_PER_S, K.GPU_MEM_PEAK_GB, K.GPU_MEM_LEFT_GB)


def final_status(last_result: dict[str, Any] | None) -> str:
    """How a trial that ended without an error ended, from its last result: COMPLETED if it
    finished on its own (full budget, or its own patience: the result has `M.FINISHED`), else
    PRUNED (the scheduler stopped it). The one place this rule lives: the searcher's Optuna states,
    the leaderboard and the progress lines all derive from it."""
    return COMPLETED if (last_result or {}).get(M.FINISHED) else PRUNED


@dataclass
class TrialRecord:
    trial_id: str
    optuna_number: int | None = None
    warm_start: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    status: str = RUNNING
    history: list[dict[str, float]] = field(default_factory=list)  # one entry per evaluation, in order
    error: str | None = None
    node: str | None = None  # IP of the node it ran on
    node_id: str | None = None  # Ray's id of that node (unique even for several nodes on one host)
    device: str | None = None
    time_s: float = 0.0
    checkpoint: str | None = None  # the best epoch's checkpoint directory
    best_per_class_f1: list[float] | None = None  # level-2 F1 per label at the best epoch
    started_at: float | None = None  # unix time the trial (last) started running
    ended_at: float | None = None  # unix time it ended

    def add_evaluation(self, result: dict[str, Any]) -> None:
        """Keep one entry per evaluation: a re-reported evaluation (a retried trial) replaces the old one
        and any after it."""
        entry = {k: result[k] for k in HISTORY_KEYS if k in result}
        self.history = [h for h in self.history if h[M.EPOCH] < entry[M.EPOCH]] + [entry]
        if result.get(M.BEST_EPOCH) == entry[M.EPOCH] and M.PER_CLASS_F1 in result:
            self.best_per_class_f1 = list(result[M.PER_CLASS_F1])

    @property
    def best(self) -> dict[str, float] | None:
        """The evaluation with the best level-2 macro-F1 (the earliest on ties)."""
        if not self.history:
            return None
        return max(self.history, key=lambda h: (h[M.LEVEL2_MACRO_F1], -h[M.EPOCH]))

    @property
    def epochs(self) -> int:
        return int(self.history[-1][M.EPOCH]) if self.history else 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrialRecord:
        return cls(**values)


def save_records(files: RunFiles, records: dict[str, TrialRecord]) -> None:
    atomic_write_json(files.trials_json, [r.to_dict() for r in records.values()])


def load_records(files: RunFiles) -> dict[str, TrialRecord]:
    """The run's trial records: none before the first trial started; a trials.json that is missing
    although the run has trials (leaderboard.csv, or a trial's result in RUN_DIR/ray), or that holds
    records this version cannot read, is `damaged`."""
    if not files.trials_json.exists():
        if files.leaderboard_csv.exists() or any(files.ray_dir.glob("trial_*/result.json")):
            raise damaged(files.trials_json, "missing, although the run has trials")
        return {}
    records = {}
    for i, values in enumerate(read_json(files.trials_json, list)):
        record = _record(values, files.trials_json, i)
        records[record.trial_id] = record
    return records


def _record(values: object, path: Path, i: int) -> TrialRecord:
    """Record `i` of trials.json, checked for what the leaderboard reads."""
    try:
        record = TrialRecord.from_dict(values)  # type: ignore[arg-type]
        ok = (isinstance(record.trial_id, str) and record.status in STATUSES and isinstance(record.params, dict)
              and isinstance(record.history, list)
              and all(isinstance(h, dict) and M.EPOCH in h and M.LEVEL2_MACRO_F1 in h for h in record.history))
    except TypeError as err:
        raise damaged(path, f"record {i} is not a trial record: {err}") from None
    if not ok:
        raise damaged(path, f"record {i} is not a trial record (trial_id, status, params or history)")
    return record
