"""How many CPU threads a command outside Ray gives torch and the BLAS libraries.

torch's default (one thread per core) oversubscribes a machine that runs anything else: `predict` of
9 fold models took 158 s with it and 7 s with one thread on the busy 2-core machine (2026-12).
Commands take `--threads`; without it they use the CPUs this process may run on, less one for
everything else, at least one. Trials inside Ray use the CPUs Ray reserved for them instead
(search/trainable.py).
"""

from __future__ import annotations

import os


def default_threads() -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return max(1, cpus - 1)


def use_threads(threads: int | None) -> int:
    """Set torch's and the BLAS libraries' thread counts for this process; returns the count."""
    import torch
    from threadpoolctl import threadpool_limits

    count = threads if threads is not None else default_threads()
    torch.set_num_threads(count)
    threadpool_limits(limits=count)  # numpy's and scikit-learn's BLAS, OpenMP: kept for the process
    return count
