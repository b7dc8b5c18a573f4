"""The sub-commands before and after the search: confirm, ensemble, predict, pretrain, embed.

Each `add_*` builds a parser from light modules only (`--help` must not load torch or Ray); each
`cmd_*` imports the stage it runs when it runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cli.base import EXIT_UNFINISHED, add_command, add_verbose, apply_verbose
from cli.flags import at_least, duration, finite_float, top_count
from model.errors import ConfigError

PREDICT_BATCH_SIZE = 256  # `predict --batch-size`: rows per forward pass


def add_confirm(sub: argparse._SubParsersAction) -> None:
    from rundir.confirm import DEFAULT_BIGRAM_TOP, DEFAULT_FOLDS, DEFAULT_SEEDS, DEFAULT_TOP, RaceRule

    p = add_command(sub, "confirm", cmd_confirm, help="retrain the top configs on every fold: RUN_DIR/confirm/",
                 description="Retrain the top K completed trials of RUN_DIR's leaderboard at their full budget on "
                 "every fold of a stratified F-fold split of the whole training file, for S seeds, through Ray Tune "
                 "(no pruning), and the linear reference member on the same folds. Writes RUN_DIR/confirm/: "
                 "confirm.csv (members ranked by mean level-2 macro-F1 with paired comparisons to the best), "
                 "jobs.json, the fold models and every member's out-of-fold probabilities. Continue an "
                 "interrupted stage with `python -m search resume RUN_DIR`.")
    p.add_argument("run_dir", help="the RUN_DIR a launch printed")
    p.add_argument("--top", type=top_count, default=DEFAULT_TOP,
                   help="configs to confirm: the first K completed trials (0: none, the linear member alone), or auto: "
                   "the completed trials that cannot be told apart from rank 1 on the search's fold (paired "
                   "bootstrap; at most 10)")
    p.add_argument("--folds", type=int, default=DEFAULT_FOLDS, help="stratified folds of the whole training file")
    p.add_argument("--seeds", type=int, default=DEFAULT_SEEDS,
                   help="training seeds per fold (the i-th config's seed s trains with the run's seed "
                        "+ 1000 (i + 1) + s: never the search's own seed)")
    p.add_argument("--no-linear", dest="linear", action="store_false", default=True,
                   help="leave out the linear reference member (TF-IDF + LinearSVC; by default it is included)")
    view = p.add_argument_group("a second view of the text (word-vector encoders)")
    view.add_argument("--bigrams", default=None, metavar="DIR",
                      help="also confirm the first --bigram-top configs reading token pairs, with the vectors of "
                      "DIR (`embed --view bigrams --min-count 2`), as members NAME-bigrams: weaker alone, but they "
                      "add to an ensemble what the token view's members do not (docs/results.md)")
    view.add_argument("--bigram-top", type=int, default=DEFAULT_BIGRAM_TOP, metavar="N",
                      help="configs confirmed again in the bigram view (default %(default)s; each job costs about "
                      "2.3 of the token view's on a CPU)")
    race = p.add_argument_group("racing (stop confirming configs clearly worse than the best)")
    race.add_argument("--race", action="store_true",
                      help="run the jobs fold by fold and race out a config once a one-sided paired t-test over "
                      "the folds it shares with the best config says it is worse: its jobs left never run, it "
                      "stays in confirm.csv as raced_out with its partial scores and never enters an ensemble")
    race.add_argument("--race-min-folds", type=int, default=RaceRule.min_folds, metavar="N",
                      help="folds both configs must have scored before a test (default %(default)s)")
    race.add_argument("--race-alpha", type=finite_float, default=RaceRule.alpha, metavar="P",
                      help="race a config out below this p-value (default %(default)s; smaller: fewer, later stops)")
    add_verbose(p)
    p.add_argument("--force", action="store_true",
                   help="delete RUN_DIR/confirm (a finished or unfinished stage) and start over")
    res = p.add_argument_group("resources (default: the run's)")
    res.add_argument("--address", default=None, help="a running Ray cluster: auto, HOST:PORT or ray://HOST:PORT")
    res.add_argument("--cpus-per-trial", type=finite_float, default=None, help="CPUs Ray reserves per job")
    res.add_argument("--gpus-per-trial", type=finite_float, default=None, help="GPUs Ray reserves per job")
    res.add_argument("--max-concurrent", type=int, default=None, help="jobs at once")
    res.add_argument("--max-failures", type=int, default=None, help="retries of a crashing job, from its checkpoint")

def add_pretrain(sub: argparse._SubParsersAction) -> None:
    from cli.pretrain_flags import add_pretrain_arguments

    p = add_command(sub, "pretrain", cmd_pretrain, help="MLM-pretrain an encoder checkpoint on unlabeled text",
                 description="Masked-language-model pretraining (n-gram masking) of a BERT or NEZHA encoder on "
                 "unlabeled text; OUT becomes a checkpoint directory for `--set encoder=bert|nezha --set "
                 "checkpoint=OUT`. Resumable; data-parallel with Ray Train given --address or --num-workers.")
    add_pretrain_arguments(p)

def add_embed(sub: argparse._SubParsersAction) -> None:
    from cli.embed_flags import add_embed_arguments

    p = add_command(sub, "embed", cmd_embed, help="train word vectors (word2vec, fastText) on unlabeled text",
                 description="Word vectors trained with gensim on the task's own text; OUT becomes a checkpoint "
                 "directory for `--set encoder=textcnn|dpcnn|bigru|bilstm --set checkpoint=OUT`. Deterministic "
                 "for a --seed with --threads 1.")
    add_embed_arguments(p)

def add_ensemble(sub: argparse._SubParsersAction) -> None:
    from rundir.confirm import BEST_OPTION, DEFAULT_ENSEMBLE_METHOD, DEFAULT_MAX_MEMBERS, ENSEMBLE_OPTIONS

    p = add_command(sub, "ensemble", cmd_ensemble, help="choose an ensemble of the confirmed members (no Ray)",
                 description="Score every ensemble of the members `confirm` retrained, on their out-of-fold "
                 "predictions, in-sample and nested (each fold predicted by a selection made without it), print "
                 "them beside each member's score and write the chosen one to RUN_DIR/confirm/ensemble.json.")
    p.add_argument("run_dir", help="the RUN_DIR a launch printed, after `python -m search confirm RUN_DIR`")
    p.add_argument("--method", default=DEFAULT_ENSEMBLE_METHOD, choices=[*ENSEMBLE_OPTIONS, BEST_OPTION],
                   help="greedy: greedy selection with replacement (Caruana) averaging probabilities; prob, rank, "
                   "vote: every member with equal weight, by probability mean, mean per-row class rank or majority "
                   f"vote; {BEST_OPTION}: the one of these with the highest nested score (default: "
                   f"{DEFAULT_ENSEMBLE_METHOD})")
    p.add_argument("--max-members", type=int, default=DEFAULT_MAX_MEMBERS,
                   help="greedy: the number of additions (a member may be added several times)")
    p.add_argument("--threads", type=at_least(1), default=None,
                   help="CPU threads (default: the CPUs this process may use, less one, at least 1)")

def add_predict(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "predict", cmd_predict, help="write a submission for a test file (no Ray)",
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
    p.add_argument("--threads", type=at_least(1), default=None,
                   help="CPU threads (default: the CPUs this process may use, less one, at least 1)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if present)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

def cmd_confirm(args: argparse.Namespace, argv: list[str]) -> None:
    from rundir.confirm import RaceRule
    from stages.confirm.run import confirm

    apply_verbose(args)
    sys.stdout.reconfigure(line_buffering=True)
    outcome = confirm(args.run_dir, top=args.top, folds=args.folds, seeds=args.seeds, linear=args.linear,
                      race=RaceRule(args.race_min_folds, args.race_alpha) if args.race else None, force=args.force,
                      address=args.address, cpus_per_trial=args.cpus_per_trial,
                      gpus_per_trial=args.gpus_per_trial, max_concurrent=args.max_concurrent,
                      max_failures=args.max_failures, bigrams=args.bigrams, bigram_top=args.bigram_top, argv=argv)
    if not outcome.finished:
        sys.exit(EXIT_UNFINISHED)

def cmd_pretrain(args: argparse.Namespace, argv: list[str]) -> None:
    from cli.pretrain_flags import config_from_args
    from stages.pretrain import RayTrain, run_pretrain

    sys.stdout.reconfigure(line_buffering=True)
    ray_train = None
    if args.address is not None or args.num_workers is not None:
        ray_train = RayTrain(address=args.address, num_workers=args.num_workers or 1,
                             cpus_per_worker=args.cpus_per_worker, gpus_per_worker=args.gpus_per_worker,
                             storage_path=args.storage_path, max_failures=args.max_failures)
    run_pretrain(config_from_args(args), args.corpus, args.out, resume=args.resume, save_every=args.save_every,
                 device=args.device, threads=args.threads, progress=not args.no_progress,
                 command=["python", "-m", "search", *argv], ray_train=ray_train)

def cmd_embed(args: argparse.Namespace, argv: list[str]) -> None:
    from cli.embed_flags import config_from_args
    from stages.embed import run_embed

    sys.stdout.reconfigure(line_buffering=True)  # the epoch lines show up at once when piped
    run_embed(config_from_args(args), args.corpus, args.out, threads=args.threads, quiet=args.quiet,
              command=["python", "-m", "search", *argv])

def cmd_ensemble(args: argparse.Namespace, argv: list[str]) -> None:
    from stages.ensemble import run_ensemble

    run_ensemble(args.run_dir, method=args.method, max_members=args.max_members, threads=args.threads, argv=argv)

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
                batch_size=args.batch_size, device=args.device, threads=args.threads, progress=not args.no_progress)


def add_pipeline(sub: argparse._SubParsersAction) -> None:
    from cli.search_commands import add_method_flags, add_resource_flags, add_run_flags, data_parser, space_parser
    from rundir.pipeline import MAX_TOP, PIPELINE_SPACE
    from rundir.settings import Settings

    d = Settings()
    p = add_command(sub, "pipeline", cmd_pipeline, parents=[space_parser(PIPELINE_SPACE), data_parser()],
                    help="from training data to a submission within a time budget: search, confirm, ensemble, "
                    "predict", description="Run the stages in one RUN_DIR within --budget of wall time: word "
                    "vectors (for a space that needs them), the search until its share of the budget, confirm of "
                    "the top configs that fit on every fold (--folds), the ensemble, and the prediction of --test "
                    "into --out. Prints the plan first, where it stands every few minutes, and a summary with the "
                    "time each stage planned and took. `python -m search resume RUN_DIR` continues it after a kill.")
    io = p.add_argument_group("pipeline")
    io.add_argument("--test", required=True, help="the test CSV to predict (header id,text)")
    io.add_argument("--out", required=True, help="the submission CSV to write (id,label)")
    io.add_argument("--budget", required=True, type=duration, metavar="DURATION",
                    help="wall time for every stage together, e.g. 2h, 90m (at least 5m)")
    io.add_argument("--max-top", type=at_least(1), default=MAX_TOP,
                    help="confirm at most this many configs (fewer when fewer fit the budget)")
    io.add_argument("--bigrams", action=argparse.BooleanOptionalAction, default=None,
                    help="also train token-pair vectors and confirm the first configs again reading them "
                    "(`confirm --bigrams`): a second view of the text for the ensemble, at about 2.3 token jobs' "
                    "cost per job (docs/results.md). Default: on for a space of word-vector encoders only (the "
                    "cpu space), off for others")
    add_run_flags(p, d)
    add_method_flags(p, d)
    add_resource_flags(p, d)
    add_verbose(p)


def cmd_pipeline(args: argparse.Namespace, argv: list[str]) -> None:
    from rundir.settings import Settings
    from stages.pipeline import start_pipeline

    apply_verbose(args)
    sys.stdout.reconfigure(line_buffering=True)
    start_pipeline(Settings.from_namespace(args), test=args.test, out_path=args.out, budget_s=args.budget,
                   folds=args.folds, max_top=args.max_top, bigrams=args.bigrams, argv=argv)
