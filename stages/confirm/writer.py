"""The one writer of RUN_DIR/confirm: job records, fold models, OOF files and confirm.csv.

`ConfirmStage` keeps jobs.json current as the network jobs run (it is the `JobSink` of
search/confirm_jobs.py: Ray reports to it, from the driver) and fits the linear member in this
process. A job is recorded completed only after its fold model and held-out probabilities are on
disk; a member's OOF file is written once all its jobs completed; confirm.csv after every change.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from model import metrics as M
from model.config import TrialConfig
from model.data import LabelSet, Vocab
from model.encoders import encoder_architecture
from model.errors import DataError
from model.inference import ModelInfo, save_model_dir
from model.linear import DEFAULT_GRID, INNER_FOLDS, fit_linear, linear_bytes
from results import confirm as C
from results.racing import fold_scores, verdicts
from rundir import keys as K
from rundir.confirm import (
    JOB_SCORES,
    LINEAR,
    NETWORK,
    OOF_PROBS,
    OOF_Y,
    RACED_OUT,
    ConfirmSpec,
    JobPlan,
    JobRecord,
    Member,
    job_id,
    parse_job_id,
    read_heldout,
    read_jobs,
    read_oof,
    write_heldout,
    write_jobs,
    write_oof,
)
from rundir.io import atomic_write_bytes, atomic_write_text
from rundir.paths import ConfirmFiles
from rundir.trials import COMPLETED, ERROR, RUNNING

if TYPE_CHECKING:  # annotations only: the stage's writer never imports Ray
    from search.confirm_jobs import FinishedJob
    from stages.confirm.plan import FoldData

Out = Callable[[str], Any]


class ConfirmStage:
    """The driver's side of a confirm stage: its plan (confirm.json), its job records (jobs.json)
    and the one writer of RUN_DIR/confirm. Small enough to travel in Ray's pickled Tuner state:
    it keeps the folds' vocabularies and held-out rows, not their encoded arrays."""

    def __init__(self, files: ConfirmFiles, spec: ConfirmSpec, *, plans: dict[str, JobPlan], vocabs: list[Vocab],
                 held_out: list[np.ndarray], y: np.ndarray, ids: np.ndarray, param_names: list[str]):
        self.files, self.spec, self.plans = files, spec, plans
        self.vocabs, self.held_out, self.y, self.ids = vocabs, held_out, y, ids
        self.labels = LabelSet.from_labels(spec.labels)
        self.param_names = param_names
        self.records: dict[str, JobRecord] = read_jobs(files.jobs_json)
        self._oof_f1: dict[str, float] = {}
        self.say: Out = print  # where a race decision is announced (the command's output)

    def __getstate__(self) -> dict[str, Any]:
        # Ray pickles the stage with the Tuner's callbacks; the command's output need not travel.
        return {k: v for k, v in self.__dict__.items() if k != "say"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.say = print

    def completed(self, job: str) -> bool:
        return job in self.records and self.records[job].completed

    def raced_out(self, job: str) -> bool:
        return job in self.records and self.records[job].status == RACED_OUT

    def settled(self, job: str) -> bool:
        """Nothing more is to happen to the job: completed, or raced out."""
        return job in self.records and self.records[job].settled

    def failed(self, job: str) -> bool:
        return job in self.records and self.records[job].status == ERROR

    def errors(self) -> list[str]:
        return [j for j, record in self.records.items() if record.status == ERROR]

    def save(self) -> None:
        write_jobs(self.files.jobs_json, self.records)

    def _record(self, job: str) -> JobRecord:
        if job not in self.records:
            member, fold, seed = parse_job_id(job)
            self.records[job] = JobRecord(member=member, fold=fold, seed=seed)
        return self.records[job]

    # --- network jobs (reported by search/confirm_jobs.py) ---

    def start(self, job: str) -> None:
        record = self._record(job)
        record.status, record.error = RUNNING, None
        self.save()

    def progress(self, job: str, result: Mapping[str, Any]) -> None:
        """Keep a running job's best evaluation so far, its time and where it trains."""
        record = self._record(job)
        record.time_s = round(float(result.get(K.TIME_TOTAL_S, 0.0)), 2)
        record.device = result.get(K.DEVICE, record.device)
        if result.get(K.GPU_MEM_PEAK_GB) is not None:
            record.gpu_mem_peak_gb = round(float(result[K.GPU_MEM_PEAK_GB]), 3)
        if result.get(M.EPOCH) is not None and result.get(M.EPOCH) == result.get(M.BEST_EPOCH):
            for key in JOB_SCORES:
                setattr(record, key, result.get(key))
            record.best_epoch = result[M.EPOCH]
        self.save()

    def complete(self, job: str, finished: FinishedJob | None) -> None:
        """Write the job's fold model and held-out probabilities from its best evaluation, then
        (and only then) record it as completed."""
        if finished is None:
            self.fail(job, "the job ended without a final checkpoint (Ray stopped it?); resume to continue it")
            return
        plan = self.plans[job]
        directory = self.files.model_dir(plan.member, plan.fold, plan.seed)
        config = TrialConfig.from_dict(plan.config)
        info = ModelInfo(config=config, vocab=self.vocabs[plan.fold], max_seq_len=self.spec.settings["max_seq_len"],
                         labels=self.labels, encoder_architecture=encoder_architecture(config))
        save_model_dir(directory, weights=finished.weights, info=info)
        write_heldout(self.files.heldout(directory), rows=self.held_out[plan.fold], probs=finished.dev_probs)
        record = self._record(job)
        for key in JOB_SCORES:
            setattr(record, key, float(finished.scores[key]))
        record.status, record.best_epoch, record.error = COMPLETED, finished.epoch, None
        record.model_dir = self.files.relative(directory)
        if finished.time_s is not None:
            record.time_s = round(float(finished.time_s), 2)
        self.save()
        self.member_done(plan.member)
        if self.spec.race is not None:
            self.race()

    def race(self) -> None:
        """`confirm --race`: race out the network members clearly below the best so far
        (results/racing.py); their jobs not completed are recorded raced out and never run."""
        folds, seeds = self.spec.folds, self.spec.seeds
        status = {m.name: C.member_status(self.records, m, folds=folds, seeds=seeds)
                  for m in self.spec.members if m.kind == NETWORK}
        # A member raced out before neither leads nor is judged again; complete ones may lead.
        scores = {m.name: fold_scores(self.records, m, folds=folds, seeds=seeds)
                  for m in self.spec.members if status.get(m.name, RACED_OUT) != RACED_OUT}
        racing = [name for name in scores if status[name] == C.PARTIAL]
        raced = verdicts(scores, racing, self.spec.race)
        for verdict in raced:
            skipped = [j for j in self.spec.member(verdict.member).jobs(folds=folds, seeds=seeds)
                       if not self.completed(j)]
            for job in skipped:
                record = self._record(job)
                record.status, record.note = RACED_OUT, verdict.note()
            self.save()
            self.say(f"{verdict.member} {verdict.note()}: its {len(skipped)} job(s) left will not run")
        if raced:
            self.write_table()

    def fail(self, job: str, message: str) -> None:
        record = self._record(job)
        record.status, record.error = ERROR, message
        self.save()
        self.write_table()

    # --- the linear member ---

    def fit_linear(self, data: FoldData, out: Out) -> None:
        """Fit the linear member on every fold it has not completed, in this process."""
        member = next((m for m in self.spec.members if m.kind == LINEAR), None)
        if member is None:
            return
        texts = data.frame["text"].to_numpy()
        for fold in range(self.spec.folds):
            if not self.completed(job_id(member.name, fold, 0)):
                self._fit_linear_fold(member, fold, texts, out)

    def _fit_linear_fold(self, member: Member, fold: int, texts: np.ndarray, out: Out) -> None:
        job = job_id(member.name, fold, 0)
        started = time.perf_counter()
        held_out = self.held_out[fold]
        train = np.setdiff1d(np.arange(len(texts)), held_out)
        try:
            linear = fit_linear(texts[train], self.y[train], num_labels=len(self.labels.level2),
                                seed=member.params["seed"], grid=DEFAULT_GRID, inner_folds=INNER_FOLDS)
        except DataError as err:  # e.g. a label with fewer training rows than the inner folds
            self.fail(job, f"DataError: {err}")
            out(f"linear fold {fold} failed: {err}")
            return
        probs = linear.predict_proba(texts[held_out])
        scores = M.classification_metrics(self.y[held_out], probs.argmax(axis=1), level1_of=self.labels.level1_of)
        atomic_write_bytes(self.files.linear_model(fold), linear_bytes(linear))  # arrays, no pickle
        write_heldout(self.files.heldout(self.files.linear_dir(fold)), rows=held_out, probs=probs)
        seconds = time.perf_counter() - started
        record = self._record(job)
        for key in JOB_SCORES:
            setattr(record, key, scores[key])
        record.status, record.best_epoch, record.time_s, record.device = COMPLETED, None, round(seconds, 2), "cpu"
        record.error, record.model_dir = None, self.files.relative(self.files.linear_dir(fold))
        self.save()
        out(f"linear fold {fold}: level-2 F1 {scores[M.LEVEL2_MACRO_F1]:.4f} ({seconds:.1f}s)")
        self.member_done(member.name)

    # --- outputs ---

    def member_complete(self, member: Member) -> bool:
        return C.member_complete(self.records, member, folds=self.spec.folds, seeds=self.spec.seeds)

    def member_done(self, name: str) -> None:
        """Write the member's OOF file if all its jobs completed, then confirm.csv."""
        member = self.spec.member(name)
        if self.member_complete(member):
            self.write_oof(member)
        self.write_table()

    def write_oof(self, member: Member) -> None:
        """oof/<member>.npz from its jobs' held-out probabilities, averaged over seeds."""
        parts = []
        for job in member.jobs(folds=self.spec.folds, seeds=self.spec.seeds):
            record = self.records[job]
            rows, probs = read_heldout(self.files.heldout(self.files.root / record.model_dir))
            parts.append((record.fold, rows, probs))
        probs, fold_of = C.assemble_oof(parts, rows=len(self.y))
        write_oof(self.files.oof(member.name), probs=probs, fold_of=fold_of, y=self.y, ids=self.ids)
        self._oof_f1.pop(member.name, None)

    def oof_f1(self) -> dict[str, float]:
        """Pooled level-2 macro-F1 of each member's OOF file (as written: float16)."""
        from results.ensemble import macro_f1

        for member in self.spec.members:
            path = self.files.oof(member.name)
            if member.name not in self._oof_f1 and path.exists():
                oof = read_oof(path)
                self._oof_f1[member.name] = macro_f1(oof[OOF_Y], oof[OOF_PROBS].argmax(axis=1),
                                                     num_labels=len(self.labels.level2))
        return self._oof_f1

    def table(self) -> pd.DataFrame:
        return C.confirm_table(self.records, self.spec.members, folds=self.spec.folds, seeds=self.spec.seeds,
                                   param_names=self.param_names, oof_f1=self.oof_f1())

    def write_table(self) -> pd.DataFrame:
        frame = self.table()
        atomic_write_text(self.files.confirm_csv, frame.to_csv(index=False, lineterminator="\n"))
        return frame

    def finish(self) -> pd.DataFrame:
        """Write what a kill may have left unwritten (OOF files of complete members), then confirm.csv."""
        for member in self.spec.members:
            if self.member_complete(member) and not self.files.oof(member.name).exists():
                self.write_oof(member)
        return self.write_table()

    def network_jobs(self) -> list[str]:
        return self.spec.jobs(NETWORK)
