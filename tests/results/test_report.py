"""The HTML report, on synthetic run directories: a run record, trial records and an Optuna study
that agree with each other, as a search leaves them (no Ray, no training)."""

import dataclasses
import datetime as dt
import re
import warnings

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import optuna
import pandas as pd
import pytest
from matplotlib.colors import to_hex
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.importance import FanovaImportanceEvaluator
from optuna.trial import TrialState, create_trial

from model import metrics as M
from results.report import COLORS, SCORE, plot_importances, plot_intermediate, plot_parallel, write_report
from rundir.confirm import EnsembleRecord
from rundir.io import atomic_write_json
from rundir.paths import RunFiles
from rundir.trials import COMPLETED, ERROR, PRUNED, RUNNING, TrialRecord, load_records, save_records

MAX_EPOCHS, STEPS_PER_EPOCH = 4, 50
LABELS = [f"{i // 5}-{i}" for i in range(35)]
DISTRIBUTIONS = {"lr": FloatDistribution(1e-5, 1e-2, log=True), "loss": CategoricalDistribution(["ce", "focal"]),
                 "focal_gamma": FloatDistribution(1.0, 3.0)}
STATE = {COMPLETED: TrialState.COMPLETE, PRUNED: TrialState.PRUNED, RUNNING: TrialState.RUNNING,
         ERROR: TrialState.FAIL}
# (status, epochs trained, lr, loss): the score depends on lr only, so lr is what fANOVA must rank first.
TRIALS = [
    (COMPLETED, 4, 1e-3, "ce"), (COMPLETED, 4, 3e-3, "focal"), (COMPLETED, 4, 2e-4, "ce"),
    (COMPLETED, 4, 5e-5, "focal"), (COMPLETED, 4, 8e-3, "ce"), (PRUNED, 1, 1e-5, "ce"), (PRUNED, 1, 2e-5, "focal"),
    (PRUNED, 2, 4e-4, "focal"), (PRUNED, 2, 3e-5, "ce"), (PRUNED, 1, 6e-3, "ce"), (RUNNING, 2, 1.5e-3, "focal"),
    (ERROR, 1, 7e-4, "ce"),
]
CREATED = dt.datetime(2025, 1, 1, 12, 0, tzinfo=dt.UTC)


def score(lr: float, epoch: int) -> float:
    """Peaks at lr = 1e-3; rises with the epochs."""
    return round((0.6 - 0.1 * abs(np.log10(lr) + 3)) * (1 - 0.5 ** epoch), 6)


def make_run(root, trials=TRIALS):
    """A run directory as `python -m search launch` leaves it, with `trials` in it."""
    files = RunFiles(root / "synthetic")
    files.root.mkdir(parents=True)
    atomic_write_json(files.run_json, {
        "name": "synthetic", "created": CREATED.isoformat(), "command": "python -m search launch",
        "settings": {"num_samples": len(trials), "grace_period": 1, "reduction_factor": 2, "max_failures": 0},
        "searched": list(DISTRIBUTIONS), "max_epochs": MAX_EPOCHS, "seed": 0, "fold": 0,
        "data": {"source": "synthetic", "level2_labels": LABELS}, "concurrency": 2,
        "reproduce": "python -m search train-one --space space.yaml"})
    study = optuna.create_study(study_name="synthetic", storage=files.study_url, direction="maximize")
    records, start = {}, CREATED.timestamp()
    for number, (status, epochs, lr, loss) in enumerate(trials):
        params = {"lr": lr, "loss": loss} | ({"focal_gamma": 1.0 + lr * 100} if loss == "focal" else {})
        history = [{M.EPOCH: e, M.LEVEL2_MACRO_F1: score(lr, e), M.LEVEL1_MACRO_F1: score(lr, e) + 0.2,
                    M.ACCURACY: 0.5, M.DEV_LOSS: 1.0, M.WORST5_F1: 0.0, "timestamp": start + 60 * (number + e),
                    M.STEP: STEPS_PER_EPOCH * e} for e in range(1, epochs + 1)]
        best = max(h[M.LEVEL2_MACRO_F1] for h in history)
        records[f"t{number:02d}"] = TrialRecord(
            trial_id=f"t{number:02d}", optuna_number=number, params=params, status=status, history=history,
            error="boom" if status == ERROR else None, time_s=60.0 * epochs, started_at=start + 60 * number,
            ended_at=None if status == RUNNING else start + 60 * (number + epochs),
            best_per_class_f1=[best] * len(LABELS) if status == COMPLETED else None)
        study.add_trial(create_trial(
            state=STATE[status], value=best if status == COMPLETED else None, params=params,
            distributions={name: DISTRIBUTIONS[name] for name in params},
            intermediate_values={h[M.STEP]: h[M.LEVEL2_MACRO_F1] for h in history}))
    save_records(files, records)
    return files, study


