"""`python -m search confirm RUN_DIR`: retrain the search's top-K configs on every fold, for S seeds.

A search scores each config on one fold; the fold-to-fold spread (about ±0.02 level-2 macro-F1 on
the real task) is larger than many of the differences it ranks by. This stage takes the top K
*completed* trials of the leaderboard (its order), retrains each at the full budget on every fold
of a stratified F-fold split of the whole training file (split seed = the run's seed; each fold
builds its vocabulary from its training part), once per seed s (training seed = run seed + s), and
keeps every fold model and its out-of-fold (OOF) probabilities for `ensemble` and `predict`. Unless
`--no-linear`, the linear reference member (model/linear.py) is fitted on the same folds, in the
driver (seconds per fold), and ranked beside them. The files are described in
results/files.py (`ConfirmFiles`) and results/confirm.py.

The network jobs run as a second Ray Tune experiment inside the run (RUN_DIR/confirm/ray): a fixed
grid of job ids, FIFO (no pruning), warm workers as in the search, bounded concurrency, and a checkpoint at
every evaluation holding the training state and the best evaluation so far, so a retried or
resumed job continues from its last evaluation and keeps its best. `python -m search resume
RUN_DIR` continues an unfinished stage the way it continues a search: a new Tuner over the same
experiment with a ResumeConfig (search/internals.py), so completed jobs are never trained again.

Who writes the fold models: the driver, from each job's final checkpoint (`ConfirmCallback`), not
the trial. (1) RUN_DIR need not be visible to the workers: with a cloud URI as --storage-path it
lives on the driver only, while checkpoints reach the driver through Ray's storage either way.
(2) One writer: jobs.json, the OOF files and confirm.csv are written by one process, with no
races between trials finishing at the same time. (3) A job is completed exactly when jobs.json
says so, and it says so only after its model directory and held-out probabilities are on disk, so
a kill at any moment leaves either a finished job or one the resumed stage finishes again from the
same final checkpoint (which the checkpoint's best evaluation makes complete). The price: the
driver reads each final checkpoint (model, optimizer, best weights) once, at the job's end.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import io
import shlex
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pyarrow.fs
import ray
from ray import tune
from ray.tune.experiment import Trial
from ray.tune.schedulers import FIFOScheduler

from model import metrics as M
from model.config import TrialConfig
from model.data import EncodedData, LabelSet, Vocab, dev_fold_note, fold_indices, prepare_data
from model.encoders import check_checkpoint
from model.errors import ConfigError, DataError
from model.inference import ModelInfo, save_model_dir
from model.linear import DEFAULT_GRID, INNER_FOLDS, fit_linear
from results import confirm as C
from results.export import run_leaderboard
from rundir import keys as K
from rundir import preflight
from rundir.io import atomic_write_bytes, atomic_write_json, atomic_write_text, damaged, read_json
from rundir.lock import run_lock
from rundir.paths import ConfirmFiles, RunFiles, is_uri
from rundir.record import run_settings
from rundir.settings import Settings, read_training_frame
from rundir.trials import COMPLETED, ERROR, RUNNING, load_records
from search import internals
from search.callbacks import ProgressPrinter, error_message
from search.cluster import check_shared_storage
from search.driver import (
    REUSE_WORKERS,
    check_space_copy,
    concurrency,
    experiment_has_state,
    quiet_ray,
    ray_session,
    restore_must_succeed,
)
from search.trainable import BEST, BEST_DEV_PROBS, BEST_METRICS, BEST_WEIGHTS, REPORT, confirm_trial, load_state
from spaces.space import load_space, parse_sets

# The settings confirm.json keeps: the run's data settings, then the resources the stage used.
DATA_SETTINGS = ("data", "synthetic", "synthetic_rows", "synthetic_seed", "max_seq_len")
RESOURCE_SETTINGS = ("address", "cpus_per_trial", "gpus_per_trial", "max_concurrent", "max_failures")


def job_label(job_id: str) -> str:
    """`trial-3/fold2/seed0` -> `trial-3 fold 2 seed 0`, as progress lines show a job."""
    member, fold, seed = job_id.split("/")
    return f"{member} fold {fold.removeprefix('fold')} seed {seed.removeprefix('seed')}"


def stage_finished(files: ConfirmFiles) -> bool:
    """Every job of the stage completed, and every member's OOF file and confirm.csv are written."""
    if not files.confirm_json.exists() or not files.jobs_json.exists() or not files.confirm_csv.exists():
        return False
    spec, jobs = read_json(files.confirm_json, dict), read_json(files.jobs_json, dict)
    if not isinstance(spec.get("members"), list) or not all(isinstance(m, dict) for m in spec["members"]):
        raise damaged(files.confirm_json, "no `members` list")
    return all(C.member_complete(jobs, m, folds=spec["folds"], seeds=spec["seeds"]) and files.oof(m["name"]).exists()
               for m in spec["members"])


