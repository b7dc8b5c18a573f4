"""Trial records: what the leaderboard knows about each trial."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from model import metrics as M

RUNNING, COMPLETED, PRUNED, ERROR = "running", "completed", "pruned", "error"
STATUSES = (COMPLETED, PRUNED, RUNNING, ERROR)  # also the leaderboard's order of sections

# Per-evaluation values a record keeps (the rest of a Tune result is bookkeeping).
HISTORY_KEYS = (M.EPOCH, M.LEVEL2_MACRO_F1, M.LEVEL1_MACRO_F1, M.ACCURACY, M.DEV_LOSS, M.WORST5_F1,
                M.TRAIN_LOSS, M.TIMESTAMP, M.TRAIN_SAMPLES_PER_S, M.GPU_MEM_PEAK_GB, M.GPU_MEM_LEFT_GB)


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


# Runs launched before the sampler and scheduler were choices: TPE with Optuna's 10 startup trials.
LEGACY_METHOD = {"sampler": "tpe", "startup_trials": 10, "scheduler": "asha"}


def run_method(run: dict[str, Any]) -> dict[str, Any]:
    """The search method run.json records: sampler (`auto` resolved), startup trials, scheduler."""
    return run.get("method", LEGACY_METHOD)


def describe_method(method: dict[str, Any], settings: dict[str, Any]) -> str:
    """One line for the launch output, `status` and the report, e.g. `tpe (2 startup trials) + asha
    (grace 1, reduction 2)`."""
    sampler = method["sampler"]
    if sampler in ("tpe", "gp", "cmaes"):
        sampler += f" ({method['startup_trials']} startup trials)"
    scheduler = method["scheduler"]
    if scheduler in ("asha", "hyperband"):
        scheduler += f" (grace {settings['grace_period']}, reduction {settings['reduction_factor']:g})"
    elif scheduler == "median":
        scheduler += f" (grace {settings['grace_period']})"
    return f"{sampler} + {scheduler}"
