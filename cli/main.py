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

Each sub-parser sets `func` (its `cmd_*` handler); `main` calls it and turns the errors of bad input
into `error: ...` and exit status 2. `launch` and `train-one` share `data_parser()`, and build their
`Settings` with `Settings.from_namespace`, so a flag whose dest is a `Settings` field needs no other code.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cli.flags import at_least, finite_float, plain_name
from model.errors import ConfigError, UserError

EXIT_UNFINISHED = 1
EXIT_USAGE = 2
PREDICT_BATCH_SIZE = 256  # `predict --batch-size`: rows per forward pass


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends `(default: X)` to a flag's help unless the help already names its default or there is
    no value to show (None, False, [])."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if "default" in (action.help or "") or action.default is None or action.default is False \
                or action.default == []:
            return action.help
        return super()._get_help_string(action)


def _command(sub: argparse._SubParsersAction, name: str, func: Callable[[argparse.Namespace, list[str]], None],
             **kwargs: Any) -> argparse.ArgumentParser:
    """Add sub-command `name`; `main` runs it as `args.func(args, argv)` (the raw argv is for the
    commands that store their command line: launch, resume)."""
    parser = sub.add_parser(name, formatter_class=_HelpFormatter, **kwargs)
    parser.set_defaults(func=func)
    return parser


def _space_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--space", default=None, help="search-space YAML file or shipped name (default: demo)")
    return parser


def data_parser() -> argparse.ArgumentParser:
    """The data and split flags, shared (argparse `parents=`) by `launch` and `train-one`.

    Contract: every flag's `dest` is a `Settings` field, so a flag added here reaches the
    `Settings` of both commands through `Settings.from_namespace` with no other change."""
    from rundir.settings import Settings

    d = Settings()
    parser = argparse.ArgumentParser(add_help=False)
    data = parser.add_argument_group("data and split")
    data.add_argument("--data", default=d.data,
                      help="directory with train.csv (id,text,label), or the CSV (default: synthetic data)")
    data.add_argument("--synthetic", action="store_true", help="generated data (the default without --data)")
    data.add_argument("--synthetic-rows", type=int, default=d.synthetic_rows, help="rows of the generated data")
    data.add_argument("--synthetic-seed", type=at_least(0), default=d.synthetic_seed, help="seed of the generated data")
    data.add_argument("--folds", type=int, default=d.folds, help="stratified folds (split seeded by --seed)")
    data.add_argument("--fold", type=int, default=d.fold, help="the held-out fold trials are scored on")
    data.add_argument("--max-seq-len", type=int, default=d.max_seq_len, help="tokens per text incl. [CLS]/[SEP]")
    return parser


