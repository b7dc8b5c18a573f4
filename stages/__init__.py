"""The stages before and after the search, each a command on data or on a RUN_DIR.

    train_one.py   train one configuration without Ray (debug, reproduce a leaderboard row)
    pretrain.py    MLM-pretrain an encoder checkpoint (here, or data-parallel through search/)
    confirm/       retrain the top configs on every fold (its network jobs run through search/)
    ensemble.py    choose an ensemble of the confirmed members from their out-of-fold predictions
    predict.py     write a submission with the ensemble, a confirmed member or a search trial

A stage reads and writes RUN_DIR through rundir/ (paths, typed records, atomic writes), computes
through model/ and results/, and reaches Ray only through search/, and only if it needs Ray:
ensemble, predict and train-one never import it.
"""
