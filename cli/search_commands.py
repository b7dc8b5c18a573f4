"""The sub-commands of the search itself: launch, resume, train-one, status, export, report.

Each `add_*` builds a parser from light modules only (`--help` must not load torch or Ray); each
`cmd_*` imports the code it runs when it runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cli.base import EXIT_ALL_FAILED, EXIT_UNFINISHED, add_command, add_verbose, apply_verbose
from cli.flags import at_least, duration, finite_float, plain_name
from model.errors import ConfigError


def space_parser(default: str = "demo") -> argparse.ArgumentParser:
    """`--space`; None when not given, so a command can tell its default from a choice."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--space", default=None, help=f"search-space YAML file or shipped name (default: {default})")
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

def add_launch(sub: argparse._SubParsersAction) -> None:
    from rundir.settings import Settings

    d = Settings()
    p = add_command(sub, "launch", cmd_launch, parents=[space_parser(), data_parser()],
                    help="run a search (default: the demo space on synthetic data)")
    run = add_run_flags(p, d)
    run.add_argument("--num-samples", type=int, default=d.num_samples, help="trials to run")
    run.add_argument("--time-budget", dest="time_budget_s", type=duration, default=d.time_budget_s,
                     metavar="DURATION", help="stop the search after this wall time (e.g. 30m, 2h): no trial starts "
                     "after it, trials still training stop at their next evaluation and are recorded as pruned, "
                     "and `resume` continues from there (default: until --num-samples trials are done)")
    run.add_argument("--track", default=d.track, metavar="mlflow[=URI]",
                     help="log every trial (params, per-epoch metrics, how it ended) to MLflow under one parent run "
                     "(needs pip install mlflow-skinny==3.18.0; default URI: an SQLite store, RUN_DIR/mlflow.db)")
    add_method_flags(p, d)
    add_resource_flags(p, d)
    add_verbose(p)


def add_run_flags(p: argparse.ArgumentParser, d) -> argparse._ArgumentGroup:
    """--name, --storage-path, --seed, --set: where a run lives and what it fixes (launch, pipeline)."""
    run = p.add_argument_group("run")
    run.add_argument("--name", type=plain_name, default=d.name, help="run name (default: <space>-<date>-<time>)")
    run.add_argument("--storage-path", default=d.storage_path, help="RUN_DIR is <storage-path>/<name>")
    run.add_argument("--seed", type=at_least(0), default=d.seed, help="seed of the sampler, the split and every trial")
    run.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                     help="fix a TrialConfig field for every trial (repeatable), over the space's `fixed`, e.g. "
                     "--set checkpoint=ckpt/bert-h256; a field the space searches is refused. Kept in run.json for "
                     "resume, confirm, predict and the leaderboard's train-one command")
    return run


def add_method_flags(p: argparse.ArgumentParser, d) -> None:
    """The sampler, the scheduler and its budget in epochs (launch, pipeline)."""
    from rundir.settings import AUTO_GP_MAX_TRIALS, DEFAULT_MAX_EPOCHS, SAMPLERS, SCHEDULERS

    method = p.add_argument_group("search method (recorded in run.json; a resume keeps it)")
    method.add_argument("--sampler", choices=SAMPLERS, default=d.sampler,
                        help="Optuna sampler: tpe (multivariate, grouped, constant liar), random, gp (Gaussian "
                        "process), qmc (scrambled Sobol), cmaes, or auto (gp for a space of numbers alone up to "
                        f"{AUTO_GP_MAX_TRIALS} trials, else tpe)")
    method.add_argument("--startup-trials", type=at_least(0), default=d.startup_trials,
                        help="random trials before tpe/gp/cmaes model the results (default: 15%% of "
                        "--num-samples, 2 to 10, at least the warm starts; 10 when time, not a count, ends the "
                        "search)")
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


def add_resource_flags(p: argparse.ArgumentParser, d) -> None:
    """Where trials run and with what (launch, pipeline)."""
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