def _launch_parser(sub: argparse._SubParsersAction) -> None:
    from rundir.settings import AUTO_GP_MAX_TRIALS, DEFAULT_MAX_EPOCHS, SAMPLERS, SCHEDULERS, Settings

    d = Settings()
    p = _command(sub, "launch", cmd_launch, parents=[_space_parser(), data_parser()],
                 help="run a search (default: the demo space on synthetic data)")
    run = p.add_argument_group("run")
    run.add_argument("--name", type=plain_name, default=d.name, help="run name (default: <space>-<date>-<time>)")
    run.add_argument("--storage-path", default=d.storage_path, help="RUN_DIR is <storage-path>/<name>")
    run.add_argument("--num-samples", type=int, default=d.num_samples, help="trials to run")
    run.add_argument("--seed", type=at_least(0), default=d.seed, help="seed of the sampler, the split and every trial")
    run.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                     help="fix a TrialConfig field for every trial (repeatable), over the space's `fixed`, e.g. "
                     "--set checkpoint=ckpt/bert-h256; a field the space searches is refused. Kept in run.json for "
                     "resume, confirm, predict and the leaderboard's train-one command")
    method = p.add_argument_group("search method (recorded in run.json; a resume keeps it)")
    method.add_argument("--sampler", choices=SAMPLERS, default=d.sampler,
                        help="Optuna sampler: tpe (multivariate, grouped, constant liar), random, gp (Gaussian "
                        "process), qmc (scrambled Sobol), cmaes, or auto (gp for a space of numbers alone up to "
                        f"{AUTO_GP_MAX_TRIALS} trials, else tpe)")
    method.add_argument("--startup-trials", type=at_least(0), default=d.startup_trials,
                        help="random trials before tpe/gp/cmaes model the results (default: 15%% of "
                        "--num-samples, 2 to 10, at least the warm starts)")
    method.add_argument("--scheduler", choices=SCHEDULERS, default=d.scheduler,
                        help="asha: stop the worst trials at each rung; hyperband: asha over several brackets "
                        "of grace periods; median: stop trials below the others' median; fifo: train every "
                        "trial to the end")
    sched = p.add_argument_group("scheduling (ASHA on level-2 macro-F1, time unit = epochs)")
    sched.add_argument("--max-epochs", type=int, default=d.max_epochs,
                       help=f"full budget of a trial (ASHA max_t); default: the space's, else {DEFAULT_MAX_EPOCHS}")
    sched.add_argument("--grace-period", type=int, default=d.grace_period, help="epochs before a trial can be stopped")
    sched.add_argument("--reduction-factor", type=finite_float, default=d.reduction_factor,
                       help="ASHA: 1/factor of the trials go on at each rung (> 1)")
    res = p.add_argument_group("resources")
    res.add_argument("--address", default=d.address,
                     help="join a running Ray cluster: auto, HOST:PORT or ray://HOST:PORT (default: $RAY_ADDRESS, "
                     "else a new local Ray); the code is shipped to the nodes, which need only the requirements")
    res.add_argument("--cpus-per-trial", type=finite_float, default=d.cpus_per_trial,
                     help="CPUs Ray reserves per trial (also its torch threads)")
    res.add_argument("--gpus-per-trial", type=finite_float, default=d.gpus_per_trial,
                     help="GPUs Ray reserves per trial; fractions share a GPU (accounting only, no memory isolation)")
    res.add_argument("--max-concurrent", type=int, default=d.max_concurrent,
                     help="trials at once (default: as many as the resources hold)")
    res.add_argument("--max-failures", type=int, default=d.max_failures,
                     help="retries of a crashing trial, from its last checkpoint")


def _train_one_parser(sub: argparse._SubParsersAction) -> None:
    from rundir.settings import DEFAULT_MAX_EPOCHS, Settings

    d = Settings()
    p = _command(sub, "train-one", cmd_train_one, parents=[_space_parser(), data_parser()],
                 help="train one configuration without Ray (debug, reproduce a row)")
    p.add_argument("--point", default=None, help="start from this warm-start point of the space")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="set a TrialConfig field (repeatable), e.g. --set lr=2e-05 --set loss=focal; numbers are "
                   "read as Python int/float")
    p.add_argument("--max-epochs", type=at_least(1), default=d.max_epochs,
                   help=f"training epochs (default: the space's, else {DEFAULT_MAX_EPOCHS})")
    p.add_argument("--seed", type=at_least(0), default=d.seed, help="seed of the split and of training")
    p.add_argument("--threads", type=at_least(1), default=None, help="torch CPU threads (a trial uses its CPUs)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if present)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _resume_parser(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "resume", cmd_resume, help="continue an interrupted (or finished) search, or its confirm stage",
                 description="Continue the search in RUN_DIR: trials interrupted by the stop resume from "
                 "their last checkpoint under the same id, ended trials are never trained again. When RUN_DIR "
                 "has an unfinished confirm stage (and no --num-samples is given), continue that instead: "
                 "jobs resume from their last checkpoint, completed jobs are never trained again.")
    p.add_argument("run_dir", help="the RUN_DIR a launch printed")
    p.add_argument("--num-samples", type=int, default=None,
                   help="new total number of trials (default: the run's); raises the budget of a finished run. "
                   "Always resumes the search, even with an unfinished confirm stage")
    p.add_argument("--max-failures", type=int, default=None,
                   help="retries of a crashing trial or job (default: the run's, or the confirm stage's)")
    p.add_argument("--retry-errored", action="store_true",
                   help="also resume the trials (or confirm jobs) that ended as errors (after fixing the cause), "
                   "from their last checkpoint under the same id")


