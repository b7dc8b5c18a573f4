"""`python -m search predict RUN_DIR`: from fold models to a submission (no Ray).

Runs fold models on a test file: the ensemble `ensemble` chose (RUN_DIR/confirm/ensemble.json),
one confirmed member (the mean over its fold models), or one search trial's best checkpoint, and
writes `id,label` in input order (and, with --probs, the scores the labels are the argmax of).
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from model.errors import ConfigError, DamagedFile, DataError
from results.confirm import COMPLETE
from results.ensemble import EnsembleResult, combine, macro_f1
from results.ensemble import predict as ensemble_predict
from rundir.confirm import CONFIRM_COMMAND, ENSEMBLE_COMMAND, RACED_OUT, RESUME_COMMAND, EnsembleRecord
from rundir.io import atomic_write_bytes, atomic_write_text, damaged, in_run
from rundir.paths import LINEAR_FILE, OLD_LINEAR_FILE, TRIAL_STATE_FILE
from rundir.relocation import trial_checkpoint_dir
from stages.confirm.reader import ConfirmRun, load_confirm
from stages.ensemble import OPTION_TEXT, file_sha256, weights_text

Out = Callable[[str], Any]


class FoldModel:
    """One trained model of a member; `scores(texts)` -> (N, C) probabilities, columns in label order."""

    description: str

    def scores(self, texts: list[str], *, labels: tuple[str, ...], device, batch_size: int,
               progress: bool) -> np.ndarray:
        raise NotImplementedError


def _check_labels(have: Sequence[str], want: Sequence[str], what: str) -> None:
    if tuple(have) != tuple(want):
        raise ConfigError(f"{what} predicts labels {', '.join(have[:5])}... ({len(have)}), but the ensemble's are "
                          f"{', '.join(want[:5])}... ({len(want)}): the models come from different data; rerun "
                          "confirm and ensemble on one run")


@dataclass(frozen=True)
class NetworkDir(FoldModel):
    """A model directory (model.inference.save_model_dir): its own vocabulary encodes the texts."""

    path: Path

    @property
    def description(self) -> str:
        return str(self.path)

    def scores(self, texts, *, labels, device, batch_size, progress):
        from model.inference import encode_texts, load_model_dir, probabilities

        try:
            model, info = load_model_dir(self.path, device=device)
        except DamagedFile as err:
            raise in_run(err) from None
        _check_labels(info.labels.level2, labels, str(self.path))
        split = encode_texts(texts, info.vocab, max_seq_len=info.max_seq_len)  # unseen tokens -> [UNK]
        return probabilities(model, split, batch_size=batch_size, device=device, progress=progress)


@dataclass(frozen=True)
class LinearFile(FoldModel):
    """A linear member's arrays (model.linear.linear_bytes: TF-IDF over the raw texts + LinearSVC), no pickle."""

    path: Path

    @property
    def description(self) -> str:
        return str(self.path)

    def scores(self, texts, *, labels, device, batch_size, progress):
        from model.linear import load_linear

        old = self.path.with_name(OLD_LINEAR_FILE)
        if not self.path.exists() and old.is_file():
            raise ConfigError(f"{old} is a pickle written by an earlier version, which predict does not load (loading "
                              "a pickle can run code); retrain the stage with `python -m search confirm RUN_DIR "
                              "--force`, or pick a network member with --use confirmed:NAME")
        try:
            member = load_linear(self.path)
        except DamagedFile as err:
            raise in_run(err) from None
        if member.num_labels != len(labels):
            raise damaged(self.path, f"it predicts {member.num_labels} labels, but the stage has {len(labels)}")
        return member.predict_proba(texts)


@dataclass(frozen=True)
class TrialCheckpoint(FoldModel):
    """A search trial's best checkpoint (state.pt of a `TrainState`), rebuilt with the run's config and vocabulary."""

    path: Path  # the checkpoint directory
    config: Any  # TrialConfig
    vocab: Any  # model.data.Vocab of the run's split
    max_seq_len: int
    labels: Any  # model.data.LabelSet

    @property
    def description(self) -> str:
        return str(self.path)

    def scores(self, texts, *, labels, device, batch_size, progress):
        import torch

        from model.inference import encode_texts, probabilities
        from model.network import build_for_weights
        from model.train import scored_weights

        state = torch.load(self.path / TRIAL_STATE_FILE, weights_only=True, map_location="cpu")
        weights = scored_weights(state)
        model = build_for_weights(self.config, weights, vocab=self.vocab.tokens, max_seq_len=self.max_seq_len,
                                  num_labels=len(self.labels.level2), num_level1=len(self.labels.level1))
        model.load_state_dict(weights)
        split = encode_texts(texts, self.vocab, max_seq_len=self.max_seq_len)
        return probabilities(model.to(device), split, batch_size=batch_size, device=device, progress=progress)