def stage_pending(run_dir: str | Path) -> bool:
    """RUN_DIR has a confirm stage that has not finished: what `resume` continues."""
    files = RunFiles(Path(run_dir)).confirm
    return files.confirm_json.exists() and not stage_finished(files)


def experiment(settings: Settings, run: RunFiles) -> tuple[str, str]:
    """(storage_path, name) of the stage's Ray experiment: RUN_DIR/confirm/ray locally, or
    <URI>/<name>-confirm beside the search's experiment when the storage is a URI."""
    if is_uri(settings.storage_path):
        return settings.storage_path, f"{run.root.name}-confirm"
    return str(run.confirm.root.resolve()), run.confirm.ray_dir.name


# ----------------------------------------------------------------------------- the stage


@dataclasses.dataclass(frozen=True)
class FoldData:
    """The training file split into F folds: each fold's encoded data (for the trials) and what
    the driver keeps of it (vocabulary, held-out rows) to write fold models and OOF files."""

    frame: pd.DataFrame
    source: str
    labels: LabelSet
    y: np.ndarray  # (N,) level-2 index of every training row, in file order
    held_out: list[np.ndarray]  # per fold: (n_f,) rows it holds out, in its dev row order
    encoded: list[EncodedData]

    @classmethod
    def load(cls, settings: Settings, *, folds: int, seed: int) -> FoldData:
        frame, source = read_training_frame(settings)
        labels = LabelSet.from_labels(frame["label"])
        held_out = [fold_indices(frame["label"].tolist(), folds=folds, fold=f, seed=seed)[1] for f in range(folds)]
        encoded = [prepare_data(frame, folds=folds, fold=f, seed=seed, max_seq_len=settings.max_seq_len,
                                source=source) for f in range(folds)]
        return cls(frame=frame, source=source, labels=labels, y=labels.encode(frame["label"]), held_out=held_out,
                   encoded=encoded)

    def notes(self) -> list[str]:
        """A warning per fold whose held-out rows lack some labels (as `launch` warns of its dev fold)."""
        folds = len(self.encoded)
        return [note for f, data in enumerate(self.encoded) if (note := dev_fold_note(data, fold=f, folds=folds))]


