"""`python -m search ensemble RUN_DIR`: choose an ensemble of the confirmed members (no Ray).

Selection over the out-of-fold (OOF) predictions that `confirm` left in RUN_DIR/confirm/ (the math
is results/ensemble.py): every option is scored beside each member, in-sample and nested (each
fold predicted by a selection made without it), and the one `--method` names is written to
RUN_DIR/confirm/ensemble.json (`EnsembleRecord`), which `predict` reads.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from model.errors import ConfigError
from model.threads import use_threads
from results.ensemble import EnsembleResult, build_ensemble, macro_f1
from results.ranking import fold_std
from rundir.confirm import BEST_OPTION, DEFAULT_ENSEMBLE_METHOD, DEFAULT_MAX_MEMBERS, ENSEMBLE_OPTIONS, EnsembleRecord
from rundir.io import check_writable
from stages.confirm.reader import ConfirmRun, OutOfFold, load_confirm, load_oof

OPTION_TEXT = {"greedy": "greedy selection with replacement, probability mean",
               "prob": "all members, probability mean",
               "rank": "all members, mean per-row class rank (Borda)",
               "vote": "all members, majority vote (ties: better-ranked member)"}
# Greedy additions are counted, and each scores every member: far more than the members'
# count gains nothing and only takes time.
MAX_MEMBERS_LIMIT = 1000
WEAKEST = 5  # labels the summary names as the ensemble's weakest

Out = Callable[[str], Any]


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def weights_text(members: Sequence[str], weights: Sequence[float]) -> str:
    """"trial-3 x2, linear x1": the members with weight > 0, in member order."""
    return ", ".join(f"{m} x{w:g}" for m, w in zip(members, weights, strict=True) if w > 0)


@dataclass(frozen=True)
class MemberScore:
    name: str
    kind: str
    oof: float  # macro-F1 of the member's pooled OOF argmax (held out: no selection involved)
    fold_scores: tuple[float, ...]  # per fold, folds sorted


def member_scores(oof: OutOfFold, run: ConfirmRun) -> list[MemberScore]:
    c = len(run.labels)
    folds = np.unique(oof.fold_of)
    scores = []
    for name, probs in zip(oof.members, oof.probs, strict=True):
        pred = probs.argmax(axis=1)
        per_fold = tuple(macro_f1(oof.y[oof.fold_of == f], pred[oof.fold_of == f], num_labels=c) for f in folds)
        scores.append(MemberScore(name=name, kind=run.member(name).kind, oof=macro_f1(oof.y, pred, num_labels=c),
                                  fold_scores=per_fold))
    return scores


def ensemble_table(scores: Sequence[MemberScore], options: dict[str, EnsembleResult], chosen: str) -> str:
    """Every member and every ensemble option, side by side (tabulate)."""
    from tabulate import tabulate

    best = max(scores, key=lambda s: s.oof)  # first maximum: the better-ranked member
    rows = []
    for s in scores:
        rows.append(["best" if s is best else "", s.name, s.kind, f"{s.name} x1", s.oof, s.oof,
                     f"{np.mean(s.fold_scores):.4f} ± {fold_std(s.fold_scores):.4f}"])
    for option, result in options.items():
        rows.append(["*" if option == chosen else "", f"ensemble {option}", OPTION_TEXT[option],
                     weights_text(result.members, result.weights), result.oof_score, result.nested_score,
                     f"{np.mean(result.fold_scores):.4f} ± {fold_std(result.fold_scores):.4f}"])
    return tabulate(rows, headers=["", "model", "kind", "members", "OOF F1", "nested F1", "nested per fold"],
                    floatfmt=".4f", disable_numparse=False)


def weakest_labels(labels: Sequence[str], scores: Sequence[float], rows: Sequence[int], *, show: int = WEAKEST) -> str:
    """One line: the `show` labels the ensemble scores worst on (nested F1, their OOF rows), and how
    many labels it never predicts right. The macro-F1 weighs every label alike, so these are where
    it is lost (on the real data six labels of 13-39 rows stay near 0 in every ensemble)."""
    order = sorted(range(len(labels)), key=lambda i: (scores[i], rows[i]))[:show]
    zero = sum(score == 0 for score in scores)
    return ("weakest labels (nested F1, rows): " + ", ".join(f"{labels[i]} {scores[i]:.2f} ({rows[i]})" for i in order)
            + f"; {zero} of {len(labels)} labels at F1 0")


def check_options(method: str, max_members: int) -> None:
    if method not in (*ENSEMBLE_OPTIONS, BEST_OPTION):
        raise ConfigError(f"--method {method!r} is not one of {', '.join((*ENSEMBLE_OPTIONS, BEST_OPTION))}")
    if not 1 <= max_members <= MAX_MEMBERS_LIMIT:
        raise ConfigError(f"--max-members is {max_members}, but must be in 1..{MAX_MEMBERS_LIMIT} (the number of "
                          "greedy additions; 2-3 times the number of members is typical)")


def best_option(options: dict[str, EnsembleResult]) -> str:
    """The option with the highest nested score; the first in `options`' order on a tie. Choosing
    among a few options on their nested scores is itself a selection, a far smaller one than the
    greedy choice the nesting guards against."""
    return max(options, key=lambda option: options[option].nested_score)


def score_options(oof: OutOfFold, members: list[str], max_members: int) -> dict[str, EnsembleResult]:
    """Every ensemble option over the members' OOF predictions, in-sample and nested."""
    options = {}
    for option, (selection, rule) in ENSEMBLE_OPTIONS.items():
        options[option] = build_ensemble(list(oof.probs), oof.y, oof.fold_of, members=members, method=rule,
                                         selection=selection,
                                         max_members=max_members if selection == "greedy" else None)
    return options


