"""A trial that reports a surrogate's learning curve instead of training (benchmarks/search_efficiency.py).

Called by the real driver with `run_trial`'s signature. Each epoch's report carries the surrogate's
level-2 F1 and, under SIMULATED_EPOCH_S, the seconds that epoch would have taken: the replay's
clock. It sleeps only `time_scale` times that (0 by default), so a replay costs the driver's own
overhead alone. Its own light module: Ray workers import it, and it must not pull in torch.
"""

from __future__ import annotations

import functools
import time
from typing import Any

from ray import tune

from benchmarks.curves import Surrogate
from model import metrics as M
from rundir import keys as K

SIMULATED_EPOCH_S = "simulated_epoch_s"


@functools.lru_cache(maxsize=2)
def cached_surrogate(path: str) -> Surrogate:
    return Surrogate.load(path)


def surrogate_trial(config: dict[str, Any], *, surrogate_path: str, time_scale: float = 0.0,
                    overrides: dict[str, Any], **_: Any) -> None:
    surrogate = cached_surrogate(surrogate_path)
    epochs = overrides["max_epochs"]
    if epochs != surrogate.epochs:
        raise ValueError(f"the search runs {epochs} epochs but the surrogate knows {surrogate.epochs}")
    f1, seconds = (row[0] for row in surrogate.predict([config[K.PARAMS]]))
    best = 0.0
    for epoch in range(1, epochs + 1):
        if time_scale > 0:
            time.sleep(seconds[epoch - 1] * time_scale)
        best = max(best, float(f1[epoch - 1]))
        tune.report({M.EPOCH: epoch, M.LEVEL2_MACRO_F1: float(f1[epoch - 1]), M.BEST_LEVEL2_MACRO_F1: best,
                     M.FINISHED: epoch == epochs, SIMULATED_EPOCH_S: float(seconds[epoch - 1])})