class ConfirmStage:
    """The driver's side of a confirm stage: its plan (confirm.json), its job records (jobs.json)
    and the one writer of RUN_DIR/confirm. Small enough to travel in Ray's pickled Tuner state:
    it keeps the folds' vocabularies and held-out rows, not their encoded arrays."""

    def __init__(self, files: ConfirmFiles, spec: dict[str, Any], *, jobs: dict[str, dict[str, Any]],
                 vocabs: list[Vocab], held_out: list[np.ndarray], y: np.ndarray, ids: np.ndarray,
                 param_names: list[str]):
        self.files, self.spec, self.jobs = files, spec, jobs
        self.vocabs, self.held_out, self.y, self.ids = vocabs, held_out, y, ids
        self.labels = LabelSet.from_labels(spec["labels"])
        self.param_names = param_names
        self.records: dict[str, dict[str, Any]] = read_json(files.jobs_json) if files.jobs_json.exists() else {}
        self._oof_f1: dict[str, float] = {}

    @property
    def folds(self) -> int:
        return self.spec["folds"]

    @property
    def seeds(self) -> int:
        return self.spec["seeds"]

    @property
    def members(self) -> list[dict[str, Any]]:
        return self.spec["members"]

    def member(self, name: str) -> dict[str, Any]:
        return next(m for m in self.members if m["name"] == name)

    def all_jobs(self) -> list[str]:
        return [j for m in self.members for j in C.member_jobs(m, folds=self.folds, seeds=self.seeds)]

    def network_jobs(self) -> list[str]:
        return [j for m in self.members if m["kind"] == C.NETWORK
                for j in C.member_jobs(m, folds=self.folds, seeds=self.seeds)]

    def completed(self, job_id: str) -> bool:
        return self.records.get(job_id, {}).get("status") == COMPLETED

    def status(self, job_id: str) -> str | None:
        return self.records.get(job_id, {}).get("status")

    def save(self) -> None:
        atomic_write_json(self.files.jobs_json, self.records)

    def _record(self, job_id: str) -> dict[str, Any]:
        if job_id not in self.records:
            member, fold, seed = job_id.split("/")
            self.records[job_id] = C.new_job(member, int(fold.removeprefix("fold")), int(seed.removeprefix("seed")))
        return self.records[job_id]

    # --- network jobs (called by ConfirmCallback) ---

    def start(self, job_id: str) -> None:
        record = self._record(job_id)
        record["status"], record["error"] = RUNNING, None
        self.save()

    def progress(self, job_id: str, result: dict[str, Any]) -> None:
        """Keep a running job's best evaluation so far."""
        record = self._record(job_id)
        record["time_s"] = round(float(result.get("time_total_s", 0.0)), 2)
        record[K.DEVICE] = result.get(K.DEVICE, record.get(K.DEVICE))
        if result.get(K.GPU_MEM_PEAK_GB) is not None:
            record[K.GPU_MEM_PEAK_GB] = round(float(result[K.GPU_MEM_PEAK_GB]), 3)
        if result.get(M.EPOCH) is not None and result.get(M.EPOCH) == result.get(M.BEST_EPOCH):
            record.update({key: result.get(key) for key in C.JOB_SCORES})
            record[M.BEST_EPOCH] = result[M.EPOCH]
        self.save()

    def complete(self, job_id: str, state: dict[str, Any] | None, *, time_s: float | None) -> None:
        """Write the job's fold model and held-out probabilities from its final checkpoint's state,
        then (and only then) record it as completed."""
        if state is None or not state[REPORT].get(M.FINISHED) or state.get(BEST) is None:
            self.fail(job_id, "the job ended without a final checkpoint (Ray stopped it?); resume to continue it")
            return
        job, best = self.jobs[job_id], state[BEST]
        fold, seed = job["fold"], job["seed"]
        directory = self.files.model_dir(job["member"], fold, seed)
        info = ModelInfo(config=TrialConfig.from_dict(job["config"]), vocab=self.vocabs[fold],
                         max_seq_len=self.spec["settings"]["max_seq_len"], labels=self.labels)
        save_model_dir(directory, weights=best[BEST_WEIGHTS], info=info)
        C.write_heldout(self.files.heldout(directory), rows=self.held_out[fold],
                        probs=best[BEST_DEV_PROBS].numpy())
        record = self._record(job_id)
        record.update({key: float(best[BEST_METRICS][key]) for key in C.JOB_SCORES})
        record.update({"status": COMPLETED, M.BEST_EPOCH: best[BEST_METRICS][M.EPOCH], "error": None,
                       "model_dir": self.files.relative(directory)})
        if time_s is not None:
            record["time_s"] = round(float(time_s), 2)
        self.save()
        self.member_done(job["member"])

    def fail(self, job_id: str, message: str) -> None:
        record = self._record(job_id)
        record["status"], record["error"] = ERROR, message
        self.save()
        self.write_table()

    # --- the linear member ---

    def fit_linear(self, data: FoldData, out: Callable[[str], Any]) -> None:
        """Fit the linear member on every fold it has not completed, in this process."""
        member = next((m for m in self.members if m["kind"] == C.LINEAR), None)
        if member is None:
            return
        texts = data.frame["text"].to_numpy()
        for fold in range(self.folds):
            job_id = C.job_id(member["name"], fold, 0)
            if self.completed(job_id):
                continue
            started = time.perf_counter()
            held_out = self.held_out[fold]
            train = np.setdiff1d(np.arange(len(texts)), held_out)
            try:
                linear = fit_linear(texts[train], self.y[train], num_labels=len(self.labels.level2),
                                    seed=member["params"]["seed"], grid=DEFAULT_GRID, inner_folds=INNER_FOLDS)
            except DataError as err:  # e.g. a label with fewer training rows than the inner folds
                self.fail(job_id, f"DataError: {err}")
                out(f"linear fold {fold} failed: {err}")
                continue
            probs = linear.predict_proba(texts[held_out])
            scores = M.classification_metrics(self.y[held_out], probs.argmax(axis=1), level1_of=self.labels.level1_of)
            buffer = io.BytesIO()
            joblib.dump(linear, buffer)
            atomic_write_bytes(self.files.linear_model(fold), buffer.getvalue())
            C.write_heldout(self.files.heldout(self.files.linear_dir(fold)), rows=held_out, probs=probs)
            seconds = time.perf_counter() - started
            record = self._record(job_id)
            record.update({key: scores[key] for key in C.JOB_SCORES})
            record.update({"status": COMPLETED, M.BEST_EPOCH: None, "time_s": round(seconds, 2), K.DEVICE: "cpu",
                           "error": None, "model_dir": self.files.relative(self.files.linear_dir(fold))})
            self.save()
            out(f"linear fold {fold}: level-2 F1 {scores[M.LEVEL2_MACRO_F1]:.4f} ({seconds:.1f}s)")
            self.member_done(member["name"])

    # --- outputs ---

    def member_done(self, name: str) -> None:
        """Write the member's OOF file if all its jobs completed, then confirm.csv."""
        member = self.member(name)
        if C.member_complete(self.records, member, folds=self.folds, seeds=self.seeds):
            self.write_oof(member)
        self.write_table()

    def write_oof(self, member: dict[str, Any]) -> None:
        """oof/<member>.npz from its jobs' held-out probabilities, averaged over seeds."""
        parts = []
        for job_id in C.member_jobs(member, folds=self.folds, seeds=self.seeds):
            record = self.records[job_id]
            rows, probs = C.read_heldout(self.files.heldout(self.files.root / record["model_dir"]))
            parts.append((record["fold"], rows, probs))
        probs, fold_of = C.assemble_oof(parts, rows=len(self.y))
        path = self.files.oof(member["name"])
        C.write_oof(path, probs=probs, fold_of=fold_of, y=self.y, ids=self.ids)
        self._oof_f1.pop(member["name"], None)

    def oof_f1(self) -> dict[str, float]:
        """Pooled level-2 macro-F1 of each member's OOF file (as written: float16)."""
        from results.ensemble import macro_f1

        for member in self.members:
            path = self.files.oof(member["name"])
            if member["name"] not in self._oof_f1 and path.exists():
                oof = C.read_oof(path)
                self._oof_f1[member["name"]] = macro_f1(oof[C.OOF_Y], oof[C.OOF_PROBS].argmax(axis=1),
                                                        num_labels=len(self.labels.level2))
        return self._oof_f1

    def table(self) -> pd.DataFrame:
        return C.confirm_table(self.records, self.members, folds=self.folds, seeds=self.seeds,
                               param_names=self.param_names, oof_f1=self.oof_f1())

    def write_table(self) -> pd.DataFrame:
        frame = self.table()
        atomic_write_text(self.files.confirm_csv, frame.to_csv(index=False, lineterminator="\n"))
        return frame

    def finish(self) -> pd.DataFrame:
        """Write what a kill may have left unwritten (OOF files of complete members), then confirm.csv."""
        for member in self.members:
            if (C.member_complete(self.records, member, folds=self.folds, seeds=self.seeds)
                    and not self.files.oof(member["name"]).exists()):
                self.write_oof(member)
        return self.write_table()