@dataclass(frozen=True)
class PlanMember:
    name: str
    weight: float
    folds: tuple[FoldModel, ...]  # their probabilities are averaged


@dataclass(frozen=True)
class Plan:
    """What `predict` runs: members with weight > 0 (member-rank order), how they combine, the labels."""

    description: str
    members: tuple[PlanMember, ...]
    method: str
    labels: tuple[str, ...]

    @property
    def fold_models(self) -> int:
        return sum(len(m.folds) for m in self.members)


def member_fold_models(run: ConfirmRun, name: str) -> tuple[FoldModel, ...]:
    """The fold models of a complete member, from jobs.json (folds, then seeds)."""
    if run.is_linear(name):
        return tuple(LinearFile(path if path.suffix == ".npz" else path / LINEAR_FILE)
                     for path in run.fold_model_dirs(name))
    return tuple(NetworkDir(path) for path in run.fold_model_dirs(name))


def require_complete_member(run: ConfirmRun, name: str) -> None:
    state, why = run.state(name)
    if state == RACED_OUT:
        raise ConfigError(f"confirmed member {name} was {why}; it has no model for every fold: pick the ensemble "
                          "or a complete member with --use")
    if state != COMPLETE:
        raise ConfigError(f"confirmed member {name} is not complete ({why}): resume confirm with "
                          f"`{RESUME_COMMAND.format(run_dir=run.files.run_dir)}`, or pick another with --use")


def _fold_summary(run: ConfirmRun, name: str, models: tuple[FoldModel, ...]) -> str:
    jobs = [job for _, job in run.member_jobs(name)]
    folds, seeds = len({j.fold for j in jobs}), len({j.seed for j in jobs})
    return f"{len(models)} fold models ({folds} folds x {seeds} seed{'s' if seeds != 1 else ''})"


def confirmed_plan(run_dir: str | Path, name: str, *, note: str = "") -> Plan:
    run = load_confirm(run_dir)
    if name not in {m.name for m in run.members}:
        raise ConfigError(f"--use confirmed:{name}: {name!r} is not a member of {run.files.confirm_json}; pass one "
                          f"of: {', '.join(run.rank_order())} (best first)")
    require_complete_member(run, name)
    models = member_fold_models(run, name)
    description = (f"confirmed member {name} ({run.member(name).kind}{note}): mean of "
                   f"{_fold_summary(run, name, models)}")
    return Plan(description=description, members=(PlanMember(name=name, weight=1.0, folds=models),),
                method="prob", labels=run.labels)


def ensemble_plan(run_dir: str | Path) -> Plan:
    run = load_confirm(run_dir)
    if not run.files.ensemble_json.is_file():
        raise ConfigError(f"{run.files.ensemble_json} does not exist: run "
                          f"`{ENSEMBLE_COMMAND.format(run_dir=run_dir)}` first, or pick a model with --use "
                          "confirmed:NAME or trial:ID")
    record = EnsembleRecord.load(run.files.ensemble_json)
    result = EnsembleResult.from_dict(record.to_dict())
    if record.labels != run.labels:
        raise damaged(run.files.ensemble_json, "it was chosen over other labels than confirm.json's")
    foreign = [name for name in record.members if name not in {m.name for m in run.members}]
    if foreign:
        raise damaged(run.files.ensemble_json, f"member(s) {', '.join(foreign)} are not members of confirm.json")
    stale = [name for name, digest in record.oof_sha256.items()
             if not run.files.oof(name).is_file() or file_sha256(run.files.oof(name)) != digest]
    if stale:
        raise ConfigError(f"{run.files.ensemble_json} was chosen on out-of-fold predictions that changed since "
                          f"(of {', '.join(stale)}: was confirm run again?): rerun "
                          f"`{ENSEMBLE_COMMAND.format(run_dir=run_dir)}`")
    members = []
    for name, weight in zip(result.members, result.weights, strict=True):
        if weight > 0:
            require_complete_member(run, name)
            members.append(PlanMember(name=name, weight=float(weight), folds=member_fold_models(run, name)))
    option = record.option
    plan = Plan(description="", members=tuple(members), method=result.method, labels=run.labels)
    description = (f"ensemble {option} ({OPTION_TEXT.get(option, result.method)}) of "
                   f"{weights_text(result.members, result.weights)}: {plan.fold_models} fold models "
                   f"(nested level-2 macro-F1 {result.nested_score:.4f})")
    return Plan(description=description, members=plan.members, method=plan.method, labels=plan.labels)


