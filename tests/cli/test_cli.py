"""The CLI: every flag documented, one data parser for launch and train-one, dispatch by `func`,
exit status 2 on bad input, and `--set` values that read back as the numbers the leaderboard wrote."""

import argparse
import dataclasses
import shlex
from pathlib import Path

import pytest

import rundir.settings
import search.driver
import stages.confirm.run
import stages.pipeline
import stages.train_one
from cli import base, search_commands, stage_commands
from cli import main as cli
from cli.main import main
from model.errors import ConfigError, DataError
from results.ranking import reproduce_command
from rundir.confirm import RaceRule
from rundir.settings import Settings, command_prefix
from search.session import RestoreFailed
from spaces.space import load_space
from stages.train_one import parse_sets, resolve_config
from tests.conftest import E2E_SPACE, own_err

COMMANDS = ["launch", "resume", "confirm", "train-one", "export", "status", "report", "pretrain", "embed", "ensemble",
            "predict", "pipeline"]
# The least each command needs on its command line.
MINIMAL_ARGV = {"launch": [], "train-one": [], "pretrain": ["--corpus", "c.csv", "--out", "o"],
                "embed": ["--corpus", "c.csv", "--out", "o"],
                "predict": ["runs/x", "--data", "test.csv", "--out", "out.csv"],
                "pipeline": ["--test", "test.csv", "--out", "out.csv", "--budget", "1h"]}


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def flags(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if not isinstance(a, argparse._HelpAction)]


@pytest.fixture(autouse=True)
def no_quick_checks(monkeypatch):
    """These tests stand in for the commands on paths that do not exist (runs/x): the checks the command
    line makes before a command runs (cli/checks.py, tested in test_checks.py) are left out."""
    monkeypatch.setattr(cli, "quick_checks", lambda args: None)


# ----------------------------------------------------------------------------- structure


def test_the_commands_are_the_documented_ones():
    assert sorted(subparsers(cli.build_parser())) == sorted(COMMANDS)
    for command in COMMANDS:
        assert f"    {command} " in cli.__doc__  # the module docstring lists every command


