"""RUN_DIR/confirm's files as typed records: each file is written and read through one class.

    confirm.json      `ConfirmSpec`: the stage's plan (K, F, S, split seed, budget, settings, labels,
                      rows) and its `Member`s
    jobs.json         {job id: `JobRecord`}: one per (member, fold, seed), kept current
    ensemble.json     `EnsembleRecord`: what `ensemble` chose, read by `predict` and the report
    heldout.npz       a fold model's probabilities on its fold's held-out rows (`write_heldout`)
    oof/<member>.npz  a member's out-of-fold probabilities over every training row (`write_oof`)

The confirm stage (stages/confirm/) is their one writer; `ensemble`, `predict`, `status` and the
report read them here, so the writer and every reader agree on one schema. `from_dict` checks what
readers rely on: a damaged or foreign file is refused as `damaged` (which file, what is wrong, and
the command that rebuilds it), never as a KeyError deep inside a command.

A *job* is one (member, fold, seed): id `<member>/fold<f>/seed<s>`. The linear reference member
is seed-independent: its jobs are `linear/fold<f>/seed0`.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from model import metrics as M
from model.errors import ConfigError
from rundir.io import atomic_write_bytes, atomic_write_json, damaged, read_json
from rundir.paths import ConfirmFiles
from rundir.trials import COMPLETED, ERROR, RUNNING

if TYPE_CHECKING:  # annotations only
    import pandas as pd

DEFAULT_TOP, DEFAULT_FOLDS, DEFAULT_SEEDS = 5, 5, 1  # `confirm --top --folds --seeds`
# `confirm --bigrams DIR`: the first --bigram-top configs are confirmed again in the bigram view,
# as members named after their config plus this suffix. Two, as measured on the real data
# (docs/results.md): a bigram-view job costs about three token-view ones on a CPU.
BIGRAM_SUFFIX, DEFAULT_BIGRAM_TOP = "-bigrams", 2
SEED_STRIDE = 1000  # ConfirmSpec.seed_stride: member i trains with seeds split_seed + 1000 (i + 1) + s
SEED_OFFSET = 1  # ConfirmSpec.seed_offset: the (i + 1) above
NETWORK, LINEAR = "network", "linear"  # a member's kind
LINEAR_MEMBER = "linear"  # the linear reference member's name
RACED_OUT = "raced_out"  # a job `confirm --race` skipped: its member was clearly worse than the best
JOB_STATUSES = (RUNNING, COMPLETED, ERROR, RACED_OUT)
# The scores a job keeps of its best evaluation (JobRecord fields of the same names).
JOB_SCORES = (M.LEVEL2_MACRO_F1, M.LEVEL1_MACRO_F1, M.ACCURACY)

# How a user makes the stage, finishes a stopped one, and chooses an ensemble.
CONFIRM_COMMAND = "python -m search confirm {run_dir}"
RESUME_COMMAND = "python -m search resume {run_dir}"
ENSEMBLE_COMMAND = "python -m search ensemble {run_dir}"

# `ensemble --method` -> (selection, combination rule) of results/ensemble.py; the default option.
ENSEMBLE_OPTIONS = {"greedy": ("greedy", "prob"), "prob": ("all", "prob"), "rank": ("all", "rank"),
                    "vote": ("all", "vote")}
# `ensemble --method best` (the default): the option whose nested score is highest (the first of
# ENSEMBLE_OPTIONS on a tie). On the real data no one option won every time (docs/results.md).
BEST_OPTION = "best"
DEFAULT_ENSEMBLE_METHOD = BEST_OPTION
DEFAULT_MAX_MEMBERS = 20  # greedy additions


def network_name(optuna_number: int) -> str:
    """A network member is named after the search trial it confirms."""
    return f"trial-{optuna_number}"


def bigram_twin(member: Member, vectors: str) -> Member:
    """`member`'s config again, reading the token pairs of the `embed --view bigrams` checkpoint
    `vectors` (model/wordvec_encoders.py `view`) at their size (`embedding_dim` 0): a second view
    of the text for the ensemble."""
    return replace(member, name=member.name + BIGRAM_SUFFIX,
                   params={**member.params, "view": "bigrams", "checkpoint": vectors, "embedding_dim": 0})


def is_bigram_twin(member: Member) -> bool:
    """Whether `member` is a config retrained in the bigram view by `bigram_twin`, not a search trial's rank."""
    return member.name.endswith(BIGRAM_SUFFIX)


