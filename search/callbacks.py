"""Tune callbacks: the live leaderboard and the progress lines a user watches."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ray.tune import Callback
from ray.tune.experiment import Trial

from model import metrics as M
from results.export import NoiseCache, write_leaderboard
from rundir import keys as K
from rundir.paths import RunFiles
from rundir.predictions import copy_from_checkpoint
from rundir.settings import UNTIL_TIME_BUDGET
from rundir.trials import COMPLETED, ERROR, RUNNING, TrialRecord, final_status, load_records


def error_message(trial: Trial) -> str:
    """The last line of a trial's traceback (`ValueError: ...`), or a placeholder."""
    path = trial.error_file
    if path and Path(path).exists():
        lines = [ln.strip() for ln in Path(path).read_text(errors="replace").splitlines() if ln.strip()]
        if lines:
            return lines[-1][:500]
    return "trial failed (no error file; see the trial's logs)"


class LeaderboardCallback(Callback):
    """Keeps RUN_DIR/trials.json and RUN_DIR/leaderboard.csv current: rewritten (atomically)
    whenever a trial starts, reports or ends.

    A record that reached a final status (completed, pruned, error) never changes again. After a
    restart, Ray may still run such a trial once (its last snapshot predates the end): the trial
    then only re-reports its last checkpoint, which can be older than the record.
    """

    def __init__(self, files: RunFiles, *, max_epochs: int, param_names: list[str], seed: int, fold: int,
                 command_prefix: str | None = None):
        self.files = files
        self.max_epochs, self.param_names, self.seed, self.fold = max_epochs, param_names, seed, fold
        self.command_prefix = command_prefix
        self.records: dict[str, TrialRecord] = load_records(files)
        self._synced = False
        self.stopped_at_end: dict[str, dict] = {}  # trial id -> last result (see on_experiment_end)
        self.noise = NoiseCache()

    def setup(self, **info: Any) -> None:
        # The files on disk are newer than any state Ray restores with this callback.
        self.records = load_records(self.files)
        self._synced = False

    def on_step_begin(self, iteration: int, trials: list[Trial], **info: Any) -> None:
        if not self._synced:  # the first step of a run sees every trial Ray knows
            self._synced = True
            if self.sync(trials):
                self.write()

    def sync(self, trials: list[Trial]) -> bool:
        """Align records with the trials a (restored) experiment holds; True if any changed.

        A record still `running` may belong to a trial Ray had already ended, or to one started
        after Ray's last experiment snapshot, which Ray no longer knows: that one is lost (and the
        searcher fails its Optuna trial).
        """
        by_id = {t.trial_id: t for t in trials}
        changed = False
        for record in self.records.values():
            if record.status != RUNNING:
                continue
            trial = by_id.get(record.trial_id)
            if trial is None:
                record.status = ERROR
                record.error = ("lost: the driver was killed before Ray recorded this trial, so it cannot "
                                "be continued (its Optuna trial is marked FAIL)")
            elif trial.status == Trial.TERMINATED:
                record.status = final_status(trial.last_result)
            elif trial.status == Trial.ERROR:
                record.status, record.error = ERROR, error_message(trial)
            else:
                continue
            changed = True
        return changed

    def _final(self, trial: Trial) -> bool:
        record = self.records.get(trial.trial_id)
        return record is not None and record.status != RUNNING

    def _record(self, trial: Trial) -> TrialRecord:
        record = self.records.get(trial.trial_id)
        if record is None:
            config = trial.config
            record = TrialRecord(trial_id=trial.trial_id, optuna_number=config.get(K.OPTUNA_NUMBER),
                                 warm_start=config.get(K.WARM_START), params=dict(config.get(K.PARAMS, {})))
            self.records[trial.trial_id] = record
        return record

    def write(self):
        return write_leaderboard(self.files, self.records, max_epochs=self.max_epochs,
                                 param_names=self.param_names, seed=self.seed, fold=self.fold,
                                 command_prefix=self.command_prefix, noise=self.noise)

    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        if self._final(trial):
            return
        record = self._record(trial)
        record.status, record.started_at, record.ended_at = RUNNING, time.time(), None
        self.write()

    def on_trial_result(self, iteration: int, trials: list[Trial], trial: Trial, result: dict,
                        **info: Any) -> None:
        if self._final(trial):
            return
        self._take(self._record(trial), result)
        self.write()

    @staticmethod
    def _take(record: TrialRecord, result: dict) -> None:
        record.add_evaluation(result)
        record.node = result.get("node_ip", record.node)
        record.node_id = result.get(K.NODE_ID, record.node_id)
        record.device = result.get(K.DEVICE, record.device)
        record.time_s = float(result.get("time_total_s", record.time_s))

    def on_checkpoint(self, iteration: int, trials: list[Trial], trial: Trial, checkpoint, **info: Any) -> None:
        if self._final(trial):
            return
        last = trial.last_result or {}
        if last.get(M.EPOCH) is not None and last.get(M.EPOCH) == last.get(M.BEST_EPOCH):
            self._record(trial).checkpoint = checkpoint.path
            with checkpoint.as_directory() as directory:  # the path itself on local storage: nothing copied
                copy_from_checkpoint(self.files, trial.trial_id, Path(directory))
            self.write()

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        if self._final(trial):
            return
        record = self._record(trial)
        if trial.last_result:  # Ray may end a trial on a result no on_trial_result saw
            self._take(record, trial.last_result)
        record.status = final_status(trial.last_result)
        record.ended_at = time.time()
        self.write()

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        if self._final(trial):
            return
        record = self._record(trial)
        record.status, record.error, record.ended_at = ERROR, error_message(trial), time.time()
        self.write()

    def on_experiment_end(self, trials: list[Trial], **info: Any) -> None:
        """Trials Ray terminated without a trial end reaching the callbacks (an experiment stopped
        as a whole, e.g. by Ray's own time_budget_s, which this project no longer uses: see
        search/deadline.py). Recorded as their last result says (pruned: stopped before their
        budget), and kept in `stopped_at_end` for the searcher, which Ray does not tell either."""
        for trial in trials:
            record = self.records.get(trial.trial_id)
            if trial.status == Trial.TERMINATED and record is not None and record.status == RUNNING:
                if (trial.last_result or {}).get(M.EPOCH) is not None:  # it may have reported nothing yet
                    self._take(record, trial.last_result)
                record.status, record.ended_at = final_status(trial.last_result), time.time()
                self.stopped_at_end[trial.trial_id] = dict(trial.last_result or {})
        if self.stopped_at_end:
            self.write()