def _confirm_parser(sub: argparse._SubParsersAction) -> None:
    from rundir.confirm import DEFAULT_FOLDS, DEFAULT_SEEDS, DEFAULT_TOP

    p = _command(sub, "confirm", cmd_confirm, help="retrain the top configs on every fold: RUN_DIR/confirm/",
                 description="Retrain the top K completed trials of RUN_DIR's leaderboard at their full budget on "
                 "every fold of a stratified F-fold split of the whole training file, for S seeds, through Ray Tune "
                 "(no pruning), and the linear reference member on the same folds. Writes RUN_DIR/confirm/: "
                 "confirm.csv (members ranked by mean level-2 macro-F1 with paired comparisons to the best), "
                 "jobs.json, the fold models and every member's out-of-fold probabilities. Continue an "
                 "interrupted stage with `python -m search resume RUN_DIR`.")
    p.add_argument("run_dir", help="the RUN_DIR a launch printed")
    p.add_argument("--top", type=int, default=DEFAULT_TOP, help="configs to confirm: the first K completed trials")
    p.add_argument("--folds", type=int, default=DEFAULT_FOLDS, help="stratified folds of the whole training file")
    p.add_argument("--seeds", type=int, default=DEFAULT_SEEDS,
                   help="training seeds per fold (seed s trains with the run's seed + s)")
    p.add_argument("--no-linear", dest="linear", action="store_false", default=True,
                   help="leave out the linear reference member (TF-IDF + LinearSVC; by default it is included)")
    p.add_argument("--force", action="store_true",
                   help="delete RUN_DIR/confirm (a finished or unfinished stage) and start over")
    res = p.add_argument_group("resources (default: the run's)")
    res.add_argument("--address", default=None, help="a running Ray cluster: auto, HOST:PORT or ray://HOST:PORT")
    res.add_argument("--cpus-per-trial", type=finite_float, default=None, help="CPUs Ray reserves per job")
    res.add_argument("--gpus-per-trial", type=finite_float, default=None, help="GPUs Ray reserves per job")
    res.add_argument("--max-concurrent", type=int, default=None, help="jobs at once")
    res.add_argument("--max-failures", type=int, default=None, help="retries of a crashing job, from its checkpoint")


def _export_parser(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "export", cmd_export, help="write a run's leaderboard (CSV, markdown or JSON)",
                 description="Write the leaderboard of RUN_DIR, rebuilt from its trial records: CSV with "
                 "every column, JSON (a list of row objects), or markdown with the comparison columns "
                 "and the parameters. Works while the search runs.")
    p.add_argument("run_dir", help="the RUN_DIR a launch printed")
    p.add_argument("--out", default=None, help="output file (default: standard output)")
    p.add_argument("--format", default="csv", choices=["csv", "md", "json"],
                   help="csv: every column; md: comparison columns and parameters; json: a list of row objects "
                   "(default: csv)")
    p.add_argument("--top", type=int, default=None, help="only the first K rows (after --status)")
    p.add_argument("--status", action="append", default=None,
                   help="only rows with this status (repeatable): completed, pruned, running, error")


def _report_parser(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "report", cmd_report, help="write an HTML report with figures to RUN_DIR/report/")
    p.add_argument("run_dir", help="the RUN_DIR a launch printed")


def _status_parser(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "status", cmd_status, help="where a search stands: progress, best, top trials")
    p.add_argument("run_dir", help="the RUN_DIR a launch printed")
    p.add_argument("--top", type=at_least(1), default=5, help="rows of the leaderboard to show")


def _pretrain_parser(sub: argparse._SubParsersAction) -> None:
    from stages.pretrain import add_pretrain_arguments

    p = _command(sub, "pretrain", cmd_pretrain, help="MLM-pretrain an encoder checkpoint on unlabeled text",
                 description="Masked-language-model pretraining (n-gram masking) of a BERT or NEZHA encoder on "
                 "unlabeled text; OUT becomes a checkpoint directory for `--set encoder=bert|nezha --set "
                 "checkpoint=OUT`. Resumable; data-parallel with Ray Train given --address or --num-workers.")
    add_pretrain_arguments(p)


