"""The search method: --sampler, --startup-trials and --scheduler, recorded and kept on resume."""

import json
import re

import optuna
import pytest

from model.errors import ConfigError
from results.status import status_text
from rundir import preflight
from rundir.record import describe_method
from rundir.settings import AUTO_GP_MAX_TRIALS, SAMPLERS, SCHEDULERS, Settings
from search.driver import launch, make_scheduler, resume, search_method
from search.scheduler import SCHEDULER_CLASSES, ResumableASHA, ResumableFIFO, ResumableHyperBand, ResumableMedian
from search.searcher import MAX_DUPLICATE_ASKS, FidelityAwareOptunaSearch, make_sampler, resolve_sampler, startup_trials
from spaces.space import parse_space
from tests.conftest import E2E_SPACE

NUMERIC_SPACE = """
fixed: {hidden_size: 32, num_layers: 1, num_heads: 2, intermediate_size: 64, pooler: mean, batch_size: 16}
params:
  lr: {float: [1.0e-4, 1.0e-2], log: true}
  dropout: {float: [0.0, 0.3]}
"""
NUMERIC = parse_space("params:\n  lr: {float: [1.0e-4, 1.0e-2], log: true}\n  msd_count: {int: [1, 4]}\n")
CONDITIONAL = parse_space(E2E_SPACE)


@pytest.mark.parametrize("num_samples, warm, requested, expected", [
    (12, 1, None, 2),     # the demo: 2 random trials, then TPE (Optuna's default 10 left it 2 TPE trials)
    (40, 0, None, 6),     # 15%
    (200, 0, None, 10),   # at most Optuna's default
    (4, 0, None, 2),      # at least 2
    (12, 3, None, 3),     # at least the warm starts
    (30, 12, None, 12),
    (12, 1, 0, 0),        # as asked
    (12, 1, 11, 11),
])
def test_startup_trials_scale_with_the_budget(num_samples, warm, requested, expected):
    assert startup_trials(num_samples, warm, requested) == expected


@pytest.mark.parametrize("space, num_samples, expected", [
    (NUMERIC, 50, "gp"),
    (NUMERIC, AUTO_GP_MAX_TRIALS, "gp"),
    (NUMERIC, AUTO_GP_MAX_TRIALS + 1, "tpe"),   # long runs: TPE
    (CONDITIONAL, 50, "tpe"),                   # choices and conditional parameters: TPE
])
def test_auto_picks_gp_for_numeric_spaces_under_a_budget_else_tpe(space, num_samples, expected):
    assert resolve_sampler("auto", space, num_samples) == expected
    assert resolve_sampler("random", space, num_samples) == "random"


@pytest.mark.parametrize("name, kind", [
    ("tpe", optuna.samplers.TPESampler), ("random", optuna.samplers.RandomSampler),
    ("gp", optuna.samplers.GPSampler), ("qmc", optuna.samplers.QMCSampler),
    ("cmaes", optuna.samplers.CmaEsSampler),
])
def test_each_sampler_name_builds_its_optuna_sampler_and_searches(name, kind, tmp_path):
    assert isinstance(make_sampler(name, seed=0, n_startup_trials=2), kind)
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'study.db'}")
    searcher = FidelityAwareOptunaSearch(CONDITIONAL, storage=storage, study_name="t", seed=0, sampler=name,
                                         n_startup_trials=1)
    for i in range(3):  # past the startup trials: the model-based samplers propose from the results
        params = searcher.suggest(f"t{i}")["params"]
        assert CONDITIONAL.config(params)  # a valid config of the space
        searcher.on_trial_complete(f"t{i}", {"level2_macro_f1": 0.1 * i, "best_level2_macro_f1": 0.1 * i,
                                             "epoch": 1, "finished": True})
    assert isinstance(searcher.study.sampler, kind)


def test_every_sampler_and_scheduler_name_is_buildable():
    assert set(SAMPLERS) - {"auto"} == {"tpe", "random", "gp", "qmc", "cmaes"}
    assert tuple(SCHEDULER_CLASSES) == SCHEDULERS
    assert isinstance(make_scheduler(Settings(scheduler="fifo"), 3), ResumableFIFO)
    assert isinstance(make_scheduler(Settings(scheduler="asha"), 3), ResumableASHA)
    hyperband = make_scheduler(Settings(scheduler="hyperband", grace_period=1, reduction_factor=2), 4)
    assert isinstance(hyperband, ResumableHyperBand) and len(hyperband.bracket_weights) == 3
    assert len(make_scheduler(Settings(scheduler="asha"), 4).bracket_weights) == 1
    median = make_scheduler(Settings(scheduler="median", grace_period=2), 4)
    assert isinstance(median, ResumableMedian) and median.time_key == "epoch"
    with pytest.raises(ConfigError, match="unknown sampler 'bo'"):
        make_sampler("bo", seed=0)


@pytest.mark.parametrize("settings, message", [
    (Settings(sampler="bo"), "--sampler is 'bo'; choose one of auto, tpe"),
    (Settings(scheduler="pbt"), "--scheduler is 'pbt'; choose one of asha, hyperband, median, fifo"),
    (Settings(startup_trials=-1), "--startup-trials is -1"),
])
def test_bad_methods_are_refused_before_ray_starts(settings, message):
    with pytest.raises(ConfigError, match=message):
        preflight.check_settings(settings)