def add_train_one(sub: argparse._SubParsersAction) -> None:
    from rundir.settings import DEFAULT_MAX_EPOCHS, Settings

    d = Settings()
    p = add_command(sub, "train-one", cmd_train_one, parents=[space_parser(), data_parser()],
                 help="train one configuration without Ray (debug, reproduce a row)")
    p.add_argument("--point", default=None, help="start from this warm-start point of the space")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="set a TrialConfig field (repeatable), e.g. --set lr=2e-05 --set loss=focal; numbers are "
                   "read as Python int/float")
    p.add_argument("--max-epochs", type=at_least(1), default=d.max_epochs,
                   help=f"training epochs (default: the space's, else {DEFAULT_MAX_EPOCHS})")
    p.add_argument("--seed", type=at_least(0), default=d.seed, help="seed of the split and of training")
    p.add_argument("--threads", type=at_least(1), default=None,
                   help="torch CPU threads (default: the CPUs this process may use, less one, at least 1)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if present)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

def add_resume(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "resume", cmd_resume,
                    help="continue an interrupted (or finished) search, its confirm stage, or a pipeline",
                 description="Continue the search in RUN_DIR: trials interrupted by the stop resume from "
                 "their last checkpoint under the same id, ended trials are never trained again. When RUN_DIR "
                 "has an unfinished confirm stage (and no --num-samples is given), continue that instead: "
                 "jobs resume from their last checkpoint, completed jobs are never trained again. When RUN_DIR "
                 "is an unfinished pipeline, continue it at the stage it was in, within its own budget.")
    p.add_argument("run_dir", help="the RUN_DIR a launch printed")
    p.add_argument("--num-samples", type=int, default=None,
                   help="new total number of trials (default: the run's); raises the budget of a finished run. "
                   "Always resumes the search, even with an unfinished confirm stage")
    p.add_argument("--max-failures", type=int, default=None,
                   help="retries of a crashing trial or job (default: the run's, or the confirm stage's)")
    p.add_argument("--time-budget", dest="time_budget_s", type=duration, default=None, metavar="DURATION",
                   help="run trials (or confirm jobs) for at most this wall time in this session (e.g. 30m; "
                   "default: the run's --time-budget)")
    add_verbose(p)
    p.add_argument("--retry-errored", action="store_true",
                   help="also resume the trials (or confirm jobs) that ended as errors (after fixing the cause), "
                   "from their last checkpoint under the same id")

def add_export(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "export", cmd_export, help="write a run's leaderboard (CSV, markdown or JSON)",
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

def add_status(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "status", cmd_status, help="where a search stands: progress, best, top trials")
    p.add_argument("run_dir", help="the RUN_DIR a launch printed")
    p.add_argument("--top", type=at_least(1), default=5, help="rows of the leaderboard to show")

def add_report(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "report", cmd_report, help="write an HTML report with figures to RUN_DIR/report/")
    p.add_argument("run_dir", help="the RUN_DIR a launch printed")


DEMO_ON_REAL_DATA = (
    "note: no --space, so this searches the demo space, a tiny random-init encoder that lost to the linear member "
    "by 0.05 on the competition's data. On real data pass --space cpu with word vectors from `embed` "
    "(docs/reference.md), or run `pipeline`, which trains the vectors and searches the cpu space by default")


def cmd_launch(args: argparse.Namespace, argv: list[str]) -> None:
    from rundir.settings import Settings
    from search.driver import is_finished, launch, run_budget

    apply_verbose(args)
    sys.stdout.reconfigure(line_buffering=True)  # progress lines show up at once when piped
    settings = Settings.from_namespace(args)
    if settings.space is None and settings.data is not None:
        print(DEMO_ON_REAL_DATA)
    files, frame = launch(settings, argv=argv)
    exit_if_all_failed(files, frame)
    if not is_finished(frame, run_budget(files)):
        sys.exit(EXIT_UNFINISHED)


def exit_if_all_failed(files, frame) -> None:
    """A search whose every trial ended as an error exits EXIT_ALL_FAILED, with the first error and
    the way to retry: a leaderboard of errors is no result, and exit 0 would hide it."""
    if frame is not None and len(frame) and (frame["status"] == "error").all():
        first = next((e for e in frame["error"] if isinstance(e, str) and e), "no message")
        print(f"error: every trial of {files.root} ended as an error ({len(frame)} trials; the first: {first}); "
              f"fix the cause (see {files.leaderboard_csv} and the trials' logs under {files.ray_dir}), then "
              f"`python -m search resume {files.root} --retry-errored`", file=sys.stderr)
        sys.exit(EXIT_ALL_FAILED)

def cmd_resume(args: argparse.Namespace, argv: list[str]) -> None:
    from search.driver import is_finished, resume, run_budget
    from stages.confirm.run import resume_confirm, stage_pending
    from stages.pipeline import pipeline_pending, resume_pipeline

    apply_verbose(args)
    sys.stdout.reconfigure(line_buffering=True)
    if args.num_samples is None and pipeline_pending(args.run_dir):
        given = [flag for flag, value in (("--max-failures", args.max_failures), ("--time-budget", args.time_budget_s),
                                          ("--retry-errored", args.retry_errored or None)) if value is not None]
        if given:
            raise ConfigError(f"{args.run_dir} is an unfinished pipeline: it goes on with its own budget and "
                              f"settings, so {', '.join(given)} cannot apply; run `python -m search resume "
                              f"{args.run_dir}` alone")
        resume_pipeline(args.run_dir)
        return
    if args.num_samples is None and stage_pending(args.run_dir):
        outcome = resume_confirm(args.run_dir, max_failures=args.max_failures, retry_errored=args.retry_errored,
                                 time_budget_s=args.time_budget_s)
        if not outcome.finished:
            sys.exit(EXIT_UNFINISHED)
        return
    files, frame = resume(args.run_dir, num_samples=args.num_samples, max_failures=args.max_failures,
                          retry_errored=args.retry_errored, time_budget_s=args.time_budget_s, argv=argv)
    exit_if_all_failed(files, frame)
    if not is_finished(frame, run_budget(files)):
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
    from rundir.paths import RunFiles

    own = RunFiles(Path(args.run_dir)).leaderboard_csv.resolve()
    repair = args.out is not None and Path(args.out).resolve() == own
    if repair and (args.format != "csv" or args.top is not None or args.status):
        raise ConfigError(f"--out {args.out} is the run's own leaderboard: it is rebuilt whole, as CSV; drop "
                          "--format, --top and --status, or write elsewhere")
    if args.out is not None and not repair:  # the run's own leaderboard may be rebuilt from trials.json
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
        print(f"wrote {len(frame)} rows to {args.out}" + (" (rebuilt from trials.json)" if repair else ""))


def cmd_status(args: argparse.Namespace, argv: list[str]) -> None:
    from results.status import status_text

    print(status_text(args.run_dir, top=args.top))

def cmd_report(args: argparse.Namespace, argv: list[str]) -> None:
    from results.report import write_report

    print(f"wrote {write_report(args.run_dir)}")
