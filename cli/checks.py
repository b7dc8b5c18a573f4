"""What the command line checks right after parsing, before a command imports torch, pandas or Ray:
the files and directories its flags name exist. Each refusal is the command's own (the same
functions raise it later), only sooner: a mistyped path is refused in a fraction of a second, not
after seconds of imports."""

from __future__ import annotations

import argparse
from pathlib import Path

from model.datafiles import require_corpus_files, require_file, resolve_train_path
from rundir.paths import RunFiles
from rundir.record import require_directory, require_run_dir

RUN_DIR_COMMANDS = ("resume", "status", "export", "report", "confirm")  # they read run.json
STAGE_COMMANDS = ("ensemble", "predict")  # they may read only RUN_DIR/confirm
TRAINING_COMMANDS = ("launch", "train-one", "pipeline")  # they take --data (a train.csv) and --space


def is_pipeline(run_dir: str) -> bool:
    return RunFiles(Path(run_dir)).pipeline_json.is_file()


def quick_checks(args: argparse.Namespace) -> None:
    """Raise the command's own error for a run directory, data file, space or corpus that is not there."""
    command = args.command
    if command in RUN_DIR_COMMANDS and not (command == "resume" and is_pipeline(args.run_dir)):
        require_run_dir(args.run_dir)  # a pipeline killed before its search has no run.json yet
    if command in STAGE_COMMANDS:
        require_directory(args.run_dir)
    if command in TRAINING_COMMANDS:
        if args.data is not None and not getattr(args, "synthetic", False):  # both: preflight says which
            resolve_train_path(args.data)
        if getattr(args, "space", None) is not None:
            from spaces.space import resolve_space_path  # imports Optuna: only when a space is named

            resolve_space_path(args.space)
    if command == "predict":
        require_file(args.data)
    if command == "pipeline":
        require_file(args.test)
    if command in ("pretrain", "embed"):
        require_corpus_files(args.corpus)