class ConfirmCallback(tune.Callback):
    """Keeps jobs.json current and, when a job ends, writes its fold model from its final
    checkpoint (see the module docstring for why the driver writes). A completed job's record
    never changes again: after a restart Ray may run such a job's trial once more, and it then only
    re-reports its checkpoint."""

    def __init__(self, stage: ConfirmStage):
        self.stage = stage
        self._synced = False

    def setup(self, **info: Any) -> None:
        self._synced = False

    @staticmethod
    def _job(trial: Trial) -> str:
        return trial.config[K.JOB]

    def on_step_begin(self, iteration: int, trials: list[Trial], **info: Any) -> None:
        if self._synced:
            return
        self._synced = True
        # A restored experiment may hold trials that ended after the last jobs.json write.
        for trial in trials:
            job_id = self._job(trial)
            if self.stage.completed(job_id):
                continue
            if trial.status == Trial.TERMINATED:
                self._complete(trial)
            elif trial.status == Trial.ERROR and self.stage.status(job_id) != ERROR:
                self.stage.fail(job_id, error_message(trial))

    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        if not self.stage.completed(self._job(trial)):
            self.stage.start(self._job(trial))

    def on_trial_result(self, iteration: int, trials: list[Trial], trial: Trial, result: dict, **info: Any) -> None:
        if not self.stage.completed(self._job(trial)):
            self.stage.progress(self._job(trial), result)

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        if not self.stage.completed(self._job(trial)):
            self._complete(trial)

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        if not self.stage.completed(self._job(trial)):
            self.stage.fail(self._job(trial), error_message(trial))

    def _complete(self, trial: Trial) -> None:
        try:
            state = load_state(trial.checkpoint)
        except (OSError, RuntimeError) as err:
            self.stage.fail(self._job(trial), f"cannot read the job's final checkpoint: {err!r}")
            return
        self.stage.complete(self._job(trial), state, time_s=(trial.last_result or {}).get("time_total_s"))


