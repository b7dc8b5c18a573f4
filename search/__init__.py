"""The Ray Tune layer: the only package that imports Ray.

    driver.py        launch and resume a search: Tuner(trial, searcher, scheduler, callbacks)
    searcher.py      Optuna on Ray Tune: samplers, warm starts, the duplicate guard, pruned trials as PRUNED
    scheduler.py     ASHA, Hyperband, the median rule and FIFO, rebuilt from the run's records on resume
    callbacks.py     the live leaderboard (trials.json, leaderboard.csv) and the progress lines
    trainable.py     what a Ray trial runs: a search trial or a confirm job, checkpointed every evaluation
    confirm_jobs.py  the confirm stage's network jobs on Ray Tune (the stage itself is stages/confirm/)
    pretrain_distributed.py  data-parallel MLM pretraining with Ray Train
    session.py       starting or joining Ray, concurrency, warm workers, restores that must not fail silently
    cluster.py       joining a cluster, shipping the code, checking shared storage
    internals.py     the one seam to Ray's and Optuna's private attributes, checked at start-up
    orphans.py       ending the Ray processes a killed driver left behind

`python -m search` is the command line (cli/); this package's __main__ only hands over to it.
"""