def searched_configs(members: Sequence[Member]) -> int:
    """How many of `members` are the search's configs: networks, not their bigram twins nor the linear member."""
    return sum(m.kind == NETWORK and not is_bigram_twin(m) for m in members)


def job_id(member: str, fold: int, seed: int) -> str:
    return f"{member}/fold{fold}/seed{seed}"


def parse_job_id(ident: str) -> tuple[str, int, int]:
    """`trial-3/fold2/seed0` -> ("trial-3", 2, 0)."""
    member, fold, seed = ident.split("/")
    return member, int(fold.removeprefix("fold")), int(seed.removeprefix("seed"))


def job_label(ident: str) -> str:
    """`trial-3/fold2/seed0` -> `trial-3 fold 2 seed 0`, as progress lines show a job."""
    member, fold, seed = parse_job_id(ident)
    return f"{member} fold {fold} seed {seed}"


# ----------------------------------------------------------------------------- confirm.json


@dataclass(frozen=True)
class Member:
    """A member of the stage: a search trial's config (`network`) or the linear reference (`linear`)."""

    name: str
    kind: str  # NETWORK or LINEAR
    params: dict[str, Any]  # a network's sampled TrialConfig values; the linear member's settings
    source_trial: str | None = None  # networks: the Ray trial id of the search trial
    optuna_number: int | None = None
    leaderboard_rank: int | None = None

    def seeds(self, seeds: int) -> int:
        """Seeds it is trained with: all S for a network, 1 for the seed-independent linear member."""
        return seeds if self.kind == NETWORK else 1

    def jobs(self, *, folds: int, seeds: int) -> list[str]:
        """Its job ids, fold-major."""
        return [job_id(self.name, f, s) for f in range(folds) for s in range(self.seeds(seeds))]

    def to_dict(self) -> dict[str, Any]:
        if self.kind == LINEAR:
            return {"name": self.name, "kind": self.kind, "params": self.params}
        return {"name": self.name, "kind": self.kind, "source_trial": self.source_trial,
                "optuna_number": self.optuna_number, "leaderboard_rank": self.leaderboard_rank,
                "params": self.params}

    @classmethod
    def from_dict(cls, value: Any, path: Path) -> Member:
        if not isinstance(value, dict) or not isinstance(value.get("name"), str) or "/" in value["name"]:
            raise damaged(path, f"a member is not an object with a `name` (found {value!r:.80})")
        if value.get("kind") not in (NETWORK, LINEAR):
            raise damaged(path, f"member {value['name']!r} has kind {value.get('kind')!r}, not {NETWORK} or {LINEAR}")
        if not isinstance(value.get("params", {}), dict):
            raise damaged(path, f"member {value['name']!r} has `params` that are not an object")
        number = value.get("optuna_number")
        if number is not None and (not isinstance(number, int) or isinstance(number, bool)):
            raise damaged(path, f"member {value['name']!r} has optuna_number {number!r}, not an integer")
        return cls(name=value["name"], kind=value["kind"], params=value.get("params") or {},
                   source_trial=value.get("source_trial"), optuna_number=number,
                   leaderboard_rank=value.get("leaderboard_rank"))


@dataclass(frozen=True)
class RaceRule:
    """`confirm --race`: after each job, a network member that has scores on at least `min_folds`
    folds also scored by the best member, and is below it by a one-sided paired t-test over those
    folds at level `alpha`, is raced out (results/racing.py): its unfinished jobs are skipped."""

    min_folds: int = 3
    alpha: float = 0.05

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, value: Any, path: Path) -> RaceRule | None:
        if value is None:
            return None
        if (not isinstance(value, dict) or not isinstance(value.get("min_folds"), int)
                or not isinstance(value.get("alpha"), int | float) or not 0 < value["alpha"] < 1):
            raise damaged(path, f"`race` is {value!r:.80}, not an object with `min_folds` and `alpha` (0 to 1)")
        return cls(min_folds=value["min_folds"], alpha=float(value["alpha"]))


