"""cli/checks.py: a path that is not there is refused right after parsing, with the command's own
message, before the command's module (and torch, pandas or Ray) is imported."""

import subprocess
import sys
from pathlib import Path

import pytest

from cli import search_commands, stage_commands
from cli.main import main
from tests.conftest import E2E_SPACE


@pytest.fixture
def run_dir(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "run.json").write_text("{}")
    (tmp_path / "test.csv").write_text("id,text\n1,5 6\n")
    (tmp_path / "space.yaml").write_text(E2E_SPACE)
    return tmp_path


@pytest.mark.parametrize("argv, message", [
    (["launch", "--data", "{tmp}/nowhere.csv"], "training data not found: {tmp}/nowhere.csv does not exist"),
    (["launch", "--space", "nosuch"], "search space 'nosuch' not found: pass a YAML file or one of: cpu, demo"),
    (["train-one", "--data", "{tmp}/run"], "training data not found: {tmp}/run/train.csv does not exist"),
    (["pipeline", "--test", "{tmp}/test.csv", "--data", "{tmp}/no.csv", "--out", "o.csv", "--budget", "1h"],
     "training data not found: {tmp}/no.csv"),
    (["pipeline", "--test", "{tmp}/none.csv", "--out", "o.csv", "--budget", "1h"], "{tmp}/none.csv: file not found"),
    (["confirm", "{tmp}/nothing"], "{tmp}/nothing is not a run directory (no run.json): pass the RUN_DIR"),
    (["status", "{tmp}"], "{tmp} is not a run directory (no run.json)"),
    (["ensemble", "{tmp}/nothing"], "{tmp}/nothing is not a directory: pass the RUN_DIR"),
    (["predict", "{tmp}/nothing", "--data", "{tmp}/test.csv", "--out", "o.csv"], "{tmp}/nothing is not a directory"),
    (["predict", "{tmp}/run", "--data", "{tmp}/none.csv", "--out", "o.csv"], "{tmp}/none.csv: file not found"),
    (["embed", "--corpus", "{tmp}/test.csv", "{tmp}/gone.txt", "--out", "{tmp}/v"],
     "{tmp}/gone.txt: corpus file not found; pass existing files to --corpus"),
    (["pretrain", "--corpus", "{tmp}/gone.txt", "--out", "{tmp}/p"], "{tmp}/gone.txt: corpus file not found"),
])
def test_a_missing_path_is_refused_before_the_command_runs(argv, message, run_dir, monkeypatch, capsys):
    handler = "cmd_" + argv[0].replace("-", "_")
    module = search_commands if hasattr(search_commands, handler) else stage_commands
    monkeypatch.setattr(module, handler, lambda args, argv: pytest.fail("the command ran"))
    with pytest.raises(SystemExit) as exit_:
        main([a.format(tmp=run_dir) for a in argv])
    assert exit_.value.code == 2
    assert message.format(tmp=run_dir) in capsys.readouterr().err


@pytest.mark.parametrize("argv", [
    ["launch", "--data", "{tmp}/run", "--synthetic"],  # both: preflight says they exclude each other
    ["train-one", "--space", "{tmp}/space.yaml"],  # a space given as a path
    ["launch", "--space", "demo"],  # a shipped space by name
    ["resume", "{tmp}/pipe"],  # a pipeline killed before its search wrote run.json
    ["status", "{tmp}/run"],
])
def test_what_is_there_passes_to_the_command(argv, run_dir, monkeypatch):
    (run_dir / "pipe").mkdir()
    (run_dir / "pipe" / "pipeline.json").write_text("{}")
    called = []
    handler = "cmd_" + argv[0].replace("-", "_")
    module = search_commands if hasattr(search_commands, handler) else stage_commands
    monkeypatch.setattr(module, handler, lambda args, argv: called.append(args.command))
    main([a.format(tmp=run_dir) for a in argv])
    assert called == [argv[0]]


def test_a_refusal_imports_neither_torch_nor_pandas_nor_ray(tmp_path):
    code = ("import sys\nfrom cli.main import main\ntry:\n    main(['launch', '--data', 'nowhere.csv'])\n"
            "except SystemExit as exit_:\n    assert exit_.code == 2\n"
            "print(sorted(m for m in ('torch', 'pandas', 'ray', 'transformers') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                          env={"PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert done.stdout.strip() == "[]", done.stderr
