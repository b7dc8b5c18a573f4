"""`python -m search <command>`: run and inspect a hyperparameter search, or train one configuration.

    launch     run a search (Ray Tune + Optuna TPE + ASHA) and write RUN_DIR
    resume     continue the search in RUN_DIR (interrupted or finished), or its unfinished confirm stage
    confirm    retrain the top configs of RUN_DIR on every fold (and seeds): RUN_DIR/confirm/
    status     where the search in RUN_DIR stands: progress, best, top trials
    export     write RUN_DIR's leaderboard as CSV, markdown or JSON
    report     write an HTML report with figures to RUN_DIR/report/
    train-one  train one configuration without Ray (debug, reproduce a leaderboard row)
    pretrain   masked-language-model pretraining of an encoder checkpoint (BERT or NEZHA)
    embed      word vectors (word2vec, fastText) on unlabeled text, for the textcnn/dpcnn/bigru encoders
    ensemble   choose an ensemble of the confirmed members from their out-of-fold predictions
    predict    write a submission (id,label) for a test file with the ensemble, a member or a trial
    pipeline   from training data to a submission within a time budget (search, confirm, ensemble, predict)

Each sub-parser sets `func` (its `cmd_*` handler); `main` calls it and turns the errors of bad input
into `error: ...` and exit status 2. `launch` and `train-one` share `data_parser()`, and build their
`Settings` with `Settings.from_namespace`, so a flag whose dest is a `Settings` field needs no other code.
"""

from __future__ import annotations

import argparse
import sys

from cli import search_commands as search
from cli import stage_commands as stages
from cli.base import EXIT_USAGE
from cli.checks import quick_checks
from model.errors import UserError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m search", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                help="what to do; `python -m search COMMAND --help` lists its flags")
    # in the order a user meets them: search, watch it, confirm, ensemble, predict; then the tools
    for add in (search.add_launch, search.add_resume, search.add_status, search.add_export, search.add_report,
                stages.add_confirm, stages.add_ensemble, stages.add_predict, stages.add_pipeline,
                search.add_train_one, stages.add_pretrain, stages.add_embed):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    try:
        quick_checks(args)
        args.func(args, argv)
    except (UserError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