def _count(value: Any, what: str, path: Path, *, low: int) -> int:
    """A count of confirm.json (`top`, `folds`, `seeds`, ...; the last two, as early versions wrote them, may be
    the list of them)."""
    if isinstance(value, list):
        value = len(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= low:
        return value
    raise damaged(path, f"`{what}` is {value!r}, but must be a count >= {low}")


@dataclass(frozen=True)
class ConfirmSpec:
    """confirm.json: what the stage retrains, on which split, with which settings."""

    top: int
    folds: int
    seeds: int
    split_seed: int
    max_epochs: int
    members: tuple[Member, ...]
    labels: tuple[str, ...]  # level-2 labels in index order
    rows: int  # rows of the training file
    settings: dict[str, Any] = field(default_factory=dict)  # the run's data settings and the stage's resources
    created: str | None = None
    command: str | None = None
    race: RaceRule | None = None  # `confirm --race`; None: every job runs
    # Member i's seed s trains with split_seed + (i + seed_offset) * seed_stride + s: members of one
    # architecture do not start from the same weights and see the same batches (their ensemble is
    # worth more), and no job trains with the search's own seed (split_seed): on the search's fold the
    # first member would replay its trial, the seed luck it was selected on included (measured: +0.02
    # on that fold). A stage written before seed_stride reads both as 0 (every member trained with
    # split_seed + s), one written before seed_offset reads it as 0 (split_seed + 1000 i + s).
    seed_stride: int = SEED_STRIDE
    seed_offset: int = SEED_OFFSET

    def training_seed(self, member: str, seed: int) -> int:
        """The training seed of `member`'s seed `seed` (0 .. seeds-1)."""
        index = [m.name for m in self.members].index(member)
        return self.split_seed + (index + self.seed_offset) * self.seed_stride + seed

    def member(self, name: str) -> Member:
        for member in self.members:
            if member.name == name:
                return member
        raise KeyError(name)

    def jobs(self, kind: str | None = None) -> list[str]:
        """Every job id (of members of `kind`, if given), member by member."""
        return [j for m in self.members if kind is None or m.kind == kind
                for j in m.jobs(folds=self.folds, seeds=self.seeds)]

    def to_dict(self) -> dict[str, Any]:
        return {"top": self.top, "folds": self.folds, "seeds": self.seeds, "split_seed": self.split_seed,
                "max_epochs": self.max_epochs, "created": self.created, "command": self.command,
                "settings": self.settings, "labels": list(self.labels), "rows": self.rows,
                "members": [m.to_dict() for m in self.members],
                "race": self.race.to_dict() if self.race else None, "seed_stride": self.seed_stride,
                "seed_offset": self.seed_offset}

    def job_order(self, jobs: list[str]) -> list[str]:
        """The order to run `jobs` in: member by member (a time budget then ends with whole members), or,
        when racing, fold by fold (every member's scores on the first folds come first, to compare)."""
        if self.race is None:
            return list(jobs)
        names = [m.name for m in self.members]

        def fold_major(job: str) -> tuple[int, int, int]:
            member, fold, seed = parse_job_id(job)
            return fold, seed, names.index(member)
        return sorted(jobs, key=fold_major)

    @classmethod
    def from_dict(cls, value: Any, path: Path) -> ConfirmSpec:
        if not isinstance(value, dict):
            raise damaged(path, f"a JSON {type(value).__name__} where an object belongs")
        missing = [k for k in ("members", "labels", "rows", "folds", "seeds") if k not in value]
        if missing:
            raise damaged(path, f"no {', '.join(f'`{k}`' for k in missing)}")
        if not isinstance(value["members"], list) or not value["members"]:
            raise damaged(path, "`members` is not a non-empty list")
        labels = value["labels"]
        if not isinstance(labels, list) or len(labels) < 2 or not all(isinstance(x, str) for x in labels):
            raise damaged(path, "`labels` is not a list of at least 2 label names")
        members = tuple(Member.from_dict(m, path) for m in value["members"])
        if len({m.name for m in members}) < len(members):
            raise damaged(path, "two members have the same name")
        top = len(members) if value.get("top") is None else _count(value["top"], "top", path, low=0)
        return cls(top=top, folds=_count(value["folds"], "folds", path, low=2),
                   seeds=_count(value["seeds"], "seeds", path, low=1), split_seed=int(value.get("split_seed") or 0),
                   max_epochs=int(value.get("max_epochs") or 0), members=members, labels=tuple(labels),
                   rows=_count(value["rows"], "rows", path, low=2), settings=value.get("settings") or {},
                   created=value.get("created"), command=value.get("command"),
                   race=RaceRule.from_dict(value.get("race"), path),
                   seed_stride=_count(value.get("seed_stride", 0), "seed_stride", path, low=0),
                   seed_offset=_count(value.get("seed_offset", 0), "seed_offset", path, low=0))

    def save(self, path: Path) -> None:
        atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: Path) -> ConfirmSpec:
        return cls.from_dict(read_json(path), path)