@pytest.fixture
def run(tmp_path):
    return make_run(tmp_path)


FIGURES = ("progress", "importance", "parallel", "intermediate", "rungs", "per_class")


def test_report_draws_every_figure_and_leaves_matplotlib_and_optuna_settings_alone(run):
    files, _ = run
    settings, verbosity = dict(matplotlib.rcParams), optuna.logging.get_verbosity()
    page = write_report(files.root)
    content = page.read_text()
    assert "not drawn" not in content
    for name in FIGURES:
        assert f'src="figures/{name}.png"' in content
        figure = page.parent / "figures" / f"{name}.png"
        assert figure.read_bytes()[:4] == b"\x89PNG" and figure.stat().st_size > 10_000
    # Optuna's plots switch to the ggplot style; the figures drawn after them stay in the default one
    assert dict(matplotlib.rcParams) == settings and optuna.logging.get_verbosity() == verbosity
    assert plt.get_fignums() == []  # every figure closed
    assert "python -m search train-one --space space.yaml --set lr=0.001 --set loss=ce" in content
    settings_table = dict(re.findall(r"<tr><th>(.*?)</th><td>(.*?)</td></tr>", content))
    assert settings_table["Searched parameters"] == "focal_gamma, loss, lr"
    assert settings_table["Scheduler"] == "ASHA, grace period 1, reduction factor 2"
    assert settings_table["Data"] == "synthetic"


def test_importances_are_fanova_over_the_parameters_every_completed_trial_has(run):
    _, study = run
    ax = plot_importances(study).axes[0]
    drawn = {label.get_text(): bar.get_width() for bar, label in zip(ax.patches, ax.get_yticklabels(), strict=True)}
    # focal_gamma exists only where loss is focal: fANOVA cannot rate it over all completed trials
    assert set(drawn) == {"lr", "loss"}
    expected = optuna.importance.get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=0))
    assert drawn == pytest.approx(expected)
    assert drawn["lr"] > drawn["loss"]  # the score depends on lr alone
    assert ax.get_xlabel() == "importance (fANOVA over the 5 completed trials)"
    plt.close("all")


def test_parallel_coordinates_draw_the_top_completed_trials(run):
    _, study = run
    ax = plot_parallel(study, top=3).axes[0]
    (lines,) = ax.collections
    # a line starts on the objective's axis, at the trial's value
    values = sorted((segment[0][1] for segment in lines.get_segments()), reverse=True)
    completed = sorted((t.value for t in study.trials if t.state == TrialState.COMPLETE), reverse=True)
    assert values == pytest.approx(completed[:3])
    # focal_gamma exists only where loss is focal: an axis of it would draw the others at "None"
    assert [t.get_text() for t in ax.get_xticklabels()] == [SCORE, "loss", "lr"]
    assert [t.get_text() for t in ax.figure.texts] == ["not drawn (absent in some, or equal in all): focal_gamma"]
    assert ax.get_title() == f"Top 3 of 5 completed trials (color: {SCORE})"
    # lr's log axis reads 0.001, not 10^-3 in mathtext, which is wide enough to run into the colorbar
    ax.figure.canvas.draw()
    (lr_axis,) = [a for a in ax.get_shared_x_axes().get_siblings(ax) if a.get_yscale() == "log"]
    labels = [t.get_text() for t in lr_axis.get_yticklabels(which="both") if t.get_text()]
    assert labels and all(re.fullmatch(r"[0-9.e-]+", label) for label in labels), labels
    plt.close("all")


