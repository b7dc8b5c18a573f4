"""Experiment tracking: a search, and its confirm stage, in MLflow (`--track mlflow[=URI]`).

MLflow's own client (`mlflow-skinny`, an optional dependency: `pip install mlflow-skinny==3.18.0`)
from the driver: one parent run per search (named after RUN_DIR), one child run per trial with its
sampled parameters, every evaluation's metrics (step: the trial's optimizer steps, `epoch` logged
beside) and its end (tag `status`: completed, pruned, stopped or error; MLflow status FINISHED,
KILLED or FAILED). The confirm stage adds a child run per member under the search's parent, and under it one
run per job with `fold` and `seed` tags. The runs' ids are kept in RUN_DIR/tracking.json, so a
resumed search or stage goes on logging into the same runs.

Ray Tune's MLflowLoggerCallback logs a flat run per trial with no parent and no notion of our
trials' ends (pruned vs completed), hence this small callback.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ray.tune import Callback
from ray.tune.experiment import Trial

from model import metrics as M
from model.errors import ConfigError
from rundir import keys as K
from rundir.confirm import job_label, parse_job_id
from rundir.io import atomic_write_json
from rundir.trials import COMPLETED, PRUNED, final_status

TRACKERS = ("mlflow",)
EXPERIMENT = "risk-event-search"  # the MLflow experiment every search's parent run goes into
MLFLOW_PIN = "mlflow-skinny==3.18.0"
LOGGED = (M.LEVEL2_MACRO_F1, M.LEVEL1_MACRO_F1, M.ACCURACY, M.DEV_LOSS, M.WORST5_F1, M.TRAIN_LOSS,
          M.BEST_LEVEL2_MACRO_F1, M.EPOCH)
STOPPED = "stopped"  # a confirm job raced out or stopped by its stage's time budget
MLFLOW_STATUS = {COMPLETED: "FINISHED", PRUNED: "KILLED", STOPPED: "KILLED", "error": "FAILED"}


def parse_track(text: str, run_dir: Path) -> tuple[str, str]:
    """(tracker, its URI) of `--track mlflow[=URI]`; the default URI is an SQLite store, RUN_DIR/mlflow.db."""
    kind, _, uri = text.partition("=")
    if kind not in TRACKERS:
        raise ConfigError(f"--track {text!r}: the trackers are {', '.join(TRACKERS)} (e.g. --track mlflow, or "
                          "--track mlflow=http://host:5000)")
    try:
        import mlflow  # noqa: F401
    except ImportError:
        raise ConfigError(f"--track mlflow needs MLflow's client: pip install {MLFLOW_PIN}") from None
    return kind, uri or f"sqlite:///{Path(run_dir).resolve() / 'mlflow.db'}"


class TrackingRuns:
    """The parent and child runs of RUN_DIR in one MLflow experiment, remembered in tracking.json."""

    def __init__(self, run_dir: Path, uri: str, experiment: str):
        self.path = Path(run_dir) / "tracking.json"
        self.uri, self.experiment = uri, experiment
        self.state: dict[str, Any] = json.loads(self.path.read_text()) if self.path.exists() else {}
        self.mlflow_client = None

    def __getstate__(self) -> dict:  # Tune pickles callbacks: the client is made again where needed
        return {**self.__dict__, "mlflow_client": None}

    @property
    def client(self):
        if self.mlflow_client is None:
            from mlflow.tracking import MlflowClient

            self.mlflow_client = MlflowClient(tracking_uri=self.uri)
        return self.mlflow_client

    def run_id(self, key: str, *, name: str, parent: str | None, tags: dict[str, str] | None = None,
               params: dict[str, Any] | None = None) -> str:
        """The run kept under `key`, created the first time (as a child of run `parent`, with `params`)."""
        runs = self.state.setdefault("runs", {})
        if key not in runs:
            experiment = self.client.get_experiment_by_name(self.experiment)
            experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(self.experiment)
            all_tags = {"mlflow.runName": name, **(tags or {})}
            if parent is not None:
                all_tags["mlflow.parentRunId"] = parent
            run_id = self.client.create_run(experiment_id, tags=all_tags).info.run_id
            for param, value in (params or {}).items():
                self.client.log_param(run_id, param, value)
            runs[key] = run_id
            atomic_write_json(self.path, {**self.state, "uri": self.uri, "experiment": self.experiment})
        return runs[key]

    def log_result(self, run_id: str, result: dict[str, Any]) -> None:
        step = int(result.get(M.STEP) or 0)
        for key in LOGGED:
            if isinstance(result.get(key), int | float):
                self.client.log_metric(run_id, key, float(result[key]), step=step)

    def end(self, run_id: str, status: str) -> None:
        self.client.set_tag(run_id, "status", status)
        self.client.set_terminated(run_id, MLFLOW_STATUS.get(status, "FINISHED"))

    def end_running(self, prefix: str, status: str) -> None:
        """End the runs under keys starting with `prefix` that MLflow still has running."""
        for key, run_id in self.state.get("runs", {}).items():
            if key.startswith(prefix) and self.client.get_run(run_id).info.status == "RUNNING":
                self.end(run_id, status)

    def forget(self, prefix: str) -> None:
        """Drop the runs under keys starting with `prefix`: the next ones are new runs."""
        runs = self.state.get("runs", {})
        for key in [k for k in runs if k.startswith(prefix)]:
            del runs[key]
        if self.path.exists():
            atomic_write_json(self.path, {**self.state, "uri": self.uri, "experiment": self.experiment})


class SearchTracking(Callback):
    """The search's parent run and a child run per trial (see the module docstring)."""

    def __init__(self, runs: TrackingRuns, *, run_name: str):
        self.runs, self.run_name = runs, run_name

    def parent(self) -> str:
        return self.runs.run_id("search", name=self.run_name, parent=None, tags={"stage": "search"})

    def _trial_run(self, trial: Trial) -> str:
        number = trial.config.get(K.OPTUNA_NUMBER)
        return self.runs.run_id(f"trial/{trial.trial_id}", name=f"trial {number}", parent=self.parent(),
                                tags={"trial_id": trial.trial_id, "optuna_number": str(number)},
                                params=dict(trial.config.get(K.PARAMS, {})))

    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._trial_run(trial)

    def on_trial_result(self, iteration: int, trials: list[Trial], trial: Trial, result: dict, **info: Any) -> None:
        self.runs.log_result(self._trial_run(trial), result)

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self.runs.end(self._trial_run(trial), final_status(trial.last_result))

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self.runs.end(self._trial_run(trial), "error")

    def on_experiment_end(self, trials: list[Trial], **info: Any) -> None:
        """Trials Ray ended without a trial end reaching the callbacks end as stopped; the parent run
        ends too (a resume logs into it again)."""
        self.runs.end_running("trial/", STOPPED)
        if "search" in self.runs.state.get("runs", {}):
            self.runs.client.set_terminated(self.parent(), "FINISHED")