def run_ensemble(run_dir: str | Path, *, method: str = DEFAULT_ENSEMBLE_METHOD,
                 max_members: int = DEFAULT_MAX_MEMBERS, partial: bool = False, threads: int | None = None,
                 argv: list[str] | None = None, out: Out = print) -> EnsembleRecord:
    """Score every ensemble option over the complete members' OOF predictions, write the one
    `method` names to RUN_DIR/confirm/ensemble.json (returned), print the table. `partial`: leave
    out members confirm did not finish (a pipeline out of time) instead of refusing."""
    check_options(method, max_members)
    use_threads(threads)  # the selection's matrix products: BLAS threads
    run = load_confirm(run_dir)
    check_writable(run.files.root, "ensemble")  # ensemble.json: refused before any work
    # rank order: vote's tie-break and greedy's tie order
    members, failed = run.complete_members(partial=partial)
    for name, why in failed.items():
        out(f"note: leaving out {name}: {why}")
    oof = load_oof(run, members)
    scores = member_scores(oof, run)
    started = time.perf_counter()
    options = score_options(oof, members, max_members)
    option = best_option(options) if method == BEST_OPTION else method
    chosen = options[option]
    best = max(scores, key=lambda s: s.oof)
    record = EnsembleRecord(
        **chosen.to_dict(), option=option, member_kinds={s.name: s.kind for s in scores}, labels=run.labels,
        rows=int(len(oof.y)), member_scores={s.name: {"oof": s.oof, "fold_scores": list(s.fold_scores)}
                                             for s in scores},
        best_member=best.name, beats_best_member=chosen.nested_score > best.oof, left_out=failed,
        # What the choice was made on: `predict` refuses an ensemble whose members' OOF files changed
        # since (a `confirm --force` retrained them), as its weights no longer mean anything.
        oof_sha256={name: file_sha256(run.files.oof(name)) for name in members},
        options={option: result.to_dict() for option, result in options.items()},
        created=dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        command=shlex.join(["python", "-m", "search", *(argv or ["ensemble", str(run_dir)])]))
    record.save(run.files.ensemble_json)
    out(f"{len(members)} members, {len(oof.y)} OOF rows in {len(chosen.folds)} folds; "
        f"ensembles scored in {time.perf_counter() - started:.1f}s")
    _report(scores, options, record, out, picked=method == BEST_OPTION,
            rows=np.bincount(oof.y, minlength=len(run.labels)).tolist())
    out(f"wrote {run.files.ensemble_json}")
    out(f"next: python -m search predict {shlex.quote(str(run_dir))} --data test.csv --out submission.csv   "
        "(your test file: header id,text)")
    return record


def _report(scores: list[MemberScore], options: dict[str, EnsembleResult], record: EnsembleRecord,
            out: Out, *, picked: bool, rows: Sequence[int]) -> None:
    out(ensemble_table(scores, options, record.option))
    out("OOF F1: level-2 macro-F1 of the pooled out-of-fold predictions; for a greedy ensemble it is chosen on "
        "the same rows (optimistic). nested F1: each fold predicted by a selection made on the other folds "
        "only; a single member's OOF F1 is held out already.")
    out(f"chose ensemble {record.option} ({OPTION_TEXT[record.option]}): {weights_text(record.members, record.weights)}"
        f"; nested level-2 macro-F1 {record.nested_score:.4f}"
        + (" (the best nested score of the options; --method picks one)" if picked else ""))
    if record.label_f1:
        out(weakest_labels(record.labels, record.label_f1, rows))
    if not record.beats_best_member:
        best = record.member_scores[record.best_member]["oof"]
        out(f"warning: the ensemble's nested score {record.nested_score:.4f} does not beat the best single member, "
            f"{record.best_member} (OOF {best:.4f}); `predict` uses ensemble.json by default: pass "
            f"`--use confirmed:{record.best_member}` to submit that member instead")
