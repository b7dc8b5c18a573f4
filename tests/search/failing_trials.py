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


def out_of_memory_trial(config, *, marker_dir: str, **kwargs):
    """run_trial on a faked 16 GiB GPU that this trial has to itself (other processes hold 0.5 GiB)
    and that every `fit` overfills: each start of the trial and each `fit` is noted in marker_dir."""
    from unittest import mock

    import torch

    from search import trainable

    number = config["optuna_number"]
    with (Path(marker_dir) / f"trial-{number}-starts").open("a") as log:
        log.write("x")

    def overfill(*args, **kw):
        with (Path(marker_dir) / f"trial-{number}-fits").open("a") as log:
            log.write("x")
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    gib = 2**30
    with mock.patch.object(trainable, "fit", overfill), \
            mock.patch.object(trainable, "trial_device", lambda: torch.device("cuda:0")), \
            mock.patch.multiple(torch.cuda, reset_peak_memory_stats=lambda device: None, empty_cache=lambda: None,
                                mem_get_info=lambda device: (1 * gib, 16 * gib),
                                memory_reserved=lambda device: 14.5 * gib):
        run_trial(config, **kwargs)