class ConfirmTracking(Callback):
    """Under the search's parent: a run per member, and under it a run per job (tags fold, seed)."""

    def __init__(self, runs: TrackingRuns, *, run_name: str):
        self.runs, self.run_name = runs, run_name

    def _job_run(self, trial: Trial) -> str:
        job = trial.config[K.JOB]
        member, fold, seed = parse_job_id(job)
        parent = self.runs.run_id("search", name=self.run_name, parent=None, tags={"stage": "search"})
        member_run = self.runs.run_id(f"member/{member}", name=f"confirm {member}", parent=parent,
                                      tags={"stage": "confirm", "member": member})
        return self.runs.run_id(f"job/{job}", name=job_label(job), parent=member_run,
                                tags={"member": member, "fold": str(fold), "seed": str(seed)})

    def on_trial_result(self, iteration: int, trials: list[Trial], trial: Trial, result: dict, **info: Any) -> None:
        self.runs.log_result(self._job_run(trial), result)

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        finished = (trial.last_result or {}).get(M.FINISHED)  # else raced out, or out of time
        self.runs.end(self._job_run(trial), COMPLETED if finished else STOPPED)

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self.runs.end(self._job_run(trial), "error")


def forget_confirm_runs(run_dir: Path) -> None:
    """`confirm --force`: the new stage's members and jobs get new runs, not the old stage's."""
    path = Path(run_dir) / "tracking.json"
    if path.exists():
        state = json.loads(path.read_text())
        runs = TrackingRuns(run_dir, state.get("uri", ""), state.get("experiment", EXPERIMENT))
        runs.forget("member/")
        runs.forget("job/")


def tracking_callbacks(track: str | None, run_dir: Path, *, confirm: bool = False) -> list[Callback]:
    """The callbacks `--track` asks for (none without it)."""
    if not track:
        return []
    _, uri = parse_track(track, run_dir)
    runs = TrackingRuns(run_dir, uri, EXPERIMENT)
    kind = ConfirmTracking if confirm else SearchTracking
    return [kind(runs, run_name=Path(run_dir).name)]
