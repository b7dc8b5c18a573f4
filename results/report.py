"""`python -m search report RUN_DIR`: an HTML page with figures about a run, in RUN_DIR/report/.

Figures (PNG). From the Optuna study, drawn by `optuna.visualization.matplotlib`: parameter
importances (fANOVA over the completed trials; a conditional parameter counts only where every
completed trial has it), parallel coordinates of the top completed trials, and each trial's level-2
macro-F1 at every evaluation (Optuna's intermediate values). Drawn here, having no Optuna
counterpart: every evaluation over wall-clock time with the best so far, ASHA's rung survival (how
many trials reached each epoch), and per-class F1 of the best trial. A figure that cannot be drawn
yet (too few trials) leaves a line that says why.

After `confirm` (and `ensemble`), the page also shows the confirmed members (confirm.csv: mean ± std
of level-2 macro-F1 over folds and seeds, as a bar chart with every fold's score, and as a table)
and the ensemble options `ensemble` scored (in-sample and nested), the chosen one first.
"""

from __future__ import annotations

import contextlib
import html
import math
import warnings
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import optuna  # noqa: E402
import optuna.visualization.matplotlib as optuna_plots  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter  # noqa: E402
from optuna.importance import FanovaImportanceEvaluator  # noqa: E402
from optuna.study import StudyDirection  # noqa: E402
from optuna.trial import FrozenTrial, TrialState  # noqa: E402

from model import metrics as M  # noqa: E402
from results.confirm import OOF_F1  # noqa: E402
from results.export import run_leaderboard  # noqa: E402
from results.status import status_text  # noqa: E402
from rundir.confirm import EnsembleRecord, read_ranking  # noqa: E402
from rundir.io import atomic_write_text, check_writable, damaged  # noqa: E402
from rundir.paths import ConfirmFiles, RunFiles  # noqa: E402
from rundir.record import check_study, read_run, run_method  # noqa: E402
from rundir.trials import COMPLETED, ERROR, PRUNED, RUNNING, TrialRecord, load_records  # noqa: E402

COLORS = {COMPLETED: "#1f77b4", PRUNED: "#9a9a9a", RUNNING: "#ff7f0e", ERROR: "#d62728"}
STATUS_OF_STATE = {TrialState.COMPLETE: COMPLETED, TrialState.PRUNED: PRUNED, TrialState.RUNNING: RUNNING}
TOP_TRIALS = 20
SCORE = "level-2 macro-F1"  # the study's objective, as axes name it


@contextlib.contextmanager
def _optuna_plotting(figsize: tuple[float, float]):
    """Around a call of Optuna's plotting: its `plt.style.use("ggplot")` changes matplotlib's global
    settings, which must not leak into the figures drawn after it; it warns that its functions are
    experimental and logs a warning for every study without the trials it needs (we say why)."""
    verbosity = optuna.logging.get_verbosity()
    with matplotlib.rc_context({"figure.figsize": figsize}), warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", "No artists with labels found", UserWarning)  # an empty plot: we say why
        # A parameter all drawn trials share (one value) gets a one-point axis; matplotlib widens it itself.
        warnings.filterwarnings("ignore", "Attempting to set identical low and high ylims", UserWarning)
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        try:
            yield
        finally:
            optuna.logging.set_verbosity(verbosity)


def _completed(study: optuna.Study) -> list[FrozenTrial]:
    """Completed trials with a finite value, best first."""
    sign = -1 if study.direction == StudyDirection.MAXIMIZE else 1
    trials = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
              if t.value is not None and math.isfinite(t.value)]
    return sorted(trials, key=lambda t: (sign * t.value, t.number))


