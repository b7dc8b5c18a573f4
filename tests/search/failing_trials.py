"""Trial functions that fail on purpose (importable by Ray workers)."""

from pathlib import Path

from search.trainable import run_trial


def flaky_trial(config, *, marker_dir: str, **kwargs):
    """Optuna trial 1 fails on its first attempt only; trial 2 fails on every attempt."""
    number = config["optuna_number"]
    if number == 1:
        marker = Path(marker_dir) / "trial-1-failed-once"
        if not marker.exists():
            marker.touch()
            raise RuntimeError("injected: the first attempt of trial 1 fails")
    if number == 2:
        (Path(marker_dir) / "trial-2-attempts").open("a").write("x")
        raise ValueError("injected: trial 2 always fails")
    run_trial(config, **kwargs)


def pid_recording_trial(config, *, marker_dir: str, **kwargs):
    """run_trial, after noting the worker process it runs in (one line per trial: `number pid`)."""
    import os

    with (Path(marker_dir) / "pids").open("a") as log:
        log.write(f"{config['optuna_number']} {os.getpid()}\n")
    run_trial(config, **kwargs)
