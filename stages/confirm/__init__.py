"""The confirm stage: retrain the search's top-K configs on every fold, for S seeds.

A search scores each config on one fold; the fold-to-fold spread (about ±0.02 level-2 macro-F1 on
the real task) is larger than many of the differences it ranks by. This stage takes the top K
*completed* trials of the leaderboard (its order), retrains each at the full budget on every fold
of a stratified F-fold split of the whole training file (split seed = the run's seed; each fold
builds its vocabulary from its training part), once per seed s (member i's training seed = run seed +
1000 (i + 1) + s, so members of one architecture do not share their initial weights and batches,
and no job replays the search's trial with its seed), and
keeps every fold model and its out-of-fold (OOF) probabilities for `ensemble` and `predict`. Unless
`--no-linear`, the linear reference member (model/linear.py) is fitted on the same folds, in the
driver (seconds per fold), and ranked beside them.

    plan.py     members, each network job's config, the folds
    writer.py   `ConfirmStage`, the one writer of RUN_DIR/confirm (jobs.json, fold models, OOF, confirm.csv)
    run.py      the `confirm` command and its resume
    reader.py   reading a stage back (`ensemble`, `predict`)

The files and their typed records are rundir/confirm.py; the ranked table's math is
results/confirm.py; the network jobs run on Ray Tune in search/confirm_jobs.py (the only part
that imports Ray).
"""