def trial_plan(run_dir: str | Path, ident: str | None) -> Plan:
    """A search trial's best checkpoint: `ident` is its trial id or Optuna number; None = leaderboard rank 1."""
    from model import metrics as M
    from results.export import run_leaderboard
    from rundir.inputs import load_data, space_of
    from rundir.paths import RunFiles
    from rundir.record import read_run
    from rundir.settings import Settings
    from rundir.trials import load_records

    files = RunFiles(Path(run_dir))
    frame = run_leaderboard(run_dir)  # a clear error for a non-run directory
    if frame.empty:
        raise ConfigError(f"{run_dir} has no trials yet: wait for the search, or pick --use ensemble / confirmed:NAME")
    if ident is None:
        row = frame.iloc[0]
    else:
        hits = frame[frame["trial_id"] == ident]  # a Ray trial id first, else an Optuna number ("3" or "trial-3")
        number = ident.removeprefix("trial-")
        if hits.empty and number.isdigit():
            hits = frame[frame["optuna_number"] == int(number)]
        if hits.empty:
            raise ConfigError(f"--use trial:{ident}: no trial of {run_dir} has that trial id or Optuna number; "
                              f"its trials: {', '.join(frame['trial_id'].head(10))}"
                              + (" ..." if len(frame) > 10 else ""))
        row = hits.iloc[0]
    trial_id = row["trial_id"]
    if not isinstance(row["checkpoint"], str) or not row["checkpoint"]:
        raise ConfigError(f"trial {trial_id} has no checkpoint yet (status {row['status']}): pick another "
                          f"with --use trial:ID (see `python -m search status {run_dir}`)")
    checkpoint = trial_checkpoint_dir(files, trial_id, row["checkpoint"])
    run = read_run(files)
    record = load_records(files)[trial_id]
    try:
        settings = Settings(**run["settings"])
    except (KeyError, TypeError) as err:
        raise ConfigError(f"{files.run_json} is not a run record this version can read ({err!r}); use a confirmed "
                          "member or the ensemble instead (--use confirmed:NAME, --use ensemble)") from None
    space = space_of(settings, files.space_yaml)  # with the run's --sets
    cfg = space.config(record.params, max_epochs=run["max_epochs"], seed=run["seed"])
    data = load_data(settings)  # the run's split: its vocabulary and labels
    model = TrialCheckpoint(path=checkpoint, config=cfg, vocab=data.vocab, max_seq_len=data.max_seq_len,
                            labels=data.labels)
    description = (f"trial {trial_id} (Optuna #{row['optuna_number']}, leaderboard rank {row['rank']}, "
                   f"{row['status']}): its best checkpoint, epoch {row[M.BEST_EPOCH]:g}, level-2 macro-F1 "
                   f"{row[M.LEVEL2_MACRO_F1]:.4f} on fold {run['fold']}")
    return Plan(description=description, members=(PlanMember(name=trial_id, weight=1.0, folds=(model,)),),
                method="prob", labels=tuple(data.labels.level2))


USE_FORMS = "ensemble, confirmed:NAME, trial:ID"


def resolve_plan(run_dir: str | Path, use: str | None) -> Plan:
    """--use: `ensemble`, `confirmed:NAME`, `trial:ID`; None = the ensemble if ensemble.json exists,
    else the best complete confirmed member (confirm.csv's order), else the leaderboard's rank 1."""
    from rundir.paths import ConfirmFiles

    if use is None:
        files = ConfirmFiles.of(run_dir)
        if files.ensemble_json.is_file():
            return ensemble_plan(run_dir)
        if files.confirm_csv.is_file():
            run = load_confirm(run_dir)
            ranked = run.rank_order()
            complete = [n for n in ranked if run.state(n)[0] == COMPLETE]
            if not complete:
                raise ConfigError(f"no confirmed member of {run_dir} is complete: resume confirm with "
                                  f"`{CONFIRM_COMMAND.format(run_dir=run_dir)}`, or pass --use trial:ID")
            name = complete[0]
            rank = ranked.index(name) + 1
            return confirmed_plan(run_dir, name, note=f", rank {rank} of confirm.csv"
                                  + ("" if rank == 1 else "; the better-ranked members are not complete"))
        return trial_plan(run_dir, None)
    kind, sep, value = use.partition(":")
    if use == "ensemble":
        return ensemble_plan(run_dir)
    if sep and kind == "confirmed" and value:
        return confirmed_plan(run_dir, value)
    if sep and kind == "trial" and value:
        return trial_plan(run_dir, value)
    raise ConfigError(f"--use {use!r} is not one of: {USE_FORMS} (e.g. --use confirmed:trial-3, --use trial:3)")


@dataclass(frozen=True)
class TestFile:
    ids: list[str]
    texts: list[str]
    labels: list[str] | None  # the file's `label` column, when it has a valid one
    note: str | None  # why a `label` column is not scored


