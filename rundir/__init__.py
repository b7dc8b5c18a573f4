"""The run directory: one package every command and stage uses for RUN_DIR.

    paths       where each file of RUN_DIR (and RUN_DIR/confirm) lives; run names
    io          atomic writes, checked JSON reads, `damaged` (which file, what is wrong, the fix)
    lock        the one-driver-per-run lock
    record      run.json (the run's record) and its study.db, read back and checked
    trials      trials.json: one `TrialRecord` per trial
    settings    `Settings` (what run.json's settings are), the space and data they select
    preflight   checks of settings, space, data and resources before any work starts
    relocation  pointing a moved or copied run's records at where it is now
    keys        the keys shared above model/ (reported results, trial configs, run files)

It imports model/ and spaces/ only (never Ray): stages that need no Ray use it freely.
"""