# ----------------------------------------------------------------------------- jobs.json


@dataclass(frozen=True)
class JobPlan:
    """What a network job trains (derived from confirm.json and the run's space, not stored): the
    fold it holds out and its full TrialConfig as a dict (its seed and budget included)."""

    member: str
    fold: int
    seed: int
    config: dict[str, Any]



@dataclass
class JobRecord:
    """One job of jobs.json: its state and, once it has evaluated, its best evaluation's scores.

    Mutable: the stage's writer updates it as the job runs, and saves the whole file each time."""

    member: str
    fold: int
    seed: int
    status: str = RUNNING
    level2_macro_f1: float | None = None
    level1_macro_f1: float | None = None
    accuracy: float | None = None
    best_epoch: float | None = None
    time_s: float | None = None
    device: str | None = None  # where it trained: "cuda:0", "cpu"
    gpu_mem_peak_gb: float | None = None  # its peak CUDA memory (CUDA only)
    model_dir: str | None = None  # its fold model directory, relative to RUN_DIR/confirm
    error: str | None = None
    note: str | None = None  # why it was raced out

    @property
    def settled(self) -> bool:
        """Nothing more will happen to it: completed, or raced out."""
        return self.status in (COMPLETED, RACED_OUT)

    @property
    def completed(self) -> bool:
        return self.status == COMPLETED

    def scores(self) -> dict[str, float | None]:
        return {key: getattr(self, key) for key in JOB_SCORES}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, key: str, value: Any, path: Path) -> JobRecord:
        if not isinstance(value, dict):
            raise damaged(path, f"job {key!r} is not an object")
        unknown = set(value) - {f.name for f in fields(cls)}
        if unknown:
            raise damaged(path, f"job {key!r} has unknown key(s) {', '.join(sorted(unknown))}")
        for name in ("member", "fold", "seed", "status"):
            if name not in value:
                raise damaged(path, f"job {key!r} has no `{name}`")
        counts = [value[n] for n in ("fold", "seed")]
        if not isinstance(value["member"], str) or not all(
                isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in counts):
            raise damaged(path, f"job {key!r}: `member` must be a name, `fold` and `seed` counts")
        if value["status"] not in JOB_STATUSES:
            raise damaged(path, f"job {key!r} has status {value['status']!r}, not one of {', '.join(JOB_STATUSES)}")
        for name in (*JOB_SCORES, "best_epoch", "time_s", "gpu_mem_peak_gb"):
            number = value.get(name)
            if number is not None and (isinstance(number, bool) or not isinstance(number, int | float)
                                       or not math.isfinite(number)):
                raise damaged(path, f"job {key!r} has {name} {number!r}, not a finite number")
        for name in ("device", "model_dir", "error", "note"):
            if value.get(name) is not None and not isinstance(value[name], str):
                raise damaged(path, f"job {key!r} has {name} {value[name]!r}, not a string")
        where = value.get("model_dir")
        if where is not None and (where.startswith(("/", "\\")) or ".." in where.split("/") or not where):
            raise damaged(path, f"job {key!r} has model_dir {where!r}, not a path inside RUN_DIR/confirm")
        return cls(**value)


def read_jobs(path: Path) -> dict[str, JobRecord]:
    """jobs.json ({} before the stage wrote it)."""
    if not path.exists():
        return {}
    return {key: JobRecord.from_dict(key, value, path) for key, value in read_json(path, dict).items()}


