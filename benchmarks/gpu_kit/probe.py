"""Helpers the GPU checks run as subprocesses: the environment probe and the pretraining corpus.

    python -m benchmarks.gpu_kit.probe env [--manifest .gpukit/manifest.json]
    python -m benchmarks.gpu_kit.probe corpus --rows N --out FILE.csv

`env` imports what the checks import, timing each import (a fresh process without .pyc files once
spent 25 s here), and prints one JSON object: Python, torch and CUDA (the card's name), the
versions of the packages that matter, where ray and optuna were loaded from, the encoder names the
registry holds, and every requirement of the kit's packages that the machine's own packages do not
meet (the manifest's `device_requirements`). It exits 0 whenever it could print that object.
`corpus` writes the synthetic training texts (`id,text`) that the pretraining check reads.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import sys
import time
from pathlib import Path
from typing import Any

IMPORTS = ("torch", "transformers", "ray", "ray.tune", "optuna", "model.train", "search.driver")
VERSIONS = ("torch", "transformers", "numpy", "pandas", "scikit-learn", "scipy", "ray", "optuna", "pydantic",
            "sqlalchemy", "typing-extensions", "protobuf", "pyarrow", "pytorch-metric-learning", "cmaes")


def timed_imports(names: tuple[str, ...] = IMPORTS) -> dict[str, Any]:
    """Import each module in turn; {name: seconds it added, or the error}."""
    found: dict[str, Any] = {}
    for name in names:
        started = time.perf_counter()
        try:
            importlib.import_module(name)
            found[name] = round(time.perf_counter() - started, 2)
        except Exception as err:  # noqa: BLE001 - the probe reports whatever breaks an import
            found[name] = f"{type(err).__name__}: {err}"
    return found


def version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def unmet(requirements: list[dict[str, str]]) -> list[str]:
    """The device requirements (`{"requirement", "needed_by"}`) this environment does not meet."""
    from packaging.requirements import Requirement

    problems = []
    for item in requirements:
        req = Requirement(item["requirement"])
        have = version(req.name)
        if have is None:
            problems.append(f"{item['requirement']} (needed by {item['needed_by']}): not installed")
        elif not req.specifier.contains(have, prereleases=True):
            problems.append(f"{item['requirement']} (needed by {item['needed_by']}): {have} is installed")
    return problems


def cuda_facts() -> dict[str, Any]:
    """torch's view of the GPU (its name comes from torch.cuda.get_device_name)."""
    import torch

    facts: dict[str, Any] = {"torch": torch.__version__, "cuda_available": torch.cuda.is_available(),
                             "cuda": torch.version.cuda}
    if facts["cuda_available"]:
        props = torch.cuda.get_device_properties(0)
        facts.update(device_name=torch.cuda.get_device_name(0), device_count=torch.cuda.device_count(),
                     capability=".".join(map(str, torch.cuda.get_device_capability(0))),
                     memory_gib=round(props.total_memory / 2**30, 1), bf16=torch.cuda.is_bf16_supported())
    return facts


def encoder_names() -> list[str] | str:
    try:
        from model.components import registry

        return sorted(registry("encoder"))
    except Exception as err:  # noqa: BLE001
        return f"{type(err).__name__}: {err}"


def probe(manifest: Path | None) -> dict[str, Any]:
    """Everything `env` prints (module docstring)."""
    imports = timed_imports()
    found: dict[str, Any] = {"python": sys.version.split()[0], "executable": sys.executable, "imports_s": imports}
    try:
        found.update(cuda_facts())
    except Exception as err:  # noqa: BLE001
        found["torch_error"] = f"{type(err).__name__}: {err}"
    found["versions"] = {name: version(name) for name in VERSIONS}
    found["loaded_from"] = {name: getattr(sys.modules.get(name), "__file__", None) for name in ("ray", "optuna")}
    found["encoders"] = encoder_names()
    requirements = json.loads(manifest.read_text())["device_requirements"] if manifest else []
    found["unmet_requirements"] = unmet(requirements)
    return found


def write_corpus(rows: int, out: Path) -> None:
    """The synthetic generator's training texts (`id,text`), `rows` of them (seed 0)."""
    from model.synthetic import synthesize

    out.parent.mkdir(parents=True, exist_ok=True)
    synthesize(rows, seed=0)[0][["id", "text"]].to_csv(out, index=False)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    env = sub.add_parser("env", help="print the environment as JSON")
    env.add_argument("--manifest", type=Path, default=None, help="the kit's manifest.json (its device_requirements)")
    corpus = sub.add_parser("corpus", help="write a synthetic pretraining corpus")
    corpus.add_argument("--rows", type=int, required=True)
    corpus.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command == "env":
        print(json.dumps(probe(args.manifest)), flush=True)
    else:
        write_corpus(args.rows, args.out)
        print(f"wrote {args.rows} synthetic texts to {args.out}")


if __name__ == "__main__":
    main()
