"""`python -m search report RUN_DIR`: an HTML page with figures about a run, in RUN_DIR/report/.

Figures (PNG): level-2 macro-F1 of every evaluation over time with the best so far, parameter
importances (Optuna's fANOVA over completed trials), parallel coordinates of the top trials,
ASHA's rung survival (how many trials reached each epoch), and per-class F1 of the best trial.
"""

from __future__ import annotations

import html
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import optuna  # noqa: E402
import pandas as pd  # noqa: E402

from model import metrics as M  # noqa: E402
from results.export import load_records, run_leaderboard  # noqa: E402
from results.files import RunFiles, atomic_write_text, read_json  # noqa: E402
from results.records import COMPLETED, ERROR, PRUNED, RUNNING, TrialRecord  # noqa: E402
from results.status import status_text  # noqa: E402

COLORS = {COMPLETED: "#1f77b4", PRUNED: "#9a9a9a", RUNNING: "#ff7f0e", ERROR: "#d62728"}
TOP_TRIALS = 20


def _save(fig: plt.Figure, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_progress(records: list[TrialRecord], started: float, path: Path) -> bool:
    points = sorted((h["timestamp"], h[M.LEVEL2_MACRO_F1], r.status) for r in records for h in r.history
                    if "timestamp" in h)
    if not points:
        return False
    minutes = np.array([(t - started) / 60 for t, _, _ in points])
    scores = np.array([s for _, s, _ in points])
    fig, ax = plt.subplots(figsize=(8, 4))
    for status, color in COLORS.items():
        mask = np.array([st == status for _, _, st in points])
        if mask.any():
            ax.scatter(minutes[mask], scores[mask], s=18, color=color, alpha=0.75, label=f"{status} trials")
    ax.step(minutes, np.maximum.accumulate(scores), where="post", color="black", lw=1.5, label="best so far")
    ax.set(xlabel="minutes since launch", ylabel="level-2 macro-F1", title="Every evaluation, and the best so far")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    _save(fig, path)
    return True


def plot_importances(study: optuna.Study, path: Path) -> str | None:
    """Bar chart of parameter importances; returns why not when it cannot be computed."""
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(complete) < 2:
        return f"needs at least 2 completed trials (this run has {len(complete)})"
    try:
        importances = optuna.importance.get_param_importances(study)
    except (RuntimeError, ValueError) as err:
        return f"Optuna could not compute them: {err}"
    if not importances:
        return "no parameter is shared by all completed trials"
    names = list(importances)[::-1]
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(names) + 1.2))
    ax.barh(names, [importances[n] for n in names], color="#1f77b4")
    ax.set(xlabel="importance (fANOVA, completed trials)", title="Which parameters moved level-2 macro-F1")
    ax.grid(axis="x", alpha=0.3)
    _save(fig, path)
    return None


def _axis_values(column: pd.Series) -> tuple[np.ndarray, list[str] | None, tuple]:
    """Values scaled to [0, 1]; tick labels for categories; (low, high) for numbers."""
    present = column.dropna()
    if present.empty:
        return np.full(len(column), np.nan), None, (0, 0)
    if not pd.api.types.is_numeric_dtype(present):
        categories = sorted(present.astype(str).unique())
        index = {c: i for i, c in enumerate(categories)}
        scaled = column.map(lambda v: np.nan if pd.isna(v) else index[str(v)] / max(1, len(categories) - 1))
        return scaled.to_numpy(dtype=float), categories, (0, 0)
    values = column.astype(float).to_numpy()
    low, high = np.nanmin(values), np.nanmax(values)
    use_log = low > 0 and high / low > 20
    if use_log:
        values, low_s, high_s = np.log10(values), math.log10(low), math.log10(high)
    else:
        low_s, high_s = low, high
    span = (high_s - low_s) or 1.0
    return (values - low_s) / span, None, (low, high)


def plot_parallel(frame: pd.DataFrame, path: Path) -> bool:
    top = frame[frame["status"].isin([COMPLETED, PRUNED])].head(TOP_TRIALS)
    params = [c for c in frame.columns if c.startswith("param.")]
    if len(top) < 2 or not params:
        return False
    axes = params + [M.LEVEL2_MACRO_F1]
    scaled, labels = [], []
    for name in axes:
        values, categories, (low, high) = _axis_values(top[name])
        scaled.append(values)
        short = name.removeprefix("param.")
        labels.append(f"{short}\n{'/'.join(categories)}" if categories else f"{short}\n{low:.3g} .. {high:.3g}")
    grid = np.array(scaled).T  # (trials, axes)
    scores = top[M.LEVEL2_MACRO_F1].to_numpy(dtype=float)
    cmap = plt.get_cmap("viridis")
    norm = plt.Normalize(np.nanmin(scores), np.nanmax(scores))
    fig, ax = plt.subplots(figsize=(max(7, 1.3 * len(axes)), 4.5))
    x = np.arange(len(axes))
    for row, score, status in zip(grid, scores, top["status"], strict=True):
        ax.plot(x, row, color=cmap(norm(score)), lw=2.2 if status == COMPLETED else 1,
                ls="-" if status == COMPLETED else "--", alpha=0.85)
    for xi in x:
        ax.axvline(xi, color="black", lw=0.6)
    ax.set_xticks(x, labels, fontsize=7)
    ax.set_yticks([])
    ax.set_xlim(-0.2, len(axes) - 0.8)
    ax.set_title(f"Top {len(top)} trials (solid: completed, dashed: pruned; color: level-2 macro-F1)")
    fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, pad=0.01)
    _save(fig, path)
    return True