class ConfirmProgress(ProgressPrinter):
    """`[   12s] trial-3 fold 2 seed 0 epoch 2/4  level-2 F1 0.5100  (best 0.5100)` and
    `... completed, best level-2 F1 0.5300  [k/n jobs done]`."""

    noun = "jobs"

    def key(self, trial: Trial) -> str:
        return trial.config.get(K.JOB)

    def name(self, trial: Trial) -> str:
        return job_label(trial.config[K.JOB])

    def how(self, last: dict) -> str:
        return "completed"


# ----------------------------------------------------------------------------- planning


def plan_members(run_dir: Path, *, top: int, linear: bool, split_seed: int) -> list[dict[str, Any]]:
    """confirm.json's members: the top `top` completed trials in leaderboard order, then linear."""
    board = run_leaderboard(run_dir)
    records = load_records(RunFiles(run_dir))
    completed = board[board["status"] == COMPLETED].head(top)
    if completed.empty:
        raise ConfigError(f"{run_dir} has no completed trial to confirm (statuses: "
                          f"{', '.join(f'{n} {s}' for s, n in board['status'].value_counts().items()) or 'no trials'})"
                          f": resume the search until some trial completes its budget")
    members = [{"name": C.network_name(int(row.optuna_number)), "kind": C.NETWORK, "source_trial": row.trial_id,
                "optuna_number": int(row.optuna_number), "leaderboard_rank": int(row.rank),
                "params": records[row.trial_id].params} for row in completed.itertuples()]
    if linear:
        # LinearMember.params but its temperature, which each fold fits (models/linear/fold<f>/linear.joblib)
        members.append({"name": C.LINEAR_MEMBER, "kind": C.LINEAR,
                        "params": {"C": DEFAULT_GRID[0], "inner_folds": INNER_FOLDS, "calibration": "temperature",
                                   "seed": split_seed}})
    return members


def plan_jobs(spec: dict[str, Any], run_files: RunFiles) -> dict[str, dict[str, Any]]:
    """{job id: member, fold, seed and the full TrialConfig (dict)} of every network job, from the
    run's stored space: defaults <- fixed <- the trial's params <- the stage's budget and seed."""
    # The run's --sets (a checkpoint the space leaves open, say) complete its stored space here too.
    sets = parse_sets(read_json(run_files.run_json).get("settings", {}).get("sets", ()))
    space = load_space(run_files.space_yaml, sets=sets)
    jobs = {}
    for member in spec["members"]:
        if member["kind"] != C.NETWORK:
            continue
        for seed in range(spec["seeds"]):
            try:
                cfg = space.config(member["params"], max_epochs=spec["max_epochs"], seed=spec["split_seed"] + seed)
            except ConfigError as err:
                raise ConfigError(f"{member['name']} (trial {member['source_trial']}) is not a valid config for "
                                  f"this version of the code: {err}") from None
            if seed == 0:
                check_checkpoint(cfg)  # an encoder checkpoint directory must be there before Ray starts
            for fold in range(spec["folds"]):
                jobs[C.job_id(member["name"], fold, seed)] = {"member": member["name"], "fold": fold, "seed": seed,
                                                               "config": cfg.to_dict()}
    return jobs