class ProgressPrinter(Callback):
    """One line per evaluation and per finished trial.

    Subclasses name trials differently (`name`), key the trials that ended before this driver
    started differently (`key`: the trial id here) and count other units (`noun`).
    """

    noun = "trials"

    def __init__(self, *, max_epochs: int, num_samples: int, ended: frozenset[str] = frozenset()):
        self.max_epochs, self.num_samples = max_epochs, num_samples
        self.started = time.monotonic()
        self.before = ended  # trials that ended before this driver started (a resumed run): not shown
        self.ended = len(ended)

    def done_text(self) -> str:
        """`3/12 trials done`, or `3 trials done` when time, not a count, ends the search."""
        of = f"/{self.num_samples}" if self.num_samples < UNTIL_TIME_BUDGET else ""
        return f"{self.ended}{of} {self.noun} done"

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.started:6.0f}s] {text}", flush=True)

    def key(self, trial: Trial) -> str:
        return trial.trial_id

    def name(self, trial: Trial) -> str:
        number = trial.config.get(K.OPTUNA_NUMBER)
        return f"trial {number if number is not None else trial.trial_id}"

    def how(self, last: dict) -> str:
        """How a trial that ended without an error ended."""
        return "completed" if final_status(last) == COMPLETED else f"pruned by ASHA at epoch {last.get(M.EPOCH)}"

    def on_trial_result(self, iteration: int, trials: list[Trial], trial: Trial, result: dict,
                        **info: Any) -> None:
        if self.key(trial) in self.before:
            return
        self.say(f"{self.name(trial)} epoch {result.get(M.EPOCH)}/{self.max_epochs}  "
                  f"level-2 F1 {result.get(M.LEVEL2_MACRO_F1, float('nan')):.4f}  "
                  f"(best {result.get(M.BEST_LEVEL2_MACRO_F1, float('nan')):.4f})")

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        if self.key(trial) in self.before:
            return
        self.ended += 1
        last = trial.last_result or {}
        self.say(f"{self.name(trial)} {self.how(last)}, best level-2 F1 "
                  f"{last.get(M.BEST_LEVEL2_MACRO_F1, float('nan')):.4f}  "
                  f"[{self.done_text()}]")

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        if self.key(trial) in self.before:
            return
        self.ended += 1
        self.say(f"{self.name(trial)} failed: {error_message(trial)}  "
                  f"[{self.done_text()}]")