def plot_rungs(records: list[TrialRecord], *, max_epochs: int, grace: int, factor: float, path: Path) -> bool:
    if not records:
        return False
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
    _save(fig, path)
    return True


def plot_per_class(record: TrialRecord, labels: list[str], path: Path) -> bool:
    f1 = record.best_per_class_f1
    if not f1 or len(f1) != len(labels):
        return False
    groups = sorted({lab.split("-")[0] for lab in labels}, key=lambda g: (len(g), g))
    cmap = plt.get_cmap("tab10")
    colors = [cmap(groups.index(lab.split("-")[0]) % 10) for lab in labels]
    fig, ax = plt.subplots(figsize=(7, 0.22 * len(labels) + 1.2))
    y = np.arange(len(labels))[::-1]
    ax.barh(y, f1, color=colors)
    ax.set_yticks(y, labels, fontsize=7)
    ax.set_xlim(0, 1)
    ax.axvline(np.mean(f1), color="black", lw=1, ls="--")
    ax.set(xlabel="F1 (dashed: macro average)", title="Per-class F1 of the best trial (color: level-1 label)")
    ax.grid(axis="x", alpha=0.3)
    _save(fig, path)
    return True


def _figure(name: str, title: str, made: bool | str | None, why: str) -> str:
    if made is True or made is None:
        return f'<figure><img src="figures/{name}" alt="{html.escape(title)}"><figcaption>{html.escape(title)}' \
               f"</figcaption></figure>"
    reason = made if isinstance(made, str) else why
    return f'<p class="missing">{html.escape(title)}: not drawn ({html.escape(reason)}).</p>'


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
th {{ background: #fafafa; }} .missing {{ color: #a33; }}
</style></head><body>
<h1>{title}</h1><p class="sub">{subtitle}</p>
<h2>Status</h2><pre>{status}</pre>
<h2>Best trial</h2>{best}
<h2>Figures</h2><div class="grid">{figures}</div>
<h2>Leaderboard (top {top})</h2>{table}
<h2>Settings</h2><pre>{settings}</pre>
</body></html>
"""


def write_report(run_dir: str | Path) -> Path:
    """Write RUN_DIR/report/index.html and its figures; return the page's path."""
    files = RunFiles(Path(run_dir))
    frame = run_leaderboard(run_dir)
    run = read_json(files.run_json)
    records = list(load_records(files).values())
    out = files.report_dir / "figures"
    out.mkdir(parents=True, exist_ok=True)
    started = pd.Timestamp(run["created"]).timestamp()
    settings = run["settings"]
    study = optuna.load_study(study_name=run["name"], storage=files.study_url)

    completed = frame[frame["status"] == COMPLETED]
    best_record = next((r for r in records if len(completed) and r.trial_id == completed.iloc[0]["trial_id"]), None)
    figures = [
        _figure("progress.png", "Level-2 macro-F1 over time",
                plot_progress(records, started, out / "progress.png"), "no evaluation has a timestamp yet"),
        _figure("importance.png", "Parameter importances", plot_importances(study, out / "importance.png"), ""),
        _figure("parallel.png", "Parallel coordinates of the top trials", plot_parallel(frame, out / "parallel.png"),
                "needs at least 2 finished trials"),
        _figure("rungs.png", "ASHA rung survival",
                plot_rungs(records, max_epochs=run["max_epochs"], grace=settings["grace_period"],
                           factor=settings["reduction_factor"], path=out / "rungs.png"), "no trial yet"),
        _figure("per_class.png", "Per-class F1 of the best trial",
                best_record is not None and plot_per_class(best_record, run["data"].get("level2_labels", []),
                                                           out / "per_class.png"),
                "needs a completed trial"),
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
        status=html.escape(status_text(run_dir, top=0)), best=best, figures="\n".join(figures),
        top=min(TOP_TRIALS, len(frame)), table=table,
        settings=html.escape("\n".join(f"{k}: {v}" for k, v in settings.items())))
    path = files.report_dir / "index.html"
    atomic_write_text(path, page)
    return path