def test_parallel_coordinates_of_trials_sharing_a_value_draw_without_warnings():
    study = optuna.create_study(direction="maximize")
    for i, lr in enumerate((1e-3, 2e-3, 3e-3)):  # dropout is the same in every trial: a one-point axis
        study.add_trial(create_trial(params={"lr": lr, "dropout": 0.1}, value=0.1 * i, distributions={
            "lr": FloatDistribution(1e-4, 1e-2, log=True), "dropout": FloatDistribution(0.0, 0.5)}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        figure = plot_parallel(study)
    assert figure.axes[0].get_title() == f"Top 3 of 3 completed trials (color: {SCORE})"
    assert [t.get_text() for t in figure.axes[0].get_xticklabels()] == [SCORE, "lr"]
    assert [t.get_text() for t in figure.texts] == ["not drawn (absent in some, or equal in all): dropout"]
    plt.close("all")


def test_intermediate_values_draw_every_evaluated_trial_by_epoch(run):
    files, _ = run
    records = load_records(files)
    lines = plot_intermediate(list(records.values())).axes[0].get_lines()
    assert len(lines) == len(TRIALS)  # the failed trial's evaluation is drawn too, in red
    completed = sorted((n for n, t in enumerate(TRIALS) if t[0] == COMPLETED), key=lambda n: -score(TRIALS[n][2], 4))
    named = [line.get_label() for line in lines if not line.get_label().startswith("_")]
    assert sorted(named) == sorted(f"trial {n}" for n in completed)
    for number, line in enumerate(lines):
        status, epochs, lr, _ = TRIALS[number]
        assert list(line.get_xdata()) == list(range(1, epochs + 1))  # epochs, not optimizer steps
        assert list(line.get_ydata()) == [score(lr, e) for e in range(1, epochs + 1)]
        if status != COMPLETED:
            assert to_hex(line.get_color()) == COLORS[status]
    colors = {to_hex(line.get_color()) for n, line in enumerate(lines) if TRIALS[n][0] == COMPLETED}
    assert len(colors) == len(completed)  # each completed trial in its own color
    legend = [t.get_text() for t in lines[0].axes.get_legend().get_texts()]
    assert legend[-3:] == ["pruned trials", "running trials", "error trials"]
    plt.close("all")


@pytest.mark.parametrize("trials, missing", [
    ([], {"progress": "no evaluation has a timestamp yet", "importance": "needs at least 2 completed trials "
          "(this run has 0)", "parallel": "needs at least 2 completed trials (this run has 0)",
          "intermediate": "no trial has been evaluated yet", "rungs": "no trial yet",
          "per_class": "needs a completed trial"}),
    (TRIALS[4:6] + TRIALS[-2:], {"importance": "needs at least 2 completed trials (this run has 1)",
                                 "parallel": "needs at least 2 completed trials (this run has 1)"}),
    (TRIALS[5:], {"importance": "needs at least 2 completed trials (this run has 0)",
                  "parallel": "needs at least 2 completed trials (this run has 0)",
                  "per_class": "needs a completed trial"}),
])
def test_report_of_a_young_run_says_why_a_figure_is_missing(tmp_path, trials, missing):
    files, _ = make_run(tmp_path, trials)
    stale = files.report_dir / "figures" / "parallel.png"  # left by a report of a run that had more trials
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old")
    page = write_report(files.root)
    content = page.read_text()
    assert re.findall(r"not drawn \((.*?)\)\.</p>", content) == list(missing.values())
    for name in FIGURES:
        assert (f'src="figures/{name}.png"' in content) == (name not in missing)
        assert (page.parent / "figures" / f"{name}.png").exists() == (name not in missing)
    assert plt.get_fignums() == []


@pytest.mark.parametrize("trials, reason", [
    ([(0.5, {"a": 0.1}), (0.6, {"b": 0.2})], "no parameter is shared by all completed trials"),
    ([(0.5, {"a": 0.1}), (0.5, {"a": 0.2}), (0.5, {"a": 0.3})],
     "Optuna could not compute them: Encountered zero total variance in all trees."),
])
def test_importances_that_cannot_be_computed_say_why(trials, reason):
    study = optuna.create_study(direction="maximize")
    for value, params in trials:
        study.add_trial(create_trial(value=value, params=params,
                                     distributions={name: FloatDistribution(0, 1) for name in params}))
    assert plot_importances(study) == reason
    assert plt.get_fignums() == []


def test_report_shows_the_confirmed_members_and_the_ensemble_options(run):
    files, _ = run
    assert "Confirmed on every fold" not in write_report(files.root).read_text()  # no confirm stage yet
    confirm = files.confirm
    confirm.root.mkdir()
    pd.DataFrame([
        {"rank": 1, "member": "trial-3", "kind": "network", "optuna_number": 3, "level2_mean": 0.52,
         "level2_std": 0.01, "level1_mean": 0.6, "oof_level2_macro_f1": 0.521, "level2_fold0": 0.51,
         "level2_fold1": 0.53, "paired_diff_vs_best": 0.0, "wins_vs_best": "0/2", "p_value_vs_best": None,
         "status": "complete"},
        {"rank": 2, "member": "linear", "kind": "linear", "optuna_number": None, "level2_mean": 0.5,
         "level2_std": 0.02, "level1_mean": 0.55, "oof_level2_macro_f1": 0.499, "level2_fold0": 0.48,
         "level2_fold1": 0.52, "paired_diff_vs_best": -0.02, "wins_vs_best": "0/2", "p_value_vs_best": 0.2,
         "status": "complete"},
    ]).to_csv(confirm.confirm_csv, index=False)
    option = {"members": ["trial-3", "linear"], "weights": [2, 1], "oof_score": 0.55, "nested_score": 0.5432}
    EnsembleRecord(
        members=("trial-3", "linear"), weights=(2, 1), method="prob", selection="greedy", max_members=20,
        oof_score=0.55, nested_score=0.5432, fold_scores=(0.54, 0.55), fold_weights=((2, 1), (2, 1)), folds=(0, 1),
        option="greedy", member_kinds={"trial-3": "network", "linear": "linear"}, labels=("1-1", "2-2"), rows=10,
        member_scores={"trial-3": {"oof": 0.521}, "linear": {"oof": 0.499}}, best_member="trial-3",
        beats_best_member=True, left_out={}, oof_sha256={},
        options={"prob": {**option, "weights": [1, 1], "nested_score": 0.531}, "greedy": option},
    ).save(confirm.ensemble_json)
    page = write_report(files.root).read_text()
    assert "Confirmed on every fold" in page and 'src="figures/confirmed.png"' in page
    assert page.index("<td>trial-3</td>") < page.index("<td>linear</td>")
    assert page.index("greedy (chosen)") < page.index("<td>prob</td>")  # the chosen option first
    assert "trial-3 x2, linear x1" in page and "0.5432" in page
    assert "Best single member: trial-3 (OOF level-2 macro-F1 0.5210)" in page
    figure = files.report_dir / "figures" / "confirmed.png"
    assert figure.read_bytes()[:4] == b"\x89PNG"
    # an ensemble.json of an older version has no per-label F1: the figure says so
    assert "Per-class F1 of the chosen ensemble (nested): not drawn (ensemble.json has no per-label F1" in page
    record = EnsembleRecord.load(confirm.ensemble_json)
    dataclasses.replace(record, label_f1=(0.0, 0.8)).save(confirm.ensemble_json)
    page = write_report(files.root).read_text()
    assert 'src="figures/ensemble_labels.png"' in page and "not drawn (ensemble.json" not in page
    assert (files.report_dir / "figures" / "ensemble_labels.png").read_bytes()[:4] == b"\x89PNG"