def _save(fig: plt.Figure, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_progress(records: list[TrialRecord], started: float) -> plt.Figure | str:
    """Every evaluation of every trial over wall-clock time, colored by how the trial ended, and
    the best so far. (Optuna's optimization history is per trial number, not over time.)"""
    points = sorted((h["timestamp"], h[M.LEVEL2_MACRO_F1], r.status) for r in records for h in r.history
                    if "timestamp" in h)
    if not points:
        return "no evaluation has a timestamp yet"
    minutes = np.array([(t - started) / 60 for t, _, _ in points])
    scores = np.array([s for _, s, _ in points])
    fig, ax = plt.subplots(figsize=(8, 4))
    for status, color in COLORS.items():
        mask = np.array([st == status for _, _, st in points])
        if mask.any():
            ax.scatter(minutes[mask], scores[mask], s=18, color=color, alpha=0.75, label=f"{status} trials")
    ax.step(minutes, np.maximum.accumulate(scores), where="post", color="black", lw=1.5, label="best so far")
    ax.set(xlabel="minutes since launch", ylabel=SCORE, title="Every evaluation, and the best so far")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return fig


def plot_importances(study: optuna.Study) -> plt.Figure | str:
    """Optuna's importance plot with fANOVA (Optuna's default, PED-ANOVA, would also rate the
    conditional parameters, each over the trials that have it)."""
    complete = _completed(study)
    if len(complete) < 2:
        return f"needs at least 2 completed trials (this run has {len(complete)})"
    shared = set.intersection(*(set(t.params) for t in complete))
    with _optuna_plotting(figsize=(7, 0.4 * len(shared) + 1.6)):
        try:
            ax = optuna_plots.plot_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=0),
                                                     target_name=SCORE)
        except (RuntimeError, ValueError) as err:  # e.g. every completed trial scored the same
            return f"Optuna could not compute them: {err}"
    if not ax.patches:
        plt.close(ax.figure)
        return "no parameter is shared by all completed trials"
    ax.set_title(f"Which parameters moved {SCORE}", loc="left")
    ax.set_xlabel(f"importance (fANOVA over the {len(complete)} completed trials)")
    ax.get_legend().remove()
    return ax.figure


def plot_parallel(study: optuna.Study, *, top: int = TOP_TRIALS) -> plt.Figure | str:
    """Optuna's parallel coordinates of the `top` best completed trials. Pruned trials are left out:
    their scores come from fewer epochs, so they do not compare with the completed ones."""
    complete = _completed(study)
    if len(complete) < 2:
        return f"needs at least 2 completed trials (this run has {len(complete)})"
    best = complete[:top]
    shared = set.intersection(*(set(t.params) for t in best))
    # A parameter some trials lack (a conditional one) would be drawn as a "None" below every value,
    # and one every trial shares the same value of tells nothing: both are left out, and named.
    params = sorted(p for p in shared if len({repr(t.params[p]) for t in best}) > 1)
    if not params:
        return "the top completed trials share every parameter value they all have"
    with _optuna_plotting(figsize=(max(8.0, 1.5 * (len(params) + 1)), 4.5)):
        view = optuna.create_study(direction=study.direction)  # in memory: only the trials to draw
        view.add_trials(best)
        ax = optuna_plots.plot_parallel_coordinate(view, params=params, target_name=SCORE)
    ax.collections[0].set_cmap("viridis")  # Optuna's Blues draws the lowest score white, on white
    for axis in ax.get_shared_x_axes().get_siblings(ax):  # the parameters' axes (Optuna's twins of ax)
        if axis is not ax:
            axis.tick_params(labelsize=8)
            if axis.get_yscale() == "log":
                _plain_log_labels(axis)
            else:
                axis.yaxis.set_major_locator(MaxNLocator(nbins=5))
    left_out = sorted(set().union(*(t.params for t in best)) - set(params))
    ax.set_title(f"Top {len(best)} of {len(complete)} completed trials (color: {SCORE})", y=1.03)
    if left_out:
        ax.figure.text(0.01, 0.01, "not drawn (absent in some, or equal in all): " + ", ".join(left_out),
                       fontsize=7, color="#666")
    return ax.figure


def _plain_log_labels(axis: plt.Axes) -> None:
    """0.0046 rather than 4.6x10^-3 (which runs into the colorbar); minor ticks labelled only when
    the axis spans less than a decade, as matplotlib's default does."""
    low, high = axis.get_ylim()
    plain = FuncFormatter(lambda value, _: f"{value:.2g}")
    axis.yaxis.set_major_formatter(plain)
    axis.yaxis.set_minor_formatter(plain if high < 10 * low else NullFormatter())