def write_jobs(path: Path, jobs: dict[str, JobRecord]) -> None:
    atomic_write_json(path, {key: job.to_dict() for key, job in jobs.items()})


# ----------------------------------------------------------------------------- confirm.csv


def read_ranking(files: ConfirmFiles) -> pd.DataFrame | None:
    """confirm.csv (None before the stage wrote it); one that is not the stage's table is `damaged`."""
    import pandas as pd  # here: the command line reads this module's defaults and must not pay for pandas

    if not files.confirm_csv.is_file():
        return None
    try:
        table = pd.read_csv(files.confirm_csv, dtype={"member": str, "source_trial": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as err:
        raise damaged(files.confirm_csv, f"not a CSV table: {err}") from None
    missing = sorted({"rank", "member"} - set(table.columns))
    if missing:
        raise damaged(files.confirm_csv, f"no column {', '.join(missing)}")
    if not pd.api.types.is_numeric_dtype(table["rank"]):
        raise damaged(files.confirm_csv, "its `rank` column is not numbers")
    return table


# ----------------------------------------------------------------------------- ensemble.json


@dataclass(frozen=True)
class EnsembleRecord:
    """ensemble.json: the chosen ensemble (results/ensemble.py `EnsembleResult`'s fields first), the
    members' scores it was chosen beside, every option's scores, and the sha256 of each member's OOF
    file it was chosen on (`predict` refuses an ensemble whose members were confirmed again since)."""

    members: tuple[str, ...]
    weights: tuple[int, ...]
    method: str
    selection: str
    max_members: int | None
    oof_score: float
    nested_score: float
    fold_scores: tuple[float, ...]
    fold_weights: tuple[tuple[int, ...], ...]
    folds: tuple[int, ...]
    option: str  # the --method it was chosen with (an ENSEMBLE_OPTIONS key)
    member_kinds: dict[str, str]
    labels: tuple[str, ...]
    rows: int
    member_scores: dict[str, dict[str, Any]]  # {member: {"oof": F1, "fold_scores": [...]}}
    best_member: str
    beats_best_member: bool
    left_out: dict[str, str]  # failed members and why
    oof_sha256: dict[str, str]
    options: dict[str, dict[str, Any]]  # every option's EnsembleResult, as a dict
    created: str | None = None
    command: str | None = None
    # per label (`labels`' order), the F1 of the chosen ensemble's nested held-out predictions;
    # () in files written before it existed
    label_f1: tuple[float, ...] = ()

    def __post_init__(self) -> None:  # lists (JSON, EnsembleResult.to_dict) become tuples
        for key in ("members", "weights", "fold_scores", "folds", "labels", "label_f1"):
            object.__setattr__(self, key, tuple(getattr(self, key)))
        object.__setattr__(self, "fold_weights", tuple(tuple(w) for w in self.fold_weights))

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("members", "weights", "fold_scores", "folds", "labels", "label_f1"):
            out[key] = list(out[key])
        out["fold_weights"] = [list(w) for w in self.fold_weights]
        return out

    @classmethod
    def from_dict(cls, value: Any, path: Path) -> EnsembleRecord:
        if not isinstance(value, dict):
            raise damaged(path, f"a JSON {type(value).__name__} where an object belongs")
        optional = ("created", "command", "label_f1")
        missing = [f.name for f in fields(cls) if f.name not in value and f.name not in optional]
        if missing:
            raise damaged(path, f"no {', '.join(f'`{k}`' for k in missing)}")
        members, weights = value["members"], value["weights"]
        if not isinstance(members, list) or not isinstance(weights, list) or len(members) != len(weights) \
                or not members:
            raise damaged(path, "`members` and `weights` are not two lists of the same, non-zero length")
        if not all(isinstance(w, int | float) and not isinstance(w, bool) and math.isfinite(w) and w >= 0
                   for w in weights) or not any(weights):
            raise damaged(path, "`weights` must be finite numbers >= 0, not all 0")
        if value["option"] not in ENSEMBLE_OPTIONS:
            raise damaged(path, f"`option` is {value['option']!r}, not one of {', '.join(ENSEMBLE_OPTIONS)}")
        for key, valid in (("selection", {s for s, _ in ENSEMBLE_OPTIONS.values()}),
                           ("method", {r for _, r in ENSEMBLE_OPTIONS.values()})):
            if value[key] not in valid:
                raise damaged(path, f"`{key}` is {value[key]!r}, not one of {', '.join(sorted(valid))}")
        if not all(isinstance(m, str) for m in members) or len(set(members)) != len(members):
            raise damaged(path, "`members` is not a list of distinct member names")
        labels = value["labels"]
        if not isinstance(labels, list) or len(labels) < 2 or not all(isinstance(x, str) for x in labels):
            raise damaged(path, "`labels` is not a list of at least 2 label names")
        if not isinstance(value["oof_sha256"], dict) or not isinstance(value["member_kinds"], dict):
            raise damaged(path, "`oof_sha256` and `member_kinds` must be objects")
        scores = value.get("label_f1", [])
        if not isinstance(scores, list) or scores and (
                len(scores) != len(labels) or not all(isinstance(v, int | float) and 0 <= v <= 1 for v in scores)):
            raise damaged(path, f"`label_f1` must be {len(labels)} F1 scores from 0 to 1, one per label")
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in value.items() if k in known})

    def save(self, path: Path) -> None:
        atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: Path) -> EnsembleRecord:
        return cls.from_dict(read_json(path), path)