def _stage(run_files: RunFiles, spec: dict[str, Any], data: FoldData, run: dict[str, Any]) -> ConfirmStage:
    return ConfirmStage(run_files.confirm, spec, jobs=plan_jobs(spec, run_files),
                        vocabs=[d.vocab for d in data.encoded], held_out=data.held_out, y=data.y,
                        ids=data.frame["id"].astype(str).to_numpy(), param_names=list(run.get("searched", [])))


def _resources(settings: Settings, *, address: str | None = None, cpus_per_trial: float | None = None,
               gpus_per_trial: float | None = None, max_concurrent: int | None = None,
               max_failures: int | None = None) -> Settings:
    """The run's settings with the resource flags that were given."""
    given = {"address": address, "cpus_per_trial": cpus_per_trial, "gpus_per_trial": gpus_per_trial,
             "max_concurrent": max_concurrent, "max_failures": max_failures}
    return dataclasses.replace(settings, **{k: v for k, v in given.items() if v is not None})


# ----------------------------------------------------------------------------- commands


@contextlib.contextmanager
def checked_session(settings: Settings, run_files: RunFiles, out: Callable[[str], Any]):
    """A Ray session (unless this process already has one) whose cluster can hold a job and, on
    several nodes, sees the storage every job checkpoints to."""
    quiet_ray()
    if ray.is_initialized():
        yield
        return
    with ray_session(settings.address):
        if note := preflight.check_resources(cpus_per_trial=settings.cpus_per_trial,
                                             gpus_per_trial=settings.gpus_per_trial, nodes=ray.nodes()):
            out(note.replace("every trial", "every job"))
        check_shared_storage(settings.storage_path if is_uri(settings.storage_path) else str(run_files.root.parent),
                             ray.nodes())
        yield


@dataclasses.dataclass(frozen=True)
class Outcome:
    files: ConfirmFiles
    table: pd.DataFrame
    finished: bool  # every job completed and every output written
    already: bool = False  # the stage had finished before this command