def test_the_method_line_names_what_applies():
    settings = {"grace_period": 1, "reduction_factor": 3}
    assert describe_method({"sampler": "tpe", "startup_trials": 2, "scheduler": "asha"}, settings) == \
        "tpe (2 startup trials) + asha (grace 1, reduction 3)"
    assert describe_method({"sampler": "random", "startup_trials": 2, "scheduler": "fifo"}, settings) == \
        "random + fifo"
    assert describe_method({"sampler": "qmc", "startup_trials": 2, "scheduler": "hyperband"}, settings) == \
        "qmc + hyperband (grace 1, reduction 3)"
    assert describe_method({"sampler": "gp", "startup_trials": 4, "scheduler": "median"}, settings) == \
        "gp (4 startup trials) + median (grace 1)"


def test_a_random_fifo_search_records_its_method_trains_every_trial_fully_and_resume_keeps_it(tmp_path, local_ray):
    (tmp_path / "space.yaml").write_text(E2E_SPACE)
    settings = Settings(space=str(tmp_path / "space.yaml"), synthetic_rows=600, max_seq_len=32, folds=4,
                        num_samples=3, max_epochs=2, grace_period=1, reduction_factor=2, sampler="auto",
                        scheduler="fifo", storage_path=str(tmp_path / "runs"), name="m", seed=0)
    lines = []
    files, frame = launch(settings, argv=["launch"], out=lines.append)
    run = json.loads(files.run_json.read_text())
    assert run["method"] == {"sampler": "tpe", "startup_trials": 2, "scheduler": "fifo"}  # auto: a conditional space
    assert search_method(settings, CONDITIONAL) == run["method"]
    assert any("tpe (2 startup trials) + fifo" in line for line in lines)
    assert (frame["status"] == "completed").all() and (frame["epochs"] == 2).all()  # fifo stops nothing
    assert "method: tpe (2 startup trials) + fifo" in status_text(files.root)

    lines.clear()
    resume(files.root, num_samples=4, out=lines.append)
    assert json.loads(files.run_json.read_text())["method"] == run["method"]
    assert any("tpe (2 startup trials) + fifo" in line for line in lines)


def test_a_search_of_a_small_discrete_space_ends_when_the_space_is_exhausted(tmp_path, local_ray):
    (tmp_path / "space.yaml").write_text(
        "fixed: {hidden_size: 32, num_layers: 1, num_heads: 2, intermediate_size: 64, batch_size: 16}\n"
        "params:\n  pooler: {choice: [cls, mean]}\n")
    settings = Settings(space=str(tmp_path / "space.yaml"), synthetic_rows=600, max_seq_len=32, folds=4,
                        num_samples=5, max_epochs=1, sampler="random", storage_path=str(tmp_path / "runs"),
                        name="x", seed=0)
    lines = []
    files, frame = launch(settings, argv=["launch"], out=lines.append)
    assert sorted(frame["param.pooler"]) == ["cls", "mean"]  # each configuration trained once
    assert any("ends after 2 of 5 trials" in line for line in lines)
    run = json.loads(files.run_json.read_text())
    assert run["settings"]["num_samples"] == 2 and run["space_exhausted"]
    assert not any("stopped early" in line for line in lines)
    text = status_text(files.root)
    assert "trials: 2 of 2 started" in text
    repeats = re.search(r"duplicates: the sampler proposed (\d+) configurations already trained or training", text)
    assert repeats and int(repeats[1]) >= MAX_DUPLICATE_ASKS


@pytest.mark.parametrize("sampler, scheduler", [
    ("random", "asha"), ("gp", "asha"), ("qmc", "hyperband"), ("cmaes", "fifo"), ("tpe", "median"),
])
def test_each_sampler_and_scheduler_runs_a_tiny_search_end_to_end(sampler, scheduler, tmp_path, local_ray):
    (tmp_path / "space.yaml").write_text(NUMERIC_SPACE)
    settings = Settings(space=str(tmp_path / "space.yaml"), synthetic_rows=600, max_seq_len=32, folds=4,
                        num_samples=3, max_epochs=2, grace_period=1, reduction_factor=2, sampler=sampler,
                        startup_trials=1, scheduler=scheduler, storage_path=str(tmp_path / "runs"), name="s", seed=0)
    files, frame = launch(settings, argv=["launch"], out=lambda line: None)
    assert len(frame) == 3 and set(frame["status"]) <= {"completed", "pruned"}
    if scheduler == "fifo":
        assert (frame["status"] == "completed").all()
    run = json.loads(files.run_json.read_text())
    assert run["method"] == {"sampler": sampler, "startup_trials": 1, "scheduler": scheduler}
    study = optuna.load_study(study_name="s", storage=files.study_url)
    assert sorted(t.number for t in study.trials if t.state.is_finished()) == [0, 1, 2]
    if scheduler in ("hyperband", "median"):  # rebuilt from the records on resume (test_scheduler.py)
        files, frame = resume(files.root, num_samples=4, out=lambda line: None)
        assert len(frame) == 4 and set(frame["status"]) <= {"completed", "pruned"}
        assert json.loads(files.run_json.read_text())["method"]["scheduler"] == scheduler