# ----------------------------------------------------------------------------- heldout.npz, oof/<member>.npz

# The keys of a fold model's heldout.npz and of an OOF file.
HELDOUT_PROBS, HELDOUT_ROWS = "probs", "rows"
OOF_PROBS, OOF_FOLD_OF, OOF_Y, OOF_IDS = "probs", "fold_of", "y", "ids"


def npz_bytes(**arrays: np.ndarray) -> bytes:
    """np.savez_compressed into memory, for an atomic write."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def write_heldout(path: Path, *, rows: np.ndarray, probs: np.ndarray) -> None:
    """A fold model's (n_held_out, C) level-2 probabilities and their training-file rows."""
    atomic_write_bytes(path, npz_bytes(**{HELDOUT_ROWS: np.asarray(rows, dtype=np.int64),
                                          HELDOUT_PROBS: np.asarray(probs, dtype=np.float32)}))


def read_npz(path: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The arrays `keys` of an npz file, never unpickled; a missing, truncated or foreign file is
    `damaged` (with the command that writes it again: rundir/io.py RECOVERY)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in keys if k not in data.files]
            if missing:
                raise damaged(path, f"no array {', '.join(missing)}: not the file confirm writes")
            return {key: data[key] for key in keys}
    except ConfigError:  # the check above (a ValueError too)
        raise
    except OSError as err:
        raise damaged(path, err.strerror or str(err)) from None
    except (ValueError, EOFError) as err:  # not an npz, truncated, or an object array (never unpickled)
        raise damaged(path, f"not a readable npz file ({err})") from None
    except Exception as err:  # zipfile.BadZipFile and zlib.error of a damaged archive
        if type(err).__module__ in ("zipfile", "zlib"):
            raise damaged(path, f"not a readable npz file ({err})") from None
        raise


def read_heldout(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(rows (n,), probs (n, C)) of a fold model's heldout.npz."""
    arrays = read_npz(path, (HELDOUT_ROWS, HELDOUT_PROBS))
    return arrays[HELDOUT_ROWS], arrays[HELDOUT_PROBS]


def write_oof(path: Path, *, probs: np.ndarray, fold_of: np.ndarray, y: np.ndarray, ids) -> None:
    """oof/<member>.npz: probs float16 (N, C), fold_of int16 (N,), y int64 (N,), ids unicode (N,); no pickles."""
    atomic_write_bytes(path, npz_bytes(**{
        OOF_PROBS: np.asarray(probs, dtype=np.float16), OOF_FOLD_OF: np.asarray(fold_of, dtype=np.int16),
        OOF_Y: np.asarray(y, dtype=np.int64), OOF_IDS: np.asarray([str(i) for i in ids], dtype=np.str_)}))


def read_oof(path: Path) -> dict[str, np.ndarray]:
    return read_npz(path, (OOF_PROBS, OOF_FOLD_OF, OOF_Y, OOF_IDS))