def confirm(run_dir: str | Path, *, top: int = C.DEFAULT_TOP, folds: int = C.DEFAULT_FOLDS,
            seeds: int = C.DEFAULT_SEEDS,
            linear: bool = True, force: bool = False, address: str | None = None,
            cpus_per_trial: float | None = None, gpus_per_trial: float | None = None,
            max_concurrent: int | None = None, max_failures: int | None = None, argv: list[str] | None = None,
            out: Callable[[str], Any] = print, trial_fn: Callable = confirm_trial) -> Outcome:
    """Run the confirm stage of the search in `run_dir` (see the module docstring). `trial_fn` is
    what each Ray trial calls, with `confirm_trial`'s signature; tests wrap it to inject failures."""
    internals.check()
    run_files = RunFiles(Path(run_dir))
    run, settings = run_settings(run_files)
    check_space_copy(run_files)
    load_records(run_files)  # a damaged trials.json is refused before the lock
    files = run_files.confirm
    for flag, value, low in (("--top", top, 1), ("--folds", folds, 2), ("--seeds", seeds, 1)):
        if value < low:
            raise ConfigError(f"{flag} is {value}, but must be >= {low}")
    settings = _resources(settings, address=address, cpus_per_trial=cpus_per_trial, gpus_per_trial=gpus_per_trial,
                          max_concurrent=max_concurrent, max_failures=max_failures)
    preflight.check_settings(settings)

    with run_lock(run_files):
        if files.confirm_json.exists() and not force:
            if stage_finished(files):
                spec = read_json(files.confirm_json)
                out(f"the confirm stage of {run_files.root} already finished (top {spec['top']}, {spec['folds']} "
                    f"folds, {spec['seeds']} seed(s)): {files.confirm_csv}. To confirm with other --top, --folds or "
                    f"--seeds, pass --force (deletes {files.root} and starts over)")
                return Outcome(files, pd.read_csv(files.confirm_csv), finished=True, already=True)
            raise ConfigError(f"{run_files.root} has an unfinished confirm stage: continue it with "
                              f"`python -m search resume {run_files.root}` (or pass --force to delete {files.root} "
                              "and start over)")
        members = plan_members(run_files.root, top=top, linear=linear, split_seed=settings.seed)
        networks = sum(m["kind"] == C.NETWORK for m in members)
        if networks < top:
            out(f"note: the run has {networks} completed trial(s); confirming those (--top {top})")
        unfinished = sum(r.status == RUNNING for r in load_records(run_files).values())
        if unfinished:
            out(f"note: {unfinished} trial(s) of the search have not finished (`python -m search resume "
                f"{run_files.root} --num-samples N` continues them); confirming the completed ones")
        spec = {"top": top, "folds": folds, "seeds": seeds, "split_seed": settings.seed,
                "max_epochs": run["max_epochs"], "members": members}
        plan_jobs(spec, run_files)  # every config valid, every checkpoint directory there: before Ray
        data = FoldData.load(settings, folds=folds, seed=settings.seed)
        with checked_session(settings, run_files, out):
            settings = dataclasses.replace(settings, max_concurrent=concurrency(settings))
            if force and files.root.exists():
                shutil.rmtree(files.root)
                storage, name = experiment(settings, run_files)
                if is_uri(storage):  # the stage's Ray experiment lives outside RUN_DIR
                    fs, path = pyarrow.fs.FileSystem.from_uri(storage)
                    fs.delete_dir_contents(f"{path}/{name}", missing_dir_ok=True)
                out(f"--force: deleted the previous confirm stage ({files.root})")
            spec = {**{k: spec[k] for k in ("top", "folds", "seeds", "split_seed", "max_epochs")},
                    "created": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
                    "command": shlex.join(["python", "-m", "search", *(argv or ["confirm", str(run_dir)])]),
                    "settings": {**{k: getattr(settings, k) for k in DATA_SETTINGS},
                                 **{k: getattr(settings, k) for k in RESOURCE_SETTINGS}},
                    "labels": list(data.labels.level2), "rows": len(data.frame), "members": members}
            atomic_write_json(files.confirm_json, spec)
            stage = _stage(run_files, spec, data, run)
            stage.save()
            out(f"CONFIRM {files.root}")
            out(f"data: {data.source}: {len(data.frame)} rows in {folds} folds (split seed {settings.seed}), "
                f"{len(data.labels.level2)} labels; {networks} config(s) x {folds} folds x {seeds} seed(s) at "
                f"{run['max_epochs']} epochs" + (", and the linear member" if linear else ""))
            for note in data.notes():
                out(note)
            return _run(stage, data, settings, run_files, resume=False, retry=False, out=out, trial_fn=trial_fn)


def resume_confirm(run_dir: str | Path, *, max_failures: int | None = None, retry_errored: bool = False,
                   out: Callable[[str], Any] = print, trial_fn: Callable = confirm_trial) -> Outcome:
    """Continue the unfinished confirm stage in `run_dir`: jobs that were training continue from
    their last checkpoint, completed jobs are never trained again, errored ones only with
    `retry_errored` (from their last checkpoint); then write the outputs a kill left unwritten."""
    internals.check()
    run_files = RunFiles(Path(run_dir))
    run, settings = run_settings(run_files)
    files = run_files.confirm
    spec = read_json(files.confirm_json)
    stored = spec["settings"]
    settings = _resources(settings, **{k: stored[k] for k in RESOURCE_SETTINGS})
    settings = _resources(settings, max_failures=max_failures)
    preflight.check_settings(settings)
    data = FoldData.load(settings, folds=spec["folds"], seed=spec["split_seed"])
    if list(data.labels.level2) != spec["labels"] or len(data.frame) != spec["rows"]:
        raise ConfigError(f"the training data ({data.source}) is not the data the confirm stage started on "
                          f"({spec['rows']} rows, {len(spec['labels'])} labels): restore it, or start over with "
                          "`confirm --force`")
    with run_lock(run_files):
        stage = _stage(run_files, spec, data, run)
        jobs = stage.all_jobs()
        out(f"CONFIRM {files.root}")
        out(f"resuming the confirm stage: {sum(stage.completed(j) for j in jobs)} of {len(jobs)} jobs completed")
        return _run(stage, data, settings, run_files, resume=True, retry=retry_errored, out=out, trial_fn=trial_fn)


