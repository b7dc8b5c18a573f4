"""`python -m search <command>`: launch a search, resume it, export its leaderboard, train one config."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from model.errors import ConfigError, DataError, RestoreFailed

EXIT_UNFINISHED = 1
EXIT_USAGE = 2


def _data_arguments(p: argparse.ArgumentParser) -> None:
    from search.settings import Settings

    d = Settings()
    data = p.add_argument_group("data")
    data.add_argument("--data", default=None, help="directory with train.csv (id,text,label), or the CSV")
    data.add_argument("--synthetic", action="store_true", help="generated data (the default without --data)")
    data.add_argument("--synthetic-rows", type=int, default=d.synthetic_rows)
    data.add_argument("--synthetic-seed", type=int, default=d.synthetic_seed)
    data.add_argument("--folds", type=int, default=d.folds, help="stratified folds")
    data.add_argument("--fold", type=int, default=d.fold, help="the held-out fold trials are scored on")
    data.add_argument("--max-seq-len", type=int, default=d.max_seq_len, help="tokens per text incl. [CLS]/[SEP]")


def _launch_parser(sub: argparse._SubParsersAction) -> None:
    from search.settings import DEFAULT_MAX_EPOCHS, Settings

    d = Settings()
    p = sub.add_parser("launch", help="run a search (default: the demo space on synthetic data)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--space", default=None, help="search-space YAML file or shipped name (demo)")
    _data_arguments(p)
    run = p.add_argument_group("run")
    run.add_argument("--name", default=None, help="run name (default: <space>-<date>-<time>)")
    run.add_argument("--storage-path", default=d.storage_path, help="RUN_DIR is <storage-path>/<name>")
    run.add_argument("--num-samples", type=int, default=d.num_samples, help="trials to run")
    run.add_argument("--seed", type=int, default=d.seed, help="sampler, split and training seed")
    sched = p.add_argument_group("scheduling (ASHA on level-2 macro-F1, time unit = epochs)")
    sched.add_argument("--max-epochs", type=int, default=None,
                       help=f"full budget of a trial (ASHA max_t); default: the space's, else {DEFAULT_MAX_EPOCHS}")
    sched.add_argument("--grace-period", type=int, default=d.grace_period, help="epochs before a trial can be stopped")
    sched.add_argument("--reduction-factor", type=float, default=d.reduction_factor)
    res = p.add_argument_group("resources")
    res.add_argument("--address", default=None,
                     help="join a running Ray cluster: auto, HOST:PORT or ray://HOST:PORT (default: $RAY_ADDRESS, "
                     "else a new local Ray); the code is shipped to the nodes, which need only the requirements")
    res.add_argument("--cpus-per-trial", type=float, default=d.cpus_per_trial)
    res.add_argument("--gpus-per-trial", type=float, default=d.gpus_per_trial)
    res.add_argument("--max-concurrent", type=int, default=None,
                     help="trials at once (default: as many as the resources hold)")
    res.add_argument("--max-failures", type=int, default=d.max_failures,
                     help="retries of a crashing trial, from its last checkpoint")


def _train_one_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train-one", help="train one configuration without Ray (debug, reproduce a row)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--space", default=None, help="search-space YAML file or shipped name (demo)")
    p.add_argument("--point", default=None, help="start from this warm-start point of the space")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="set a TrialConfig field (repeatable), e.g. --set lr=0.001 --set loss=focal")
    p.add_argument("--max-epochs", type=int, default=None, help="default: the space's, else 4")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (a trial uses its CPUs)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if present)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _data_arguments(p)


def _resume_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("resume", help="continue an interrupted (or finished) search",
                       description="Continue the search in RUN_DIR: trials interrupted by the stop resume from "
                       "their last checkpoint under the same id, ended trials are never trained again.")
    p.add_argument("run_dir", help="the RUN_DIR a launch printed")
    p.add_argument("--num-samples", type=int, default=None,
                   help="new total number of trials (default: the run's); raises the budget of a finished run")
    p.add_argument("--max-failures", type=int, default=None, help="retries of a crashing trial (default: the run's)")
    p.add_argument("--retry-errored", action="store_true",
                   help="also resume the trials that ended as errors (after fixing the cause), from their last "
                   "checkpoint under the same id")


def _export_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write a run's leaderboard (CSV, markdown or JSON)",
                       description="Write the leaderboard of RUN_DIR, rebuilt from its trial records: CSV with "
                       "every column, JSON (a list of row objects), or markdown with the comparison columns "
                       "and the parameters. Works while the search runs.")
    p.add_argument("run_dir", help="the RUN_DIR a launch printed")
    p.add_argument("--out", default=None, help="output file (default: standard output)")
    p.add_argument("--format", default="csv", choices=["csv", "md", "json"])
    p.add_argument("--top", type=int, default=None, help="only the first K rows (after --status)")
    p.add_argument("--status", action="append", default=None,
                   help="only rows with this status (repeatable): completed, pruned, running, error")


def _report_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="write an HTML report with figures to RUN_DIR/report/")
    p.add_argument("run_dir", help="the RUN_DIR a launch printed")


def _status_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="where a search stands: progress, best, top trials")
    p.add_argument("run_dir", help="the RUN_DIR a launch printed")
    p.add_argument("--top", type=int, default=5, help="rows of the leaderboard to show")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m search", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _launch_parser(sub)
    _resume_parser(sub)
    _train_one_parser(sub)
    _export_parser(sub)
    _status_parser(sub)
    _report_parser(sub)
    return parser


def cmd_launch(args: argparse.Namespace, argv: list[str]) -> None:
    from search.driver import is_finished, launch
    from search.settings import Settings

    sys.stdout.reconfigure(line_buffering=True)  # progress lines show up at once when piped
    settings = Settings(**{k: v for k, v in vars(args).items() if k != "command"})
    _, frame = launch(settings, argv=argv)
    if not is_finished(frame, settings.num_samples):
        sys.exit(EXIT_UNFINISHED)


def cmd_resume(args: argparse.Namespace, argv: list[str]) -> None:
    from results.files import read_json
    from search.driver import is_finished, resume

    sys.stdout.reconfigure(line_buffering=True)
    files, frame = resume(args.run_dir, num_samples=args.num_samples, max_failures=args.max_failures,
                          retry_errored=args.retry_errored, argv=argv)
    if not is_finished(frame, read_json(files.run_json)["settings"]["num_samples"]):
        sys.exit(EXIT_UNFINISHED)


def cmd_train_one(args: argparse.Namespace) -> None:
    from search.settings import Settings
    from search.train_one import parse_sets, train_one

    sys.stdout.reconfigure(line_buffering=True)
    settings = Settings(space=args.space, data=args.data, synthetic=args.synthetic,
                        synthetic_rows=args.synthetic_rows, synthetic_seed=args.synthetic_seed, folds=args.folds,
                        fold=args.fold, max_seq_len=args.max_seq_len, max_epochs=args.max_epochs, seed=args.seed)
    train_one(settings, point=args.point, sets=parse_sets(args.sets), threads=args.threads, device=args.device,
              progress=not args.no_progress)


def cmd_export(args: argparse.Namespace) -> None:
    from results.export import render, run_leaderboard, select
    from results.files import atomic_write_text

    try:
        frame = select(run_leaderboard(args.run_dir), top=args.top, statuses=args.status)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    text = render(frame, args.format)
    if args.out is None:
        sys.stdout.write(text)
    else:
        atomic_write_text(Path(args.out), text)
        print(f"wrote {len(frame)} rows to {args.out}")


def cmd_report(args: argparse.Namespace) -> None:
    from results.report import write_report

    print(f"wrote {write_report(args.run_dir)}")


def cmd_status(args: argparse.Namespace) -> None:
    from results.status import status_text

    print(status_text(args.run_dir, top=args.top))


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    try:
        if args.command == "launch":
            cmd_launch(args, argv)
        elif args.command == "resume":
            cmd_resume(args, argv)
        elif args.command == "train-one":
            cmd_train_one(args)
        elif args.command == "export":
            cmd_export(args)
        elif args.command == "status":
            cmd_status(args)
        elif args.command == "report":
            cmd_report(args)
    except (ConfigError, DataError, FileNotFoundError, RestoreFailed) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