def plot_intermediate(records: list[TrialRecord]) -> plt.Figure | str:
    """Every trial's score at each evaluation, by epoch (a step count differs with the batch size):
    each completed trial in its own color and named, pruned and running ones grey, errors red."""
    evaluated = [r for r in records if r.history]
    if not evaluated:
        return "no trial has been evaluated yet"
    fig, ax = plt.subplots(figsize=(8, 4))
    palette = plt.get_cmap("tab10")
    done = sorted((r for r in evaluated if r.status == COMPLETED), key=lambda r: -r.best[M.LEVEL2_MACRO_F1])
    for record in evaluated:
        epochs = [h[M.EPOCH] for h in record.history]
        scores = [h[M.LEVEL2_MACRO_F1] for h in record.history]
        if record.status == COMPLETED:
            rank = done.index(record)
            ax.plot(epochs, scores, marker=".", lw=1.6, color=palette(rank % 10), zorder=3,
                    label=f"trial {record.optuna_number}" if rank < 10 else None)
        else:
            ax.plot(epochs, scores, marker=".", lw=0.8, color=COLORS[record.status], alpha=0.6, zorder=2)
    handles, _ = ax.get_legend_handles_labels()
    handles += [Line2D([0], [0], color=COLORS[s], lw=0.8, label=f"{s} trials")
                for s in (PRUNED, RUNNING, ERROR) if any(r.status == s for r in evaluated)]
    ax.legend(handles=handles, loc="lower right", fontsize=7, ncol=2)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="epoch", ylabel=SCORE, title="Every trial's evaluations (completed: the 10 best named)")
    ax.grid(alpha=0.3)
    return fig


def plot_rungs(records: list[TrialRecord], *, max_epochs: int, grace: int, factor: float) -> plt.Figure | str:
    if not records:
        return "no trial yet"
    epochs = np.arange(1, max_epochs + 1)
    reached = [sum(r.epochs >= e for r in records) for e in epochs]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.bar(epochs, reached, color="#1f77b4", alpha=0.8)
    milestone = grace
    while milestone < max_epochs:
        ax.axvline(milestone + 0.5, color="#d62728", ls="--", lw=1)
        milestone = milestone * factor
    for e, n in zip(epochs, reached, strict=True):
        ax.text(e, n, str(n), ha="center", va="bottom", fontsize=8)
    ax.set(xlabel="epoch", ylabel="trials that trained it", title="ASHA rung survival (dashed: rung milestones)")
    ax.set_xticks(epochs)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # a count: no 0.5 ticks
    return fig


def plot_per_class(record: TrialRecord | None, labels: list[str]) -> plt.Figure | str:
    if record is None:
        return "needs a completed trial"
    f1 = record.best_per_class_f1
    if not f1 or len(f1) != len(labels):
        return "the best trial has no per-class F1 for the run's labels"
    return plot_label_f1(f1, labels, title="Per-class F1 of the best trial (color: level-1 label)")


def plot_label_f1(f1: Sequence[float], labels: Sequence[str], *, title: str) -> plt.Figure:
    """One bar per level-2 label, colored by its level-1 label; the labels at 0 are named."""
    groups = sorted({lab.split("-")[0] for lab in labels}, key=lambda g: (len(g), g))
    cmap = plt.get_cmap("tab10")
    colors = [cmap(groups.index(lab.split("-")[0]) % 10) for lab in labels]
    fig, ax = plt.subplots(figsize=(7, 0.22 * len(labels) + 1.2))
    y = np.arange(len(labels))[::-1]
    ax.barh(y, f1, color=colors)
    for row, value in zip(y, f1, strict=True):
        if value == 0:  # no bar to see: say it
            ax.text(0.005, row, "0 (never right)", va="center", fontsize=6, color="#a33")
    ax.set_yticks(y, labels, fontsize=7)
    ax.set_xlim(0, 1)
    ax.axvline(np.mean(f1), color="black", lw=1, ls="--")
    ax.set(xlabel="F1 (dashed: macro average)", title=title)
    ax.grid(axis="x", alpha=0.3)
    return fig


