"""RUN_DIR/pipeline.json: what `python -m search pipeline` plans and how far it got.

One record per stage, in order (vectors, search, confirm, ensemble, predict): its share of the
budget (planned seconds), the seconds it ran (kept current while it runs, so a killed pipeline
knows what it spent), and its status. `resume RUN_DIR` continues at the first stage not done;
a done stage never runs again.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rundir.io import atomic_write_json, damaged, read_json

STAGES = ("vectors", "search", "confirm", "ensemble", "predict")
PENDING, RUNNING, DONE, SKIPPED = "pending", "running", "done", "skipped"
STAGE_STATUSES = (PENDING, RUNNING, DONE, SKIPPED)

# The budget rule (stages/pipeline.py applies it; here, light, for the command line's defaults).
SEARCH_SHARE = 0.4  # of the budget left after the vectors stage and the end reserve
END_RESERVE_SHARE, END_RESERVE_MIN_S = 0.05, 60.0  # for ensemble and predict
CONFIRM_FILL = 0.85  # the share of confirm's slot-seconds its planned jobs may take (the rest: slack)
MIN_BUDGET_S = 300.0  # below this no search fits beside the other stages
# The space a pipeline searches without --space: the word-vector CNN/GRU family, the one that beat the
# linear member on the competition's data on a CPU budget (docs/results.md; the demo space's tiny
# random-init encoder lost to it by 0.05). The pipeline trains the vectors itself.
PIPELINE_SPACE = "cpu"
MAX_TOP = 10  # confirm --top the pipeline never exceeds (more members add little to an ensemble)
# `pipeline --bigrams`: a bigram-view confirm job (`confirm --bigrams`) takes about this many times
# its token twin's: its embedding has 17x the rows on the competition data. Measured inside a
# pipeline's confirm, two jobs at a time on 2 CPUs: 133-180 s against 69-75 s (2.0-2.4x,
# docs/results.md). Confirm sizes the twins with it.
BIGRAM_COST = 2.3


@dataclass
class StageRecord:
    name: str
    status: str = PENDING
    planned_s: float | None = None  # its share of the budget, set when the stage starts
    spent_s: float = 0.0  # wall seconds it ran, over every session
    note: str | None = None  # what it did, in a line (e.g. "top 6 x 5 folds")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class PipelineRecord:
    """pipeline.json."""

    budget_s: float
    test: str  # the test file predicted at the end
    out: str  # the submission file written at the end
    folds: int  # confirm's folds
    max_top: int  # confirm's largest --top
    settings: dict[str, Any] = field(default_factory=dict)  # the search's `Settings` (rundir/settings.py)
    stages: list[StageRecord] = field(default_factory=lambda: [StageRecord(name) for name in STAGES])
    vectors: str | None = None  # the word-vector checkpoint the vectors stage wrote
    bigrams: bool = False  # --bigrams: pair vectors too, and confirm's first configs again reading them
    pairs: str | None = None  # the token-pair checkpoint the vectors stage wrote (with --bigrams)
    created: str | None = None
    command: str | None = None

    def stage(self, name: str) -> StageRecord:
        return next(s for s in self.stages if s.name == name)

    @property
    def spent_s(self) -> float:
        return sum(s.spent_s for s in self.stages)

    @property
    def finished(self) -> bool:
        return all(s.status in (DONE, SKIPPED) for s in self.stages)

    def current(self) -> StageRecord | None:
        """The first stage not done (None when the pipeline finished)."""
        return next((s for s in self.stages if s.status not in (DONE, SKIPPED)), None)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["stages"] = [s.to_dict() for s in self.stages]
        return out

    @classmethod
    def from_dict(cls, value: Any, path: Path) -> PipelineRecord:
        if not isinstance(value, dict):
            raise damaged(path, f"a JSON {type(value).__name__} where an object belongs")
        missing = [k for k in ("budget_s", "test", "out", "folds", "max_top", "stages") if k not in value]
        if missing:
            raise damaged(path, f"no {', '.join(f'`{k}`' for k in missing)}")
        budget = value["budget_s"]
        if isinstance(budget, bool) or not isinstance(budget, int | float) or not math.isfinite(budget) or budget <= 0:
            raise damaged(path, f"`budget_s` is {budget!r}, not a positive number of seconds")
        stages = value["stages"]
        if not isinstance(stages, list) or [s.get("name") if isinstance(s, dict) else None for s in stages] != list(
                STAGES):
            raise damaged(path, f"`stages` is not the list of the stages {', '.join(STAGES)}")
        records = []
        for stage in stages:
            if stage.get("status") not in STAGE_STATUSES or not isinstance(stage.get("spent_s", 0), int | float):
                raise damaged(path, f"stage {stage['name']!r} has status {stage.get('status')!r} or spent_s "
                              f"{stage.get('spent_s')!r}")
            records.append(StageRecord(name=stage["name"], status=stage["status"], planned_s=stage.get("planned_s"),
                                       spent_s=float(stage.get("spent_s", 0.0)), note=stage.get("note")))
        return cls(budget_s=float(budget), test=str(value["test"]), out=str(value["out"]), folds=int(value["folds"]),
                   max_top=int(value["max_top"]), settings=value.get("settings") or {}, stages=records,
                   vectors=value.get("vectors"), bigrams=bool(value.get("bigrams", False)), pairs=value.get("pairs"),
                   created=value.get("created"), command=value.get("command"))

    def save(self, path: Path) -> None:
        atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: Path) -> PipelineRecord:
        return cls.from_dict(read_json(path), path)
