"""`python -m search pipeline`: from a training file to a submission within a wall-time budget.

One run directory, the stages in order, each the project's own command:

    vectors   word vectors for a space of word-vector encoders that names no checkpoint (`embed`,
              on the training and test texts), and token-pair vectors with --bigrams (the default
              for such a space: `default_bigrams`), else skipped
    search    `launch` until its share of the budget is spent (`--time-budget`: search/deadline.py)
    confirm   the top K completed trials on every fold, K sized from their measured search times
              so that the stage fits its share (K 0, the linear member alone, when the search
              completed none), the first of them in the bigram view too with --bigrams;
              unfinished jobs at its end are left out
    ensemble  `ensemble` over the members confirm completed
    predict   `predict` of the test file with the ensemble

The budget rule (`end_reserve`, `search_share`, `confirm_share`, `confirm_size`): a reserve for
ensemble and predict is set aside first (END_RESERVE_SHARE of the budget, at least
END_RESERVE_MIN_S); the vectors stage runs (it
takes seconds); the search gets SEARCH_SHARE of what is left; confirm gets everything but the
reserve. Each stage's share is decided when it starts, from what the stages before it actually
spent, so a fast stage leaves its time to the next ones. pipeline.json (rundir/pipeline.py) keeps
the plan and each stage's spent seconds, current to a few seconds while it runs: `python -m search
resume RUN_DIR` continues at the stage a kill interrupted, with the budget that is left, and never
runs a finished stage again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import math
import shlex
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from model.config import TrialConfig
from model.errors import ConfigError
from results.ranking import rank_records
from rundir.confirm import DEFAULT_BIGRAM_TOP, DEFAULT_FOLDS, EnsembleRecord
from rundir.inputs import space_of
from rundir.io import check_output_file
from rundir.paths import RunFiles, run_files
from rundir.pipeline import (
    BIGRAM_COST,
    CONFIRM_FILL,
    DONE,
    END_RESERVE_MIN_S,
    END_RESERVE_SHARE,
    MAX_TOP,
    MIN_BUDGET_S,
    PIPELINE_SPACE,
    RUNNING,
    SEARCH_SHARE,
    SKIPPED,
    PipelineRecord,
    StageRecord,
)
from rundir.settings import UNTIL_TIME_BUDGET, Settings
from rundir.trials import COMPLETED, load_records
from spaces.space import SearchSpace, resolve_space_path

Out = Callable[[str], Any]

HEARTBEAT_S = 10.0  # how often the running stage's spent seconds reach pipeline.json
ETA_EVERY_S = 300.0  # how often a line says where the pipeline stands


def end_reserve(budget_s: float) -> float:
    return max(END_RESERVE_MIN_S, END_RESERVE_SHARE * budget_s)


def search_share(record: PipelineRecord) -> float:
    """The search's seconds: SEARCH_SHARE of what is left after the stages before it and the reserve."""
    left = record.budget_s - record.spent_s - end_reserve(record.budget_s)
    return max(60.0, SEARCH_SHARE * left)


def confirm_share(record: PipelineRecord) -> float:
    """Confirm's seconds: what is left but the end reserve."""
    return max(60.0, record.budget_s - record.spent_s - end_reserve(record.budget_s))


@dataclasses.dataclass(frozen=True)
class ConfirmSize:
    top: int
    job_s: float  # the mean measured seconds of one job of the configs taken (their full-budget trials)
    slots: int
    fits: int  # jobs of that length that fit the share
    bigram_top: int = 0  # of them, the first confirmed again in the bigram view (`pipeline --bigrams`)


