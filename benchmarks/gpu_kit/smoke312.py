"""A tiny local Ray Tune search (OptunaSearch + ASHA, torch-free) to prove a stripped kit runs.

    PYTHONPATH=/tmp/gpukit/site python3.12 -m benchmarks.gpu_kit.smoke312 [--storage DIR]

Run with the kit's site directory on PYTHONPATH under a Python 3.12 that holds the device's packages
the kit relies on (deps.py: click, filelock, msgpack, packaging, protobuf, pyyaml, requests, pandas,
pyarrow, fsspec, numpy, attrs, typing-extensions, markupsafe, tqdm; aiohttp, grpcio and
prometheus-client too, since the device has them and the dashboard agent looks for them). No torch
is needed: a CPU torch for 3.12 is not on PyPI, so this is how the kit is checked off the device.
Starts a local Ray the way search/cluster.py does (`include_dashboard=False`), so raylet starts
the dashboard agent and the runtime-env agent from the kit; trials report from worker processes.

Prints one JSON line (where ray and optuna came from, the trials' statuses and results, wall
seconds) and exits 0 when both trials reported every iteration from a kit-loaded Ray.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time


def trainable(config: dict) -> None:
    """Two iterations of a known score, reporting where this worker's ray came from."""
    import ray
    from ray import tune

    for step in range(1, 3):
        tune.report({"score": config["x"] * step, "step": step, "ray_file": ray.__file__})


def search(storage: str) -> dict:
    """Run the 2-trial search and return what the caller prints."""
    import optuna
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    started = time.perf_counter()
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    try:
        tuner = tune.Tuner(
            trainable, param_space={"x": tune.uniform(0.0, 1.0)},
            tune_config=tune.TuneConfig(num_samples=2, metric="score", mode="max", max_concurrent_trials=2,
                                        search_alg=OptunaSearch(), scheduler=ASHAScheduler(max_t=2, grace_period=2)),
            run_config=tune.RunConfig(storage_path=storage, name="smoke312", verbose=0))
        results = tuner.fit()
    finally:
        ray.shutdown()
    trials = [{"status": "error" if r.error else "ok", "step": r.metrics.get("step"),
               "ray_file": r.metrics.get("ray_file")} for r in results]
    return {"python": sys.version.split()[0], "ray": ray.__version__, "ray_file": ray.__file__,
            "optuna": optuna.__version__, "optuna_file": optuna.__file__, "trials": trials,
            "wall_s": round(time.perf_counter() - started, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--storage", default=None, help="Tune's storage path (default: a temporary folder)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        outcome = search(args.storage or tmp)
    print(json.dumps(outcome))
    ok = len(outcome["trials"]) == 2 and all(t["status"] == "ok" and t["step"] == 2 for t in outcome["trials"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