def _embed_parser(sub: argparse._SubParsersAction) -> None:
    from stages.embed import add_embed_arguments

    p = _command(sub, "embed", cmd_embed, help="train word vectors (word2vec, fastText) on unlabeled text",
                 description="Word vectors trained with gensim on the task's own text; OUT becomes a checkpoint "
                 "directory for `--set encoder=textcnn|dpcnn|bigru|bilstm --set checkpoint=OUT`. Deterministic "
                 "for a --seed with --threads 1.")
    add_embed_arguments(p)


def _ensemble_parser(sub: argparse._SubParsersAction) -> None:
    from rundir.confirm import DEFAULT_ENSEMBLE_METHOD, DEFAULT_MAX_MEMBERS, ENSEMBLE_OPTIONS

    p = _command(sub, "ensemble", cmd_ensemble, help="choose an ensemble of the confirmed members (no Ray)",
                 description="Score every ensemble of the members `confirm` retrained, on their out-of-fold "
                 "predictions, in-sample and nested (each fold predicted by a selection made without it), print "
                 "them beside each member's score and write the chosen one to RUN_DIR/confirm/ensemble.json.")
    p.add_argument("run_dir", help="the RUN_DIR a launch printed, after `python -m search confirm RUN_DIR`")
    p.add_argument("--method", default=DEFAULT_ENSEMBLE_METHOD, choices=list(ENSEMBLE_OPTIONS),
                   help="greedy: greedy selection with replacement (Caruana) averaging probabilities; prob, rank, "
                   "vote: every member with equal weight, by probability mean, mean per-row class rank or majority "
                   f"vote (default: {DEFAULT_ENSEMBLE_METHOD})")
    p.add_argument("--max-members", type=int, default=DEFAULT_MAX_MEMBERS,
                   help="greedy: the number of additions (a member may be added several times)")


def _predict_parser(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "predict", cmd_predict, help="write a submission for a test file (no Ray)",
                 description="Predict the level-2 label of every row of a test file (id,text) and write id,label "
                 "in input order. A label column, if present, is not used for predicting; its level-2 macro-F1 "
                 "is printed.")
    p.add_argument("run_dir", help="the RUN_DIR a launch printed")
    p.add_argument("--data", required=True, help="the test CSV (header id,text; a label column is only scored)")
    p.add_argument("--out", required=True, help="the submission CSV to write (id,label)")
    p.add_argument("--use", default=None, metavar="ensemble|confirmed:NAME|trial:ID",
                   help="ensemble: RUN_DIR/confirm/ensemble.json; confirmed:NAME: a confirmed member, its fold "
                   "models averaged; trial:ID: a search trial's best checkpoint (Ray trial id or Optuna number) "
                   "(default: the ensemble if ensemble.json exists, else the best complete confirmed member, else "
                   "the leaderboard's rank 1)")
    p.add_argument("--probs", default=None, metavar="FILE",
                   help="also write the scores the labels are the argmax of: FILE.npy as an (N, labels) float32 "
                   "array, any other name as CSV with id and one column per label (probabilities; for rank and "
                   "vote ensembles mean class ranks and vote shares)")
    p.add_argument("--batch-size", type=int, default=PREDICT_BATCH_SIZE, help="rows per forward pass")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if present)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m search", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                help="what to do; `python -m search COMMAND --help` lists its flags")
    _launch_parser(sub)
    _resume_parser(sub)
    _confirm_parser(sub)
    _train_one_parser(sub)
    _export_parser(sub)
    _status_parser(sub)
    _report_parser(sub)
    _pretrain_parser(sub)
    _embed_parser(sub)
    _ensemble_parser(sub)
    _predict_parser(sub)
    return parser


def cmd_launch(args: argparse.Namespace, argv: list[str]) -> None:
    from rundir.settings import Settings
    from search.driver import is_finished, launch, run_budget

    sys.stdout.reconfigure(line_buffering=True)  # progress lines show up at once when piped
    settings = Settings.from_namespace(args)
    files, frame = launch(settings, argv=argv)
    if not is_finished(frame, run_budget(files)):
        sys.exit(EXIT_UNFINISHED)