def confirm_size(run_dir: Path, *, share_s: float, folds: int, slots: int, max_top: int, bigram_top: int = 0
                 ) -> ConfirmSize:
    """How many configs confirm can retrain on every fold within `share_s`. Confirm takes the first
    K completed trials in leaderboard order, and a fold job of one costs what that trial took in the
    search: the same config and budget (in the two 1-hour runs of docs/results.md each member's
    confirm jobs took 0.91-1.08 times its search trial, while the 75th percentile of all completed
    trials, which sized confirm before, was 1.23 and 1.59 times the members' mean: the second run's
    confirm took 5 configs and used 16 of its 34 minutes). K is the most configs, up to
    `max_top` and at least 1, whose jobs, `slots` at a time, fill at most CONFIRM_FILL of the stage.
    Top 0 when the search completed no trial: confirm then fits the linear member alone.

    `bigram_top`: the first configs' bigram twins (`confirm --bigrams`, BIGRAM_COST times their
    configs' jobs) are planned first, as many as fit up to `bigram_top`, then the other configs:
    on the real data two twins added more to the ensemble than the configs after the fifth did
    (docs/results.md)."""
    ranked = [r for r in rank_records(load_records(RunFiles(run_dir)).values()) if r.status == COMPLETED][:max_top]
    if not ranked:
        return ConfirmSize(top=0, job_s=0.0, slots=slots, fits=0)
    capacity = slots * share_s * CONFIRM_FILL  # slot-seconds the planned jobs may take
    cost = [folds * max(record.time_s or 0.0, 1.0) for record in ranked]  # of each config's token jobs

    def planned_with(twins: int) -> float:
        return (1 + BIGRAM_COST) * sum(cost[:twins]) + sum(cost[twins:max(twins, 1)])

    twins = next(b for b in range(min(bigram_top, len(ranked)), -1, -1) if b == 0 or planned_with(b) <= capacity)
    top, planned = max(twins, 1), planned_with(twins)
    for extra in cost[top:]:
        if planned + extra > capacity:
            break
        top, planned = top + 1, planned + extra
    job_s = sum(cost[:top]) / (top * folds)
    return ConfirmSize(top=top, job_s=job_s, slots=slots, fits=int(capacity // job_s), bigram_top=twins)


NO_NETWORK_NOTE = "the linear member alone: the search completed no trial"


def confirm_plan_line(size: ConfirmSize, *, folds: int, left_s: float) -> str:
    if not size.top:
        return (f"[pipeline] confirm: the search completed no trial within its share, so the submission comes from "
                f"the linear member alone ({folds} folds); a longer --budget, or a space whose trials are shorter "
                "(fewer epochs), gives network members")
    twins = f", and the first {size.bigram_top} again in the bigram view" if size.bigram_top else ""
    return (f"[pipeline] confirm: top {size.top} x {folds} folds{twins} in {_minutes(left_s)} (their trials took "
            f"{size.job_s:.0f} s on average in the search, {size.slots} jobs at a time)")


def wordvec_only(space: SearchSpace) -> bool:
    """Every encoder the space can draw is a word-vector encoder."""
    from model.components import registry
    from model.wordvec_encoders import WordVecEncoder

    default = TrialConfig.__dataclass_fields__["encoder"].default
    encoders = {draw.get("encoder", space.fixed.get("encoder", default)) for draw in space.draws(("encoder",))}
    return all(issubclass(registry("encoder").get_class(name), WordVecEncoder) for name in encoders)


def needs_vectors(space: SearchSpace, settings: Settings) -> bool:
    """The space trains only word-vector encoders and names no checkpoint for them (fixed, searched
    or --set): the pipeline trains the vectors for it."""
    named = bool(space.fixed.get("checkpoint")) or "checkpoint" in space.searched  # --set is in `fixed` too
    return not named and wordvec_only(space)


# ----------------------------------------------------------------------------- the clock


class Clock:
    """The pipeline's time: what earlier sessions spent plus this one's, per stage, kept current in
    pipeline.json by a heartbeat thread, and a line on where it stands every ETA_EVERY_S."""

    def __init__(self, record: PipelineRecord, path: Path, out: Out):
        self.record, self.path, self.out = record, path, out
        self.stage: StageRecord | None = None
        self.stage_started = 0.0
        self.spent_before = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._last_eta = time.monotonic()

    @contextlib.contextmanager
    def running(self, stage: StageRecord, planned_s: float | None) -> Iterator[None]:
        with self._lock:
            self.stage, self.stage_started, self.spent_before = stage, time.monotonic(), stage.spent_s
            stage.status, stage.planned_s = RUNNING, planned_s if stage.planned_s is None else stage.planned_s
            self.record.save(self.path)
        beat = threading.Thread(target=self._beat, daemon=True)
        beat.start()
        try:
            yield
        finally:
            self._stop.set()
            beat.join()
            self._stop.clear()
            with self._lock:
                self._tick()
                self.stage = None

    def done(self, stage: StageRecord, note: str | None = None) -> None:
        stage.status, stage.note = DONE, note if note is not None else stage.note
        self.record.save(self.path)

    def _tick(self) -> None:
        if self.stage is not None:
            self.stage.spent_s = round(self.spent_before + time.monotonic() - self.stage_started, 1)
            self.record.save(self.path)

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            with self._lock:
                self._tick()
                if time.monotonic() - self._last_eta >= ETA_EVERY_S:
                    self._last_eta = time.monotonic()
                    self.out(self.eta_line())

    def eta_line(self) -> str:
        record, stage = self.record, self.stage
        left = record.budget_s - record.spent_s
        where = ""
        if stage is not None and stage.planned_s is not None:
            where = f"; {stage.name} has about {_minutes(max(0.0, stage.planned_s - stage.spent_s))} left"
        ends = dt.datetime.now() + dt.timedelta(seconds=max(0.0, left))
        return (f"[pipeline] {_minutes(record.spent_s)} of {_minutes(record.budget_s)} spent{where}; "
                f"the budget ends about {ends:%H:%M}")


def _minutes(seconds: float) -> str:
    """1h05m, 12m, or 2m05s under ten minutes."""
    if seconds < 600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    minutes = round(seconds / 60)
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m"


# ----------------------------------------------------------------------------- stages


@dataclasses.dataclass
class Pipeline:
    """One pipeline run: its settings (the search's), record and clock."""

    settings: Settings
    files: RunFiles
    record: PipelineRecord
    clock: Clock
    out: Out

    def run_vectors(self) -> None:
        stage = self.record.stage("vectors")
        space = space_of(self.settings)
        tokens = needs_vectors(space, self.settings)
        if not tokens and not self.record.bigrams:
            stage.status, stage.note = SKIPPED, "the space names no word-vector encoder without a checkpoint"
            self.record.save(self.files.pipeline_json)
            return
        from model.datafiles import resolve_train_path
        from model.wordvec import WordVecConfig
        from stages.embed import run_embed

        corpus = [str(resolve_train_path(self.settings.data)), self.record.test] if self.settings.data else \
            [self.record.test]
        # (view, what makes it, flags, directory, where the record keeps it)
        wanted = [("tokens", WordVecConfig(seed=self.settings.seed), [], self.files.vectors_dir, "vectors")] * tokens
        if self.record.bigrams:  # pairs seen once are noise: --min-count 2 (58,684 pairs on the real text)
            wanted.append(("bigrams", WordVecConfig(seed=self.settings.seed, view="bigrams", min_count=2),
                           ["--view", "bigrams", "--min-count", "2"], self.files.pairs_dir, "pairs"))
        with self.clock.running(stage, planned_s=None):
            for _, cfg, flags, directory, _ in wanted:
                run_embed(cfg, corpus, directory, threads=1, quiet=True, hint=False,
                          command=["python", "-m", "search", "embed", "--corpus", *corpus, "--out", str(directory),
                                   *flags])
        for _, _, _, directory, key in wanted:
            setattr(self.record, key, str(directory.resolve()))
        self.clock.done(stage, f"word2vec ({' and '.join(view for view, *_ in wanted)}) on {len(corpus)} file(s)")

    def search_settings(self) -> Settings:
        sets = tuple(self.settings.sets)
        if self.record.vectors:
            sets += (f"checkpoint={self.record.vectors}",)
        return dataclasses.replace(self.settings, sets=sets, num_samples=UNTIL_TIME_BUDGET)

    def run_search(self) -> None:
        from search.driver import has_experiment_state, launch, resume

        stage = self.record.stage("search")
        share = stage.planned_s if stage.planned_s is not None else search_share(self.record)
        with self.clock.running(stage, planned_s=share):
            left = max(30.0, share - stage.spent_s)
            self.out(f"[pipeline] search: {_minutes(left)} (its time budget), then confirm")
            settings = dataclasses.replace(self.search_settings(), time_budget_s=left)
            if has_experiment_state(settings, self.files):
                resume(self.files.root, time_budget_s=left, out=self.say)
            else:
                launch(settings, keep=frozenset({"pipeline.json", "vectors", "pairs"}), out=self.say)
        records = load_records(self.files).values()
        self.clock.done(stage, f"{len(records)} trials, {sum(r.status == COMPLETED for r in records)} completed")

    def run_confirm(self) -> None:
        from search.session import concurrency, ray_session
        from stages.confirm.run import confirm, resume_confirm

        stage = self.record.stage("confirm")
        share = stage.planned_s if stage.planned_s is not None else confirm_share(self.record)
        with self.clock.running(stage, planned_s=share):
            left = max(30.0, share - stage.spent_s)
            if self.files.confirm.confirm_json.exists():
                self.out(f"[pipeline] confirm: continuing, {_minutes(left)} left")
                resume_confirm(self.files.root, time_budget_s=left, out=self.say)
            else:
                with ray_session(self.settings.address, log_dir=self.files.root):
                    size = confirm_size(self.files.root, share_s=left, folds=self.record.folds,
                                        slots=concurrency(self.settings), max_top=self.record.max_top,
                                        bigram_top=DEFAULT_BIGRAM_TOP if self.record.pairs else 0)
                    self.out(confirm_plan_line(size, folds=self.record.folds, left_s=left))
                    stage.note = f"top {size.top} x {self.record.folds} folds" if size.top else NO_NETWORK_NOTE
                    argv = ["confirm", str(self.files.root), "--top", str(size.top)]
                    twins = {}
                    if size.bigram_top:
                        stage.note += f" + {size.bigram_top} in the bigram view"
                        twins = dict(bigrams=self.record.pairs, bigram_top=size.bigram_top)
                        argv += ["--bigrams", str(self.record.pairs), "--bigram-top", str(size.bigram_top)]
                    confirm(self.files.root, top=size.top, folds=self.record.folds, time_budget_s=left, argv=argv,
                            out=self.say, **twins)
        self.clock.done(stage)

    def run_ensemble(self) -> EnsembleRecord:
        from stages.ensemble import run_ensemble

        stage = self.record.stage("ensemble")
        with self.clock.running(stage, planned_s=None):
            chosen = run_ensemble(self.files.root, partial=True, out=self.say)
        self.clock.done(stage, f"nested level-2 macro-F1 {chosen.nested_score:.4f}")
        return chosen

    def run_predict(self) -> None:
        from stages.predict import run_predict

        stage = self.record.stage("predict")
        with self.clock.running(stage, planned_s=None):
            run_predict(self.files.root, data=self.record.test, out_path=self.record.out, batch_size=256, device=None,
                        progress=False, out=self.say)
        self.clock.done(stage)

    def say(self, line: str) -> None:
        """The stages' lines, but their `next: ...` hints: the pipeline runs the next stage itself."""
        if not line.startswith("next: "):
            self.out(line)

    def run(self) -> PipelineRecord:
        steps = {"vectors": self.run_vectors, "search": self.run_search, "confirm": self.run_confirm,
                 "ensemble": self.run_ensemble, "predict": self.run_predict}
        while (stage := self.record.current()) is not None:
            steps[stage.name]()
        self.out(summary(self.record, self.files))
        return self.record


# ----------------------------------------------------------------------------- entry points


def start_pipeline(settings: Settings, *, test: str | Path, out_path: str | Path, budget_s: float,
                   folds: int = DEFAULT_FOLDS, max_top: int = MAX_TOP, bigrams: bool | None = None,
                   argv: list[str] | None = None, out: Out = print) -> PipelineRecord:
    """Run a new pipeline (see the module docstring) into RUN_DIR = <storage-path>/<name>. `bigrams`
    None: the bigram view's twins wherever the space allows them (`default_bigrams`)."""
    settings = with_default_space(settings)
    if bigrams is None:
        bigrams = default_bigrams(settings)
    check_request(settings, test=test, out_path=out_path, budget_s=budget_s, folds=folds, max_top=max_top,
                  bigrams=bigrams)
    space_path = resolve_space_path(settings.space)
    name = settings.name or f"pipeline-{space_path.stem}-{dt.datetime.now():%Y%m%d-%H%M%S}"
    files = run_files(settings.storage_path, name)
    if files.root.exists():
        raise ConfigError(f"{files.root} already exists: continue it with `python -m search resume {files.root}`, "
                          "or pick another --name")
    settings = dataclasses.replace(settings, name=name)
    files.root.mkdir(parents=True)
    record = PipelineRecord(budget_s=budget_s, test=str(Path(test).resolve()), out=str(Path(out_path).resolve()),
                            folds=folds, max_top=max_top, bigrams=bigrams, settings=dataclasses.asdict(settings),
                            created=dt.datetime.now().astimezone().isoformat(timespec="seconds"),
                            command=shlex.join(["python", "-m", "search", *(argv or ["pipeline"])]))
    record.save(files.pipeline_json)
    out(f"RUN_DIR {files.root}")
    out(plan_text(record))
    return Pipeline(settings, files, record, Clock(record, files.pipeline_json, out), out).run()


def resume_pipeline(run_dir: str | Path, *, out: Out = print) -> PipelineRecord:
    """Continue the pipeline in `run_dir` at the first stage it has not finished."""
    files = RunFiles(Path(run_dir))
    record = PipelineRecord.load(files.pipeline_json)
    settings = _settings_of(record, files)
    stage = record.current()
    out(f"RUN_DIR {files.root}")
    out(f"resuming the pipeline at {stage.name if stage else 'its summary'}: {_minutes(record.spent_s)} of "
        f"{_minutes(record.budget_s)} spent")
    return Pipeline(settings, files, record, Clock(record, files.pipeline_json, out), out).run()


def with_default_space(settings: Settings) -> Settings:
    """The settings a pipeline searches with: PIPELINE_SPACE where no --space was given."""
    return settings if settings.space is not None else dataclasses.replace(settings, space=PIPELINE_SPACE)


def default_bigrams(settings: Settings) -> bool:
    """`pipeline` without --bigrams or --no-bigrams: the bigram twins for a space of word-vector
    encoders only. On the real data they were the one addition that lifted the ensemble (nested
    0.5547 with them against 0.547-0.549 in the 1-hour runs without, docs/results.md)."""
    try:
        return wordvec_only(space_of(settings))
    except ConfigError:
        return False  # a bad space: check_request says what is wrong with it


def pipeline_pending(run_dir: str | Path) -> bool:
    files = RunFiles(Path(run_dir))
    return files.pipeline_json.exists() and not PipelineRecord.load(files.pipeline_json).finished


def check_request(settings: Settings, *, test: str | Path, out_path: str | Path, budget_s: float, folds: int,
                  max_top: int, bigrams: bool = False) -> None:
    """Everything that can be refused before any work: the budget, the test file, the output."""
    from model.data import read_table
    from rundir import preflight

    if not (math.isfinite(budget_s) and budget_s >= MIN_BUDGET_S):
        raise ConfigError(f"--budget is {budget_s:.0f} s, but a pipeline needs at least {MIN_BUDGET_S / 60:.0f} "
                          "minutes (a search, confirm on every fold, an ensemble and a prediction); pass e.g. "
                          "--budget 30m")
    if folds < 2 or max_top < 1:
        raise ConfigError(f"--folds is {folds} and --max-top {max_top}: pass --folds >= 2 and --max-top >= 1")
    preflight.check_settings(settings)
    preflight.check_data_flags(settings)
    if bigrams and not wordvec_only(space_of(settings)):
        raise ConfigError(f"--bigrams confirms configs again reading token pairs, which only the word-vector "
                          f"encoders (textcnn, dpcnn, bigru, bilstm) do, but {settings.space} can draw others; pass "
                          "--space cpu or drop --bigrams")
    read_table(test, columns=("id", "text"))
    check_output_file(out_path, Path(settings.storage_path) / (settings.name or "pipeline-"), flag="--out")


def _settings_of(record: PipelineRecord, files: RunFiles) -> Settings:
    """The search's settings the pipeline was started with; its run directory is where it is now."""
    try:
        settings = Settings(**record.settings)
    except TypeError as err:
        from rundir.io import damaged

        raise damaged(files.pipeline_json, f"its `settings` are not ones this version reads ({err})") from None
    return dataclasses.replace(settings, storage_path=str(files.root.parent), name=files.root.name)


def plan_text(record: PipelineRecord) -> str:
    reserve = end_reserve(record.budget_s)
    return (f"plan: {_minutes(record.budget_s)} in all; ensemble and predict keep {_minutes(reserve)} at the end; "
            f"the search gets {SEARCH_SHARE:.0%} of the rest, confirm what the search leaves (the top configs that "
            f"fit, up to {record.max_top}, x {record.folds} folds"
            + (f"; the first {DEFAULT_BIGRAM_TOP} also in the bigram view, planned first)" if record.bigrams else ")"))


def summary(record: PipelineRecord, files: RunFiles) -> str:
    from tabulate import tabulate

    reserve = end_reserve(record.budget_s)
    rows = [[s.name, s.status, "" if s.planned_s is None else _minutes(s.planned_s), _minutes(s.spent_s),
             s.note or ""] for s in record.stages]
    rows.append(["ensemble + predict", "", f"{_minutes(reserve)} kept", _minutes(
        record.stage("ensemble").spent_s + record.stage("predict").spent_s), ""])
    lines = ["", tabulate(rows, headers=["stage", "status", "planned", "spent", ""], tablefmt="simple")]
    if files.confirm.ensemble_json.exists():
        chosen = EnsembleRecord.load(files.confirm.ensemble_json)
        members = ", ".join(f"{m} x{w:g}" for m, w in zip(chosen.members, chosen.weights, strict=True) if w)
        lines.append(f"\nensemble: {members}; nested level-2 macro-F1 {chosen.nested_score:.4f} "
                     f"({np.mean(chosen.fold_scores):.4f} +- {np.std(chosen.fold_scores, ddof=1):.4f} over folds)")
    left = record.budget_s - record.spent_s
    lines.append(f"submission: {record.out}")
    lines.append(f"time: {_minutes(record.spent_s)} of the {_minutes(record.budget_s)} budget"
                 + (f"; {_minutes(left)} left" if left > 0 else f"; over by {_minutes(-left)}"))
    return "\n".join(lines)