def _figure(made: plt.Figure | str, path: Path, title: str) -> str:
    """Save a drawn figure and return its HTML, or the line that says why it was not drawn."""
    if isinstance(made, str):
        path.unlink(missing_ok=True)  # an earlier report's figure would be stale
        return f'<p class="missing">{html.escape(title)}: not drawn ({html.escape(made)}).</p>'
    _save(made, path)
    return (f'<figure><img src="figures/{path.name}" alt="{html.escape(title)}"><figcaption>{html.escape(title)}'
            "</figcaption></figure>")


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 1100px;
       color: #222; padding: 0 1rem; }}
h1 {{ margin-bottom: 0.2rem; }} .sub {{ color: #666; margin-top: 0; }}
pre {{ background: #f5f5f5; padding: 0.8rem; overflow-x: auto; font-size: 0.85rem; }}
.grid {{ display: grid; grid-template-columns: repeat(auto-fit, minmax(480px, 1fr)); gap: 1rem; }}
figure {{ margin: 0; border: 1px solid #e3e3e3; padding: 0.5rem; background: #fff; }}
figure img {{ width: 100%; }} figcaption {{ color: #666; font-size: 0.85rem; }}
table {{ border-collapse: collapse; font-size: 0.8rem; width: 100%; }}
th, td {{ border-bottom: 1px solid #e3e3e3; padding: 0.25rem 0.4rem; text-align: right; }}
th {{ background: #fafafa; }} .settings th, .settings td {{ text-align: left; }}
.missing {{ color: #a33; }}
</style></head><body>
<h1>{title}</h1><p class="sub">{subtitle}</p>
<h2>Status</h2><pre>{status}</pre>
<h2>Best trial</h2>{best}
<h2>Figures</h2><div class="grid">{figures}</div>
<h2>Leaderboard (top {top})</h2>{table}
{confirm}
<h2>Settings</h2>{settings}
</body></html>
"""


def plot_confirmed(table: pd.DataFrame) -> plt.Figure | str:
    """Mean ± std level-2 macro-F1 of each confirmed member, every fold's score as a dot."""
    if table.empty:
        return "no member has a score yet"
    folds = [c for c in table.columns if c.startswith("level2_fold")]
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(table) + 1.2))
    y = np.arange(len(table))[::-1]
    ax.barh(y, table["level2_mean"], xerr=table["level2_std"].fillna(0), color="#1f77b4", alpha=0.6, capsize=3)
    for row, position in zip(table.itertuples(index=False), y, strict=True):
        scores = [getattr(row, f) for f in folds if pd.notna(getattr(row, f))]
        ax.plot(scores, [position] * len(scores), "o", color="black", ms=3)
    ax.set_yticks(y, table["member"])
    low = np.nanmin(table[folds].to_numpy(dtype=float)) if folds else 0.0
    ax.set_xlim(max(0.0, low - 0.05), None)
    ax.set(xlabel=f"{SCORE}: mean ± std over folds and seeds (dots: each fold)",
           title="Confirmed members on every fold")
    ax.grid(axis="x", alpha=0.3)
    return fig


def read_confirmed(files: ConfirmFiles) -> tuple[pd.DataFrame | None, EnsembleRecord | None]:
    """confirm.csv and ensemble.json for the page (None before `confirm` and `ensemble` wrote them),
    read before the report writes anything: a damaged one is refused."""
    table = read_ranking(files)
    if table is None:
        return None, None
    missing = sorted({"level2_mean", "level2_std"} - set(table.columns))
    if missing:
        raise damaged(files.confirm_csv, f"no column {', '.join(missing)}")
    chosen = EnsembleRecord.load(files.ensemble_json) if files.ensemble_json.is_file() else None
    return table, chosen


def confirm_section(table: pd.DataFrame | None, chosen: EnsembleRecord | None, out: Path) -> str:
    """The confirm and ensemble part of the page ('' before `confirm` has written confirm.csv)."""
    if table is None:
        return ""
    shown = [c for c in ("rank", "member", "kind", "optuna_number", "level2_mean", "level2_std", "level1_mean",
                         OOF_F1, "paired_diff_vs_best", "wins_vs_best", "p_value_vs_best", "status")
             if c in table.columns]
    parts = ["<h2>Confirmed on every fold</h2>",
             _figure(plot_confirmed(table), out / "confirmed.png", "Confirmed members: level-2 macro-F1 per fold"),
             table[shown].to_html(index=False, float_format=lambda x: f"{x:.4g}", na_rep="", border=0)]
    if chosen is not None:
        parts.append(ensemble_html(chosen))
        parts.append(_figure(plot_ensemble_labels(chosen), out / "ensemble_labels.png",
                             "Per-class F1 of the chosen ensemble (nested)"))
    return "\n".join(parts)


def plot_ensemble_labels(record: EnsembleRecord) -> plt.Figure | str:
    if len(record.label_f1) != len(record.labels):
        return "ensemble.json has no per-label F1: it was written by an older version; run `ensemble` again"
    return plot_label_f1(record.label_f1, record.labels,
                         title="Per-class F1 of the chosen ensemble, nested predictions (color: level-1 label)")


def ensemble_html(record: EnsembleRecord) -> str:
    """The ensemble options `python -m search ensemble` scored, the chosen one first."""
    rows = [{"option": name + (" (chosen)" if name == record.option else ""),
             "members": ", ".join(f"{m} x{w:g}" for m, w in zip(r["members"], r["weights"], strict=True) if w),
             "OOF F1 (in-sample)": r["oof_score"], "nested F1": r["nested_score"]}
            for name, r in sorted(record.options.items(), key=lambda item: item[0] != record.option)]
    best = record.best_member
    note = (f"<p>Best single member: {html.escape(str(best))} (OOF level-2 macro-F1 "
            f"{record.member_scores[best]['oof']:.4f}). The nested score predicts each fold with a selection "
            "made on the other folds only.</p>") if best in record.member_scores else ""
    return ("<h2>Ensemble</h2>" + note
            + pd.DataFrame(rows).to_html(index=False, float_format=lambda x: f"{x:.4f}", border=0))


def settings_html(run: dict) -> str:
    """What the run searched, on which rows, with which resources: a table a reader can scan."""
    settings, data, method = run["settings"], run["data"], run_method(run)
    schedule = (f"ASHA, grace period {settings.get('grace_period')}, reduction factor "
                f"{settings.get('reduction_factor'):g}" if method["scheduler"] == "asha" else method["scheduler"])
    concurrency = run.get("concurrency")
    rows = [
        ("Space", f"{settings.get('space')} ({run.get('space')})"),
        ("Searched parameters", ", ".join(sorted(run["searched"])) or "none"),
        ("Fixed with --set", ", ".join(settings.get("sets") or []) or "none"),
        ("Sampler", f"{method['sampler']}" + (f", {method['startup_trials']} random startup trials"
                                              if method.get("startup_trials") else "")),
        ("Scheduler", schedule),
        ("Trials", f"{settings.get('num_samples')} of at most {run.get('max_epochs')} epochs, seed {run.get('seed')}"),
        ("Data", str(data["source"])),
        ("Rows", f"{data.get('train_rows')} training, {data.get('dev_rows')} held out (fold {run.get('fold')} of "
                 f"{settings.get('folds')}); {len(data.get('level2_labels', []))} level-2 labels, vocabulary "
                 f"{data.get('vocab')}, texts cut to {data.get('max_seq_len')} tokens"),
        ("Resources", f"{settings.get('cpus_per_trial')} CPU and {settings.get('gpus_per_trial')} GPU per trial"
                      + (f", {concurrency} at once" if concurrency else "")
                      + (f", cluster {settings['address']}" if settings.get("address") else ", local Ray")),
        ("Reproduce a trial", run.get("reproduce", "")),
        ("Versions", ", ".join(f"{k} {v}" for k, v in (run.get("versions") or {}).items())),
        ("Git revision", run.get("git_revision") or "unknown"),
    ]
    body = "".join(f"<tr><th>{html.escape(name)}</th><td>{html.escape(str(value))}</td></tr>" for name, value in rows)
    return f'<table class="settings">{body}</table>'


def write_report(run_dir: str | Path) -> Path:
    """Write RUN_DIR/report/index.html and its figures; return the page's path."""
    files = RunFiles(Path(run_dir))
    # Everything is read (and a damaged file refused) before anything is written.
    frame = run_leaderboard(run_dir)
    run = read_run(files)
    if not isinstance(run.get("data"), dict) or "source" not in run["data"]:
        raise damaged(files.run_json, "no `data` object with the data's `source`")
    records = list(load_records(files).values())
    check_study(files, run["name"])  # Optuna would create a missing study.db
    study = optuna.load_study(study_name=run["name"], storage=files.study_url)
    confirmed = read_confirmed(files.confirm)
    status = status_text(run_dir, top=0)
    check_writable(files.report_dir, "report")
    out = files.report_dir / "figures"
    out.mkdir(parents=True, exist_ok=True)
    started = pd.Timestamp(run["created"]).timestamp()
    settings = run["settings"]

    completed = frame[frame["status"] == COMPLETED]
    best_record = next((r for r in records if len(completed) and r.trial_id == completed.iloc[0]["trial_id"]), None)
    figures = [
        _figure(plot_progress(records, started), out / "progress.png", "Level-2 macro-F1 over time"),
        _figure(plot_importances(study), out / "importance.png", "Parameter importances"),
        _figure(plot_parallel(study), out / "parallel.png", "Parallel coordinates of the top completed trials"),
        _figure(plot_intermediate(records), out / "intermediate.png", "Level-2 macro-F1 at each evaluation, per trial"),
        *([_figure(plot_rungs(records, max_epochs=run["max_epochs"], grace=settings["grace_period"],
                              factor=settings["reduction_factor"]), out / "rungs.png", "ASHA rung survival")]
          if run_method(run)["scheduler"] == "asha" else []),
        _figure(plot_per_class(best_record, run["data"].get("level2_labels", [])), out / "per_class.png",
                "Per-class F1 of the best trial"),
    ]
    if len(completed):
        row = completed.iloc[0]
        best = (f"<p>Trial {row['optuna_number']} ({row['trial_id']}): level-2 macro-F1 "
                f"<b>{row[M.LEVEL2_MACRO_F1]:.4f}</b>, level-1 macro-F1 {row[M.LEVEL1_MACRO_F1]:.4f}, at epoch "
                f"{row[M.BEST_EPOCH]} of {row['epochs']}. Retrain it with:</p><pre>{html.escape(str(row['command']))}"
                "</pre>")
    else:
        best = "<p>No trial has completed yet.</p>"
    shown = ["rank", "optuna_number", "status", "epochs", M.BEST_EPOCH, M.LEVEL2_MACRO_F1, M.LEVEL1_MACRO_F1,
             M.WORST5_F1, "time_s"] + [c for c in frame.columns if c.startswith("param.")]
    table = frame[shown].head(TOP_TRIALS).rename(columns=lambda c: c.removeprefix("param.")).to_html(
        index=False, float_format=lambda x: f"{x:.4g}", na_rep="", border=0)
    page = PAGE.format(
        title=html.escape(f"Search {run['name']}"),
        subtitle=html.escape(f"launched {run['created']} - data {run['data']['source']} - "
                             f"{len(run['searched'])} searched parameters"),
        status=html.escape(status), best=best, figures="\n".join(figures),
        top=min(TOP_TRIALS, len(frame)), table=table, confirm=confirm_section(*confirmed, out),
        settings=settings_html(run))
    path = files.report_dir / "index.html"
    atomic_write_text(path, page)
    return path
