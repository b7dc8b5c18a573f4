"""The search-efficiency benchmark's machinery: recording curves, the surrogate, and replays
through the real driver (benchmarks/record_curves.py, curves.py, search_efficiency.py)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from benchmarks import record_curves, search_efficiency
from benchmarks.curves import CONFIG, EPOCH_S, PARAM_PREFIX, config_rows, fit_surrogate, read_curves, validate_surrogate
from model import metrics as M
from spaces.space import load_space

SPACE = load_space("spaces/seed.yaml")


def record_argv(out, epochs=2):
    return ["--out", str(out), "--configs", "3", "--max-epochs", str(epochs), "--synthetic-rows", "211",
            "--max-seq-len", "16", "--workers", "1"]


@pytest.mark.slow
def test_record_curves_writes_every_epoch_and_continues_after_a_kill(tmp_path, capsys):
    out = tmp_path / "curves.csv"
    record_curves.main(record_argv(out))
    full = read_curves(out)
    assert list(full.columns) == [CONFIG, *(PARAM_PREFIX + n for n in SPACE.searched), M.EPOCH,
                                  M.LEVEL2_MACRO_F1, M.LEVEL1_MACRO_F1, EPOCH_S]
    assert sorted(full[CONFIG].unique()) == ["c0000", "c0001", "c0002"]
    assert full.groupby(CONFIG)[M.EPOCH].apply(sorted).tolist() == [[1, 2]] * 3
    assert (full[EPOCH_S] > 0).all() and full[M.LEVEL2_MACRO_F1].between(0, 1).all()
    assert "[3/3] c0002" in capsys.readouterr().out

    # A kill while c0001's rows were being written: its second row is cut off mid-line.
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:4]) + lines[4][:15])
    record_curves.main(record_argv(out))
    said = capsys.readouterr().out
    assert "dropping 1 config(s)" in said and "1 of 3 configs recorded, training 2" in said
    again = read_curves(out)
    pd.testing.assert_frame_equal(again.drop(columns=EPOCH_S), full.drop(columns=EPOCH_S))

    record_curves.main(record_argv(out))  # nothing left to do
    assert "3 of 3 configs recorded, training 0" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:  # other settings would mix experiments
        record_curves.main(record_argv(out, epochs=3))
    assert exit_info.value.code == 2
    assert "max_epochs: 2" in capsys.readouterr().err


@pytest.mark.slow
def test_a_table_continues_on_the_same_data_at_another_path_but_not_on_other_data(tmp_path, capsys):
    from model.synthetic import synthesize
    frame = synthesize(211, seed=0)[0]
    for name, data in (("here", frame), ("there", frame), ("other", synthesize(211, seed=1)[0])):
        (tmp_path / name).mkdir()
        data.to_csv(tmp_path / name / "train.csv", index=False)
    out = tmp_path / "curves.csv"

    def argv(data_dir, configs):
        return ["--out", str(out), "--configs", str(configs), "--max-epochs", "1", "--data", str(tmp_path / data_dir),
                "--max-seq-len", "16", "--workers", "1"]

    record_curves.main(argv("here", 1))
    record_curves.main(argv("there", 2))  # the same file moved (another machine): the table goes on
    assert "1 of 2 configs recorded, training 1" in capsys.readouterr().out
    assert sorted(read_curves(out)[CONFIG].unique()) == ["c0000", "c0001"]
    with pytest.raises(SystemExit):
        record_curves.main(argv("other", 3))
    assert "data_sha256" in capsys.readouterr().err


def synthetic_curves(configs=30, epochs=3, seed=0) -> pd.DataFrame:
    """A curve table whose final F1 follows the learning rate and the loss, with rising curves,
    and whose epoch time follows the batch size: something a surrogate can learn."""
    rng = np.random.default_rng(seed)
    frames = []
    for cid, params in record_curves.sample_configs(SPACE, configs, seed):
        final = 0.3 + 0.15 * math.log10(params["lr"] / 3e-4) + 0.1 * (params["loss"] == "dice") + rng.normal(0, 0.01)
        seconds = 64 / params["batch_size"]
        frames.append(config_rows(cid, params, SPACE, [(e, final * e / epochs, final + 0.1, seconds)
                                                       for e in range(1, epochs + 1)]))
    return pd.concat(frames, ignore_index=True)


def test_surrogate_ranks_held_out_configs():
    frame = synthetic_curves(configs=40)
    check = validate_surrogate(frame, SPACE)
    assert check["configs"] == 40 and check["spearman_final_f1"] > 0.7
    f1, seconds = fit_surrogate(frame, SPACE).predict([{"lr": 4e-3, "loss": "dice", "batch_size": 16}])
    assert f1.shape == seconds.shape == (1, 3) and np.all(np.diff(f1[0]) > 0)


@pytest.mark.ray
def test_search_efficiency_replays_methods_at_equal_budget(tmp_path, capsys, monkeypatch):
    curves = tmp_path / "curves.csv"
    synthetic_curves().to_csv(curves, index=False)
    out = tmp_path / "out"
    search_efficiency.main([str(curves), "--methods", "random+fifo,tpe+asha", "--seeds", "2",
                            "--budget-trials", "3", "--out", str(out)])
    said = capsys.readouterr().out
    assert "Spearman rank correlation" in said and "| method" in said
    table = pd.read_csv(out / "summary.csv")
    assert list(table.columns) == search_efficiency.SUMMARY_COLUMNS
    assert list(table["method"]) == ["random+fifo", "tpe+asha"]
    assert set(table["budget_epochs"]) == {9} and set(table["seeds"]) == {2}
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 4 and set(runs["budget_epochs"]) == {9}
    assert (runs["best_at_third"] <= runs["final_best"]).all()
    fifo = runs[runs["method"] == "random+fifo"]
    assert set(fifo["trials"]) == {3}  # FIFO: 3 full trials; ASHA spends the same epochs on more
    assert (runs.loc[runs["method"] == "tpe+asha", "trials"] > 3).all()
    assert table.loc[table["method"] == "random+fifo", "speedup"].item() == pytest.approx(1.0)
    assert (out / "search_efficiency.png").stat().st_size > 0

    # The same replays two at a time, each process on its own local Ray, give the same runs.
    search_efficiency.main([str(curves), "--methods", "random+fifo,tpe+asha", "--seeds", "1",
                            "--budget-trials", "3", "--out", str(tmp_path / "parallel"), "--jobs", "2"])
    parallel = pd.read_csv(tmp_path / "parallel" / "runs.csv")
    same = ["method", "seed", "budget_epochs", "trials", "final_best"]
    pd.testing.assert_frame_equal(parallel[same], runs.loc[runs["seed"] == 0, same].reset_index(drop=True))

    # The same command again replays nothing: every replay was kept under --out with its table's
    # and settings' fingerprint; a changed table replays them all again.
    def no_replays(*args, **kwargs):
        raise AssertionError("replayed again")

    monkeypatch.setattr(search_efficiency, "replay", no_replays)
    search_efficiency.main([str(curves), "--methods", "random+fifo,tpe+asha", "--seeds", "2",
                            "--budget-trials", "3", "--out", str(out)])
    assert "4 of 4 replays kept" in capsys.readouterr().out
    pd.testing.assert_frame_equal(pd.read_csv(out / "runs.csv"), runs)
    first = curves.read_text().splitlines()[1].split(",")[0]  # one more config: every epoch of the first again
    with curves.open("a") as table:
        table.writelines("x" + line[1:] + "\n" for line in curves.read_text().splitlines()
                         if line.startswith(first + ","))
    with pytest.raises(AssertionError, match="replayed again"):
        search_efficiency.main([str(curves), "--methods", "random+fifo", "--seeds", "1",
                                "--budget-trials", "3", "--out", str(out)])


@pytest.mark.parametrize("scheduler, expected", [("fifo", 5.0), ("asha", 1 + 0.5 + 0.25 * 2 + 0.125)])
def test_expected_epochs(scheduler, expected):
    assert search_efficiency.expected_epochs(5, 1, 2, scheduler) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["", "config,param.lr", "config,param.lr,epoch\n", "config,param.lr,epoch\nc0000,0.1"])
def test_a_table_cut_before_any_whole_row_starts_afresh(tmp_path, text):
    path = tmp_path / "curves.csv"
    path.write_text(text)
    assert record_curves.complete_rows(path, 2).empty
    assert path.read_text() == ""


def test_summarise_measures_each_run_against_the_reference_median():
    def run(method, seed, best):
        best = np.maximum.accumulate(np.asarray(best, dtype=float))
        return {"method": method, "seed": seed, "budget_epochs": len(best), "trials": 2, "best": best,
                "clock": 10.0 * np.arange(1, len(best) + 1), "wall_s": 1.0}

    runs = [run("random+fifo", 0, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]),
            run("random+fifo", 1, [0.1, 0.1, 0.1, 0.1, 0.1, 0.4]),
            run("tpe+asha", 0, [0.5, 0.5, 0.5, 0.5, 0.5, 0.5]),
            run("tpe+asha", 1, [0.1, 0.1, 0.1, 0.1, 0.1, 0.1])]
    per_run, table, target, reference = search_efficiency.summarise(runs, table_best=0.7)
    assert reference == "random+fifo" and target == pytest.approx(0.4)  # the lower median of 0.6 and 0.4
    assert list(per_run["epochs_to_target"]) == [4, 6, 1, math.inf]
    assert list(per_run["sim_s_to_target"]) == [40, 60, 10, math.inf]
    assert list(per_run["best_at_third"]) == pytest.approx([0.2, 0.1, 0.5, 0.1])
    assert list(per_run["mean_best"]) == pytest.approx([0.35, 0.15, 0.5, 0.1])
    tpe = table.set_index("method").loc["tpe+asha"]
    assert tpe["reached"] == "1/2" and tpe["epochs_to_target"] == 1 and tpe["speedup"] == pytest.approx(4.0)
    assert tpe["mean_best"] == pytest.approx(0.3) and tpe["regret"] == pytest.approx(0.7 - 0.3)


def test_replays_are_bound_to_the_startup_trials_only_when_set(tmp_path):
    curves = tmp_path / "curves.csv"
    synthetic_curves(configs=4).to_csv(curves, index=False)
    space = tmp_path / "space.yaml"
    space.write_text("lr: {type: loguniform, low: 1.0e-4, high: 1.0e-2}\n")

    def key(*flags):
        return search_efficiency.replay_key(search_efficiency.parse_args([str(curves), *flags]), space, 100)

    assert "startup_trials" not in key()  # as before the flag existed: replays kept then still match
    assert key("--startup-trials", "3")["startup_trials"] == 3 and key("--startup-trials", "3") != key()
    with pytest.raises(SystemExit):
        search_efficiency.parse_args([str(curves), "--startup-trials", "-1"])


def test_a_replay_launches_with_the_startup_trials_asked_for(tmp_path, monkeypatch):
    surrogate = tmp_path / "surrogate.pkl"
    fit_surrogate(synthetic_curves(configs=8), SPACE).save(surrogate)
    launched = []

    def launch(settings, **kwargs):
        launched.append(settings)
        raise RuntimeError("launched")

    monkeypatch.setattr(search_efficiency, "launch", launch)
    for flags, expected in (([], None), (["--startup-trials", "3"], 3)):
        args = search_efficiency.parse_args(["curves.csv", *flags])
        with pytest.raises(RuntimeError, match="launched"):
            search_efficiency.replay("tpe", "asha", 0, args=args, space_path=tmp_path / "space.yaml",
                                     surrogate_path=surrogate, budget=10, storage=tmp_path)
        assert launched[-1].startup_trials == expected and launched[-1].sampler == "tpe"
