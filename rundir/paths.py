"""Where a run keeps its files: RUN_DIR and RUN_DIR/confirm, path by path.

RUN_DIR = <storage-path>/<name> holds:
    run.json          the run's record: command line, settings, versions, git revision (rundir/record.py)
    space.yaml        a copy of the search space as launched
    study.db          the Optuna study (SQLite)
    trials.json       one record per trial (params, per-epoch metrics, status), kept current (rundir/trials.py)
    leaderboard.csv   the ranked table, kept current
    ray/              Ray Tune's experiment directory (its state, trial_<id>/ directories, checkpoints)
    confirm/          the confirm stage (`ConfirmFiles`): the top configs retrained on every fold
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunFiles:
    root: Path

    @property
    def run_json(self) -> Path:
        return self.root / "run.json"

    @property
    def space_yaml(self) -> Path:
        return self.root / "space.yaml"

    @property
    def study_db(self) -> Path:
        return self.root / "study.db"

    @property
    def study_url(self) -> str:
        return f"sqlite:///{self.study_db.resolve()}"

    @property
    def trials_json(self) -> Path:
        return self.root / "trials.json"

    @property
    def leaderboard_csv(self) -> Path:
        return self.root / "leaderboard.csv"

    @property
    def ray_dir(self) -> Path:
        """Ray Tune's experiment directory, when the storage is local (see search/driver.py)."""
        return self.root / "ray"

    @property
    def driver_lock(self) -> Path:
        return self.root / ".driver.lock"

    @property
    def report_dir(self) -> Path:
        return self.root / "report"

    @property
    def predictions_dir(self) -> Path:
        """Each trial's best predictions on the dev rows (rundir/predictions.py)."""
        return self.root / "predictions"

    @property
    def pipeline_json(self) -> Path:
        """What `python -m search pipeline` planned and how far it got (rundir/pipeline.py)."""
        return self.root / "pipeline.json"

    @property
    def vectors_dir(self) -> Path:
        """The word vectors a pipeline trained for its space (`embed`)."""
        return self.root / "vectors"

    @property
    def pairs_dir(self) -> Path:
        """The token-pair vectors a `pipeline --bigrams` trained for confirm (`embed --view bigrams`)."""
        return self.root / "pairs"

    @property
    def confirm(self) -> ConfirmFiles:
        return ConfirmFiles(self.root / "confirm")


LINEAR_FILE = "linear.npz"  # the linear member's fold model in its fold directory (model/linear.py: arrays)
OLD_LINEAR_FILE = "linear.joblib"  # ... as a pickle, before 2026-12 (no longer loaded)
# A Ray trial checkpoint directory's one file: the training state and the metrics it was reported with
# (search/trainable.py writes it, `predict --use trial:ID` reads it).
TRIAL_STATE_FILE = "state.pt"


@dataclass(frozen=True)
class ConfirmFiles:
    """RUN_DIR/confirm: the confirm stage (`python -m search confirm`), read by `ensemble` and `predict`.

        confirm.json     the stage's plan: K, F, S, split seed, budget, settings, labels, members
        jobs.json        one record per (member, fold, seed) job, kept current
        confirm.csv      one row per member, ranked
        models/<member>/fold<f>-seed<s>/   a network fold model (model.inference.save_model_dir), and
                         heldout.npz: its level-2 probabilities on the fold's held-out rows
        models/linear/fold<f>/             linear.npz (the LinearMember's arrays) and heldout.npz
        oof/<member>.npz the member's out-of-fold probabilities over every training row
        ensemble.json    what `python -m search ensemble` chose
        ray/             Ray Tune's experiment directory of the stage (local storage)
    """

    root: Path  # RUN_DIR/confirm

    @classmethod
    def of(cls, run_dir: str | Path) -> ConfirmFiles:
        return RunFiles(Path(run_dir)).confirm

    @property
    def run_dir(self) -> Path:
        return self.root.parent

    @property
    def confirm_json(self) -> Path:
        return self.root / "confirm.json"

    @property
    def ensemble_json(self) -> Path:
        """What `python -m search ensemble` chose, read by `predict`."""
        return self.root / "ensemble.json"

    @property
    def jobs_json(self) -> Path:
        return self.root / "jobs.json"

    @property
    def confirm_csv(self) -> Path:
        return self.root / "confirm.csv"

    @property
    def ray_dir(self) -> Path:
        return self.root / "ray"

    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    @property
    def oof_dir(self) -> Path:
        return self.root / "oof"

    def model_dir(self, member: str, fold: int, seed: int) -> Path:
        """A network member's fold model directory."""
        return self.models_dir / member / f"fold{fold}-seed{seed}"

    def linear_dir(self, fold: int) -> Path:
        return self.models_dir / "linear" / f"fold{fold}"

    def linear_model(self, fold: int) -> Path:
        return self.linear_dir(fold) / LINEAR_FILE

    @staticmethod
    def heldout(model_dir: Path) -> Path:
        """The fold model's (n_held_out, C) level-2 probabilities and their training-file rows."""
        return model_dir / "heldout.npz"

    def oof(self, member: str) -> Path:
        return self.oof_dir / f"{member}.npz"

    def relative(self, path: Path) -> str:
        """`path` relative to RUN_DIR/confirm, as jobs.json records it."""
        return path.relative_to(self.root).as_posix()


def is_uri(path: str) -> bool:
    """A cloud storage URI (s3://, gs://, ...) rather than a local path."""
    return bool(urllib.parse.urlparse(str(path)).scheme)


def search_experiment(storage_path: str, files: RunFiles) -> tuple[str, str]:
    """(storage_path, name) of the search's Ray experiment: its state, trial directories and checkpoints.

    Locally that is RUN_DIR/ray, a directory of Ray's own: on a restore Ray copies its experiment
    directory aside and later back, which would overwrite files of ours living in it with stale
    copies. With a URI storage it is <URI>/<name>, while our files stay in ./runs/<name>.
    """
    if is_uri(storage_path):
        return storage_path, files.root.name
    return str(files.root.resolve()), files.ray_dir.name


def confirm_experiment(storage_path: str, files: RunFiles) -> tuple[str, str]:
    """(storage_path, name) of the confirm stage's Ray experiment: RUN_DIR/confirm/ray locally, or
    <URI>/<name>-confirm beside the search's experiment when the storage is a URI."""
    if is_uri(storage_path):
        return storage_path, f"{files.root.name}-confirm"
    return str(files.confirm.root.resolve()), files.confirm.ray_dir.name


def run_files(storage_path: str, name: str) -> RunFiles:
    """RUN_DIR: under `storage_path`, or under ./runs when the storage is a URI (an SQLite study and
    the run's records stay with the driver; Ray keeps its experiment at the URI: search/cluster.py)."""
    return RunFiles(Path("runs" if is_uri(storage_path) else storage_path) / name)


def name_problem(name: str) -> str | None:
    """Why `name` is not a plain directory name (None if it is): a run name becomes
    <storage-path>/<name>, so a separator, `.` or `..` would put the run elsewhere."""
    if name in ("", ".", ".."):
        return f"{name!r} is not a name"
    if "/" in name or "\\" in name or "\0" in name:
        return f"{name!r} is a path, not a name (no / or \\)"
    if name.startswith("-"):
        return f"{name!r} starts with '-'"
    return None