def _run(stage: ConfirmStage, data: FoldData, settings: Settings, run_files: RunFiles, *, resume: bool, retry: bool,
         out: Callable[[str], Any], trial_fn: Callable) -> Outcome:
    """Fit the linear member's missing folds, run (or continue) the network jobs, write the outputs."""
    stage.fit_linear(data, out)
    skipped = {j for j in stage.network_jobs() if stage.status(j) == ERROR and not retry}
    pending = [j for j in stage.network_jobs() if not stage.completed(j) and j not in skipped]
    if pending:
        with checked_session(settings, run_files, out):
            _tune(stage, data, settings, run_files, pending=pending, skipped=skipped, retry=retry, out=out,
                  trial_fn=trial_fn)
    frame = stage.finish()
    errors = [j for j in stage.records if stage.status(j) == ERROR]
    finished = stage_finished(stage.files)
    out(f"\n{summary(frame)}\n\nconfirm.csv: {stage.files.confirm_csv}")
    if errors:
        out(f"{len(errors)} job(s) ended as errors ({', '.join(errors[:5])}{' ...' if len(errors) > 5 else ''}; "
            f"see {stage.files.jobs_json}): fix the cause, then `python -m search resume {run_files.root} "
            "--retry-errored`")
    elif not finished:
        out(f"the confirm stage stopped early: continue it with `python -m search resume {run_files.root}`")
    return Outcome(stage.files, frame, finished=finished)


def _tune(stage: ConfirmStage, data: FoldData, settings: Settings, run_files: RunFiles, *, pending: list[str],
          skipped: set[str], retry: bool, out: Callable[[str], Any], trial_fn: Callable) -> None:
    storage, name = experiment(settings, run_files)
    restore = experiment_has_state(storage, name)
    completed = frozenset(j for j in stage.network_jobs() if stage.completed(j))
    slots = settings.max_concurrent or concurrency(settings)
    out(f"confirm: {len(pending)} network job(s) to run, {slots} at a time"
        + (f", {len(completed)} completed before" if completed else ""))
    trainable = tune.with_parameters(trial_fn, folds=data.encoded, jobs=stage.jobs, ended=completed)
    extra = {}
    if restore:
        kind = tune.ResumeConfig.ResumeType
        extra = internals.resume_kwargs(tune.ResumeConfig(unfinished=kind.RESUME,
                                                          errored=kind.RESUME if retry else kind.SKIP,
                                                          finished=kind.SKIP))
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": settings.cpus_per_trial, "gpu": settings.gpus_per_trial}),
        # A fresh experiment (none on disk: a new stage, or one killed before Ray's first snapshot)
        # runs the jobs not completed yet; a restored one keeps its own list and only resumes.
        param_space={K.JOB: tune.grid_search(pending)},
        tune_config=tune.TuneConfig(
            scheduler=FIFOScheduler(),  # every job trains its full budget: no pruning
            max_concurrent_trials=slots,
            reuse_actors=REUSE_WORKERS,  # warm workers, as in the search (search/driver.py)
            trial_dirname_creator=lambda trial: f"{trial.config[K.JOB].replace('/', '_')}_{trial.trial_id}",
        ),
        run_config=tune.RunConfig(
            storage_path=storage, name=name,
            failure_config=tune.FailureConfig(max_failures=settings.max_failures),
            # Only the latest checkpoint: it holds the best evaluation too.
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            callbacks=[ConfirmCallback(stage), ConfirmProgress(max_epochs=stage.spec["max_epochs"],
                                                               num_samples=len(stage.network_jobs()),
                                                               ended=completed | frozenset(skipped))],
            verbose=0,
        ),
        **extra,
    )
    with restore_must_succeed() if restore else contextlib.nullcontext():
        tuner.fit()


def summary(frame: pd.DataFrame, top: int = 10) -> str:
    counts = frame["status"].value_counts().to_dict()
    return (f"{len(frame)} members: " + ", ".join(f"{n} {s}" for s, n in counts.items())
            + f"\n\n{C.top_rows(frame, top)}")