def cmd_resume(args: argparse.Namespace, argv: list[str]) -> None:
    from search.driver import is_finished, resume, run_budget
    from stages.confirm.run import resume_confirm, stage_pending

    sys.stdout.reconfigure(line_buffering=True)
    if args.num_samples is None and stage_pending(args.run_dir):
        outcome = resume_confirm(args.run_dir, max_failures=args.max_failures, retry_errored=args.retry_errored)
        if not outcome.finished:
            sys.exit(EXIT_UNFINISHED)
        return
    files, frame = resume(args.run_dir, num_samples=args.num_samples, max_failures=args.max_failures,
                          retry_errored=args.retry_errored, argv=argv)
    if not is_finished(frame, run_budget(files)):
        sys.exit(EXIT_UNFINISHED)


def cmd_confirm(args: argparse.Namespace, argv: list[str]) -> None:
    from stages.confirm.run import confirm

    sys.stdout.reconfigure(line_buffering=True)
    outcome = confirm(args.run_dir, top=args.top, folds=args.folds, seeds=args.seeds, linear=args.linear,
                      force=args.force, address=args.address, cpus_per_trial=args.cpus_per_trial,
                      gpus_per_trial=args.gpus_per_trial, max_concurrent=args.max_concurrent,
                      max_failures=args.max_failures, argv=argv)
    if not outcome.finished:
        sys.exit(EXIT_UNFINISHED)


def cmd_train_one(args: argparse.Namespace, argv: list[str]) -> None:
    from rundir.settings import Settings
    from stages.train_one import parse_sets, train_one

    sys.stdout.reconfigure(line_buffering=True)
    settings = Settings.from_namespace(args)
    train_one(settings, point=args.point, sets=parse_sets(args.sets), threads=args.threads, device=args.device,
              progress=not args.no_progress)


def cmd_export(args: argparse.Namespace, argv: list[str]) -> None:
    from results.export import render, run_leaderboard, select
    from rundir.io import atomic_write_text, check_output_file

    if args.out is not None:
        check_output_file(args.out, args.run_dir)
    try:
        frame = select(run_leaderboard(args.run_dir), top=args.top, statuses=args.status)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    text = render(frame, args.format)
    if args.out is None:
        sys.stdout.write(text)
    else:
        try:
            atomic_write_text(Path(args.out), text)
        except OSError as err:
            raise ConfigError(f"--out {args.out} cannot be written ({err.strerror}); pass a file you can "
                              "write") from None
        print(f"wrote {len(frame)} rows to {args.out}")


def cmd_report(args: argparse.Namespace, argv: list[str]) -> None:
    from results.report import write_report

    print(f"wrote {write_report(args.run_dir)}")


def cmd_status(args: argparse.Namespace, argv: list[str]) -> None:
    from results.status import status_text

    print(status_text(args.run_dir, top=args.top))


def cmd_pretrain(args: argparse.Namespace, argv: list[str]) -> None:
    from stages.pretrain import cmd_pretrain as run

    run(args, argv)


def cmd_embed(args: argparse.Namespace, argv: list[str]) -> None:
    from stages.embed import cmd_embed as run

    run(args, argv)


def cmd_ensemble(args: argparse.Namespace, argv: list[str]) -> None:
    from stages.ensemble import run_ensemble

    run_ensemble(args.run_dir, method=args.method, max_members=args.max_members, argv=argv)


def cmd_predict(args: argparse.Namespace, argv: list[str]) -> None:
    from rundir.io import check_output_file
    from stages.predict import run_predict

    for flag, path in (("--out", args.out), ("--probs", args.probs)):
        if path is not None:
            check_output_file(path, args.run_dir, flag=flag)
            if Path(path).resolve() == Path(args.data).resolve():
                raise ConfigError(f"{flag} {path} is the --data file: writing it would overwrite the texts to "
                                  "predict; pass another file name, e.g. --out submission.csv")
    if args.probs is not None and Path(args.probs).resolve() == Path(args.out).resolve():
        raise ConfigError(f"--probs {args.probs} is the --out file: pass two file names, e.g. --probs probs.npy")
    run_predict(args.run_dir, data=args.data, out_path=args.out, use=args.use, probs_path=args.probs,
                batch_size=args.batch_size, device=args.device, progress=not args.no_progress)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    try:
        args.func(args, argv)
    except (UserError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