@pytest.mark.parametrize("command", COMMANDS)
def test_every_flag_has_help(command):
    parser = subparsers(cli.build_parser())[command]
    for action in flags(parser):
        assert action.help and action.help.strip(), f"{command} {action.option_strings or action.dest} has no help"


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_dispatches_to_its_handler(command, monkeypatch):
    calls = []
    name = "cmd_" + command.replace("-", "_")
    module = search_commands if hasattr(search_commands, name) else stage_commands
    monkeypatch.setattr(module, name, lambda args, argv: calls.append((args.command, argv)))
    argv = [command, *MINIMAL_ARGV.get(command, ["runs/x"])]
    cli.main(argv)
    assert calls == [(command, argv)]


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_prints_cleanly(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--help"] if command is None else [command, "--help"])
    out, err = capsys.readouterr()
    assert exit_.value.code == 0 and err == ""
    assert out.startswith("usage: python -m search") and "(default: None)" not in out


@pytest.mark.parametrize("error", [ConfigError("bad flag"), DataError("bad row"), FileNotFoundError("no file"),
                                   RestoreFailed("no restore")])
def test_bad_input_is_an_error_line_and_exit_2(error, monkeypatch, capsys):
    def fail(args, argv):
        raise error

    monkeypatch.setattr(search_commands, "cmd_status", fail)
    with pytest.raises(SystemExit) as exit_:
        cli.main(["status", "runs/x"])
    assert exit_.value.code == base.EXIT_USAGE
    assert own_err(capsys) == f"error: {error}\n"


def test_launch_flags_map_one_to_one_onto_settings():
    launch = subparsers(cli.build_parser())["launch"]
    cli_only = {"verbose"}  # how the command prints, not what the run is
    assert {a.dest for a in flags(launch)} - cli_only == {f.name for f in dataclasses.fields(Settings)}


def test_settings_from_namespace_ignores_cli_only_attributes():
    args = argparse.Namespace(command="train-one", func=print, sets=["lr=1"], device="cpu", fold=3, seed=7)
    assert Settings.from_namespace(args) == Settings(fold=3, seed=7, sets=("lr=1",))  # --set is a setting


def test_confirm_flags_reach_confirm_and_unfinished_runs_exit_1(monkeypatch):
    calls = []

    def fake_confirm(run_dir, **kwargs):
        calls.append((run_dir, kwargs))
        return stages.confirm.run.Outcome(files=None, table=None, finished=False)

    monkeypatch.setattr(stages.confirm.run, "confirm", fake_confirm)
    argv = ["confirm", "runs/x", "--top", "3", "--folds", "4", "--seeds", "2", "--no-linear", "--force",
            "--address", "auto", "--cpus-per-trial", "2", "--gpus-per-trial", "0.5", "--max-concurrent", "6",
            "--max-failures", "1", "--bigrams", "ckpt/pairs", "--bigram-top", "3"]
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == base.EXIT_UNFINISHED
    assert calls == [("runs/x", dict(top=3, folds=4, seeds=2, linear=False, race=None, force=True, address="auto",
                                     cpus_per_trial=2.0, gpus_per_trial=0.5, max_concurrent=6, max_failures=1,
                                     bigrams="ckpt/pairs", bigram_top=3, argv=argv))]
    calls.clear()
    with pytest.raises(SystemExit):
        cli.main(["confirm", "runs/x", "--race", "--race-min-folds", "2", "--race-alpha", "0.1"])
    assert calls[0][1]["race"] == RaceRule(min_folds=2, alpha=0.1)
    calls.clear()
    with pytest.raises(SystemExit):
        cli.main(["confirm", "runs/x", "--race"])
    assert calls[0][1]["race"] == RaceRule(min_folds=3, alpha=0.05)
    defaults = cli.build_parser().parse_args(["confirm", "runs/y"])
    assert (defaults.top, defaults.folds, defaults.seeds, defaults.linear, defaults.force) == (5, 5, 1, True, False)
    assert (defaults.address, defaults.cpus_per_trial, defaults.max_concurrent, defaults.max_failures) == (None,) * 4
    assert (defaults.bigrams, defaults.bigram_top) == (None, 2)


@pytest.mark.parametrize(("pending", "argv", "expected"), [
    (True, ["resume", "runs/x"], "confirm"),
    (True, ["resume", "runs/x", "--retry-errored", "--max-failures", "3"], "confirm"),
    (True, ["resume", "runs/x", "--num-samples", "20"], "search"),  # --num-samples is about the search
    (False, ["resume", "runs/x"], "search"),
])
def test_resume_continues_an_unfinished_confirm_stage_else_the_search(pending, argv, expected, monkeypatch):
    calls = []
    monkeypatch.setattr(stages.confirm.run, "stage_pending", lambda run_dir: pending)
    monkeypatch.setattr(stages.confirm.run, "resume_confirm", lambda run_dir, **kw: (
        calls.append(("confirm", kw)), stages.confirm.run.Outcome(files=None, table=None, finished=True))[1])
    files = search.driver.RunFiles(Path("runs/x"))
    monkeypatch.setattr(search.driver, "resume", lambda run_dir, **kw: (calls.append(("search", kw)), (files, None))[1])
    monkeypatch.setattr(search.driver, "is_finished", lambda frame, num_samples: True)
    monkeypatch.setattr(search.driver, "run_budget", lambda files: 1)
    monkeypatch.setattr("rundir.io.read_json", lambda path: {"settings": {"num_samples": 0}})
    cli.main(argv)
    assert [c[0] for c in calls] == [expected]
    if expected == "confirm":
        assert calls[0][1] == {"max_failures": 3 if "--max-failures" in argv else None,
                               "retry_errored": "--retry-errored" in argv, "time_budget_s": None}


def test_pipeline_flags_reach_the_pipeline(monkeypatch):
    calls = []
    monkeypatch.setattr(stages.pipeline, "start_pipeline", lambda settings, **kwargs: calls.append((settings, kwargs)))
    argv = ["pipeline", "--test", "t.csv", "--out", "s.csv", "--budget", "90m", "--max-top", "4"]
    cli.main(argv)
    cli.main([*argv, "--bigrams"])
    cli.main([*argv, "--no-bigrams"])
    assert [(c[1]["budget_s"], c[1]["max_top"], c[1]["bigrams"]) for c in calls] == [
        (5400.0, 4, None), (5400.0, 4, True), (5400.0, 4, False)]  # None: the space decides
    assert calls[0][1]["test"] == "t.csv" and calls[0][1]["out_path"] == "s.csv"


def test_resume_of_a_pipeline_refuses_flags_that_cannot_apply(monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(stages.pipeline, "pipeline_pending", lambda run_dir: True)
    monkeypatch.setattr(stages.pipeline, "resume_pipeline", lambda run_dir: calls.append(run_dir))
    with pytest.raises(SystemExit) as exit_:
        cli.main(["resume", "runs/p", "--time-budget", "10m", "--retry-errored"])
    assert exit_.value.code == 2 and calls == []
    assert "runs/p is an unfinished pipeline: it goes on with its own budget and settings, so --time-budget, " \
           "--retry-errored cannot apply" in capsys.readouterr().err
    cli.main(["resume", "runs/p"])
    assert calls == ["runs/p"]


@pytest.mark.parametrize("command", ["launch", "resume"])
@pytest.mark.parametrize("statuses, code", [(["error", "error"], base.EXIT_ALL_FAILED), (["error", "completed"], None)])
def test_a_search_whose_every_trial_failed_exits_3_with_the_first_error(command, statuses, code, monkeypatch,
                                                                         capsys):
    import pandas as pd

    files = search.driver.RunFiles(Path("runs/x"))
    frame = pd.DataFrame({"status": statuses, "error": ["ValueError: boom", "ValueError: boom"]})
    monkeypatch.setattr(search.driver, "launch", lambda settings, argv: (files, frame))
    monkeypatch.setattr(search.driver, "resume", lambda run_dir, **kw: (files, frame))
    monkeypatch.setattr(stages.confirm.run, "stage_pending", lambda run_dir: False)
    monkeypatch.setattr(search.driver, "is_finished", lambda frame, num_samples: True)
    monkeypatch.setattr(search.driver, "run_budget", lambda files: 2)
    argv = ["launch", "--name", "x"] if command == "launch" else ["resume", "runs/x"]
    if code is None:
        cli.main(argv)
        assert "error:" not in own_err(capsys)
        return
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    err = own_err(capsys)
    assert exit_.value.code == code == 3
    assert "every trial of runs/x ended as an error (2 trials; the first: ValueError: boom)" in err
    assert "resume runs/x --retry-errored" in err and "Traceback" not in err


# ----------------------------------------------------------------------------- the shared data flags


@pytest.fixture
def captured(monkeypatch):
    """Run `main` for launch or train-one and return the Settings each would have run with."""
    seen = []
    monkeypatch.setattr(search.driver, "launch", lambda settings, argv: (seen.append(settings), None))
    monkeypatch.setattr(search.driver, "is_finished", lambda frame, num_samples: True)
    monkeypatch.setattr(search.driver, "run_budget", lambda files: 1)
    monkeypatch.setattr(stages.train_one, "train_one", lambda settings, **kwargs: seen.append(settings))

    def run(argv: list[str]) -> Settings:
        cli.main(argv)
        return seen.pop()
    return run


@pytest.mark.parametrize("argv, noted", [
    (["launch", "--data", "train.csv"], True),  # real data, the demo space by default: the user is told
    (["launch", "--data", "train.csv", "--space", "demo"], False),  # chosen
    (["launch", "--data", "train.csv", "--space", "cpu"], False),
    (["launch"], False),  # the demo itself
])
def test_launch_on_real_data_without_a_space_notes_the_space_that_pays(captured, capsys, argv, noted):
    settings = captured(argv)
    assert settings.space == (argv[argv.index("--space") + 1] if "--space" in argv else None)
    printed = capsys.readouterr().out
    assert ("note: no --space, so this searches the demo space" in printed) is noted
    if noted:
        assert "pass --space cpu with word vectors from `embed`" in printed and "`pipeline`" in printed


def non_defaults(parser: argparse.ArgumentParser) -> tuple[list[str], dict]:
    """Command-line flags giving every flag of `parser` a value other than its default, and those values."""
    argv, expected = [], {}
    for action in flags(parser):
        flag = action.option_strings[0]
        if isinstance(action, argparse._StoreTrueAction):
            argv, expected[action.dest] = [*argv, flag], True
        elif isinstance(action.default, int):  # type=int or a checked int (cli/flags.py)
            argv, expected[action.dest] = [*argv, flag, str(action.default + 3)], action.default + 3
        else:
            argv, expected[action.dest] = [*argv, flag, f"value-of-{action.dest}"], f"value-of-{action.dest}"
    return argv, expected


@pytest.mark.parametrize("command", ["launch", "train-one"])
def test_every_data_flag_reaches_the_settings(command, captured):
    argv, expected = non_defaults(search_commands.data_parser())
    assert len(expected) >= 7
    settings = captured([command, *argv])
    assert {name: getattr(settings, name) for name in expected} == expected


def test_a_flag_added_to_the_data_parser_works_in_launch_and_train_one(captured, monkeypatch):
    @dataclasses.dataclass(frozen=True)
    class WithTokenizer(Settings):
        tokenizer: str = "char"

    original = search_commands.data_parser

    def data_parser():
        parser = original()
        parser.add_argument("--tokenizer", default="char", help="a flag the data parser does not have yet")
        return parser

    monkeypatch.setattr(rundir.settings, "Settings", WithTokenizer)
    monkeypatch.setattr(search_commands, "data_parser", data_parser)
    for command in ("launch", "train-one"):
        assert captured([command, "--tokenizer", "bpe", "--fold", "2"]).tokenizer == "bpe"
        assert captured([command]).tokenizer == "char"


@pytest.mark.parametrize("data", [None, "some/dir"])
def test_the_reproduction_prefix_rebuilds_the_data_settings(data, tmp_path):
    settings = Settings(data=data and str(tmp_path / data), synthetic_rows=3000, synthetic_seed=4, folds=4, fold=1,
                        max_seq_len=64, seed=9, cpus_per_trial=2)
    prefix = command_prefix(settings, space_path=tmp_path / "space.yaml", max_epochs=5)
    args = cli.build_parser().parse_args(shlex.split(prefix)[3:])
    assert args.func is search_commands.cmd_train_one and args.threads == 2
    rebuilt = Settings.from_namespace(args)
    expected = {a.dest: getattr(settings, a.dest) for a in flags(search_commands.data_parser())}
    expected["synthetic"] = data is None  # the prefix names the data source explicitly
    if data is not None:  # the synthetic generator's flags do not apply to --data
        expected.update(data=str((tmp_path / data).resolve()), synthetic_rows=Settings().synthetic_rows,
                        synthetic_seed=Settings().synthetic_seed)
    assert {name: getattr(rebuilt, name) for name in expected} == expected
    assert (rebuilt.seed, rebuilt.max_epochs, rebuilt.space) == (9, 5, str((tmp_path / "space.yaml").resolve()))


# ----------------------------------------------------------------------------- --set values


@pytest.mark.parametrize("item, value", [
    ("lr=2e-05", 2e-05), ("dice_smooth=1e-07", 1e-07), ("weight_decay=1e-3", 1e-3), ("lr=1E-4", 1e-4),
    ("lr=0.1", 0.1), ("batch_size=3", 3), ("flood_b=1E5", 1e5), ("dropout=-0.5", -0.5),  # range: TrialConfig's job
    ("loss=focal", "focal"), ("pooler=cls+mean", "cls+mean"), ("checkpoint=2024", "2024"), ("checkpoint=", ""),
])
def test_set_values_are_python_numbers_or_strings(item, value):
    (parsed,) = parse_sets([item]).values()
    assert parsed == value and type(parsed) is type(value)


@pytest.mark.parametrize("item, message", [
    ("lr=nan", r"--set lr=nan: `lr` must be a finite number, e.g. --set lr=0.001"),
    ("lr=-inf", r"`lr` must be a finite number"),
    ("lr=yes", r"--set lr=yes: `lr` takes a number \(float\), e.g. --set lr=0.001"),
    ("lr=", r"`lr` takes a number"),
    ("lrate=0.1", r"unknown field\(s\) lrate; valid fields are: encoder, "),
    ("lr", r"--set 'lr' is not key=value"),
])
def test_bad_set_values_say_how_to_fix(item, message):
    with pytest.raises(ConfigError, match=message):
        parse_sets([item])


def test_true_and_false_stay_strings_as_no_trial_field_is_a_bool():
    # parse_sets has no boolean rule because TrialConfig has no bool field; add one with the first.
    assert bool not in {stages.train_one.field_type(f.name) for f in dataclasses.fields(stages.train_one.TrialConfig)}
    assert parse_sets(["encoder=true"]) == {"encoder": "true"}


def test_the_leaderboard_command_reads_back_the_same_values(tmp_path):
    params = {"lr": 2e-05, "dice_smooth": 1e-07, "weight_decay": 1 / 3, "embedding_lr": 1.2345678901234567e-05,
              "flood_b": 1e16, "dropout": 0.1 + 0.2, "batch_size": 16, "loss": "dice", "pooler": "cls+mean"}
    prefix = command_prefix(Settings(), space_path=tmp_path / "space.yaml", max_epochs=2)
    args = cli.build_parser().parse_args(shlex.split(reproduce_command(prefix, params))[3:])
    sets = parse_sets(args.sets)
    assert sets == params and all(type(sets[k]) is type(v) for k, v in params.items())
    cfg = resolve_config(load_space("demo"), point=None, sets={"lr": 2e-05, "dice_smooth": 1e-07},
                         max_epochs=None, seed=0)
    assert (cfg.lr, cfg.dice_smooth) == (2e-05, 1e-07)


def test_train_one_names_the_labels_absent_from_its_dev_fold(tmp_path, capsys):
    """A label with fewer rows than --folds is trained on, and the user told where it is not scored."""
    (tmp_path / "space.yaml").write_text(E2E_SPACE)
    rows = [f"{i},{i % 7} {i % 3} 9,{label}\n" for i, label in enumerate(["1-1"] * 12 + ["1-2"] * 12 + ["3-18"] * 2)]
    (tmp_path / "train.csv").write_text("id,text,label\n" + "".join(rows))
    outputs = [main_output(tmp_path, fold, capsys) for fold in range(4)]
    absent = [fold for fold, out in enumerate(outputs) if "3-18 (2 rows)" in out]
    assert len(absent) == 2  # its 2 rows are in 2 of the 4 dev folds
    fold, out = absent[0], outputs[absent[0]]
    assert f"warning: label(s) 3-18 (2 rows) have no row in dev fold {fold} of --folds 4" in out
    assert "--folds 2 or fewer scores every label in every fold" in out and "best: epoch 1" in out

def main_output(tmp_path, fold, capsys) -> str:
    main(["train-one", "--space", str(tmp_path / "space.yaml"), "--data", str(tmp_path), "--folds", "4",
          "--fold", str(fold), "--max-epochs", "1", "--max-seq-len", "8", "--device", "cpu", "--no-progress"])
    return capsys.readouterr().out