def read_test(path: str | Path) -> TestFile:
    """`id,text` with the project's reader and checks; a `label` column is kept for scoring only."""
    from model.data import read_table

    frame = read_table(path, columns=("id", "text"))
    header = [c.strip() for c in pd.read_csv(path, nrows=0, dtype=str).columns]
    labels, note = None, None
    if "label" in header:
        try:
            labels = read_table(path)["label"].tolist()
        except DataError as err:
            note = f"its label column is not scored: {err}"
    return TestFile(ids=frame["id"].tolist(), texts=frame["text"].tolist(), labels=labels, note=note)


def member_scores_on(member: PlanMember, texts: list[str], *, labels, device, batch_size: int, progress: bool,
                     bar) -> np.ndarray:
    """(N, C) mean of the member's fold models' probabilities."""
    total = np.zeros((len(texts), len(labels)))
    for model in member.folds:
        bar.set_postfix_str(f"{member.name}: {Path(model.description).name}")
        total += model.scores(texts, labels=labels, device=device, batch_size=batch_size, progress=progress)
        bar.update(1)
    return total / len(member.folds)


def write_probs(path: Path, ids: list[str], labels: Sequence[str], scores: np.ndarray) -> None:
    """`.npy`: the (N, C) float32 array (rows in input order, columns in label order); `.npz`: the
    same as `probs`, compressed, with `ids` and `labels` beside it; anything else: CSV with `id` and
    one column per level-2 label."""
    if path.suffix in (".npy", ".npz"):
        buffer = io.BytesIO()
        if path.suffix == ".npy":
            np.save(buffer, scores.astype(np.float32))
        else:
            np.savez_compressed(buffer, probs=scores.astype(np.float32), ids=np.asarray(ids, dtype=str),
                                labels=np.asarray(labels, dtype=str))
        atomic_write_bytes(path, buffer.getvalue())
    else:
        frame = pd.DataFrame(scores, columns=list(labels))
        frame.insert(0, "id", ids)
        atomic_write_text(path, frame.to_csv(index=False, lineterminator="\n", float_format="%.6g"))


def run_predict(run_dir: str | Path, *, data: str | Path, out_path: str | Path, use: str | None = None,
                probs_path: str | Path | None = None, batch_size: int, device: str | None = None,
                threads: int | None = None, progress: bool = True, out: Out = print) -> dict[str, Any]:
    """Predict `data` (id,text[,label]) with the plan `use` selects and write `id,label` to `out_path`."""
    from tqdm.auto import tqdm

    from model.threads import use_threads
    from model.train import prepare_device

    if batch_size < 1:
        raise ConfigError(f"--batch-size is {batch_size}, but must be >= 1")
    started = time.perf_counter()
    test = read_test(data)
    plan = resolve_plan(run_dir, use)
    torch_device = prepare_device(device)
    threads = use_threads(threads)
    out(f"using {plan.description}")
    out(f"{len(test.ids)} rows from {data}, on {torch_device}" + (f" ({threads} threads)" if torch_device.type == "cpu"
                                                                  else ""))
    bar = tqdm(total=plan.fold_models, unit="model", desc="fold models", disable=not progress)
    per_member = [member_scores_on(m, test.texts, labels=plan.labels, device=torch_device, batch_size=batch_size,
                                   progress=progress, bar=bar) for m in plan.members]
    bar.close()
    weights = [m.weight for m in plan.members]
    scores = combine(per_member, weights, plan.method)
    pred = ensemble_predict(per_member, weights, plan.method)
    predicted = [plan.labels[i] for i in pred]
    submission = pd.DataFrame({"id": test.ids, "label": predicted})
    atomic_write_text(Path(out_path), submission.to_csv(index=False, lineterminator="\n"))
    if probs_path is not None:
        write_probs(Path(probs_path), test.ids, plan.labels, scores)
    seconds = time.perf_counter() - started
    result: dict[str, Any] = {"rows": len(test.ids), "description": plan.description, "seconds": seconds}
    if test.note:
        out(f"note: {data}: {test.note}")
    if test.labels is not None:
        index = {label: i for i, label in enumerate(plan.labels)}
        y = np.array([index.get(label, -1) for label in test.labels])  # an unknown label is always an error
        result["level2_macro_f1"] = macro_f1(y, pred, num_labels=len(plan.labels))
        result["accuracy"] = float(np.mean(y == pred))
        unknown = int((y < 0).sum())
        out(f"labels in {data}: level-2 macro-F1 {result['level2_macro_f1']:.4f}, accuracy {result['accuracy']:.4f}"
            f" over {len(y)} rows" + (f" ({unknown} with labels the models do not know)" if unknown else ""))
    models = f"{plan.fold_models} fold model" + ("s" if plan.fold_models != 1 else "")
    out(f"wrote {out_path} ({len(test.ids)} rows)" + (f" and {probs_path}" if probs_path is not None else "")
        + f" in {seconds:.1f}s ({models}, {len(test.ids) * plan.fold_models / seconds:.0f} rows x models / s)")
    return result
