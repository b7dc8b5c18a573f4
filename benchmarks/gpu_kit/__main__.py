"""`python -m benchmarks.gpu_kit build|run`: build the GPU kit here, run every GPU check there.

    python -m benchmarks.gpu_kit build [--out .gpukit] [--cache .gpukit-cache] [--python python3.12]
    python -m benchmarks.gpu_kit run [--kit .gpukit/kit.tar.xz] [--out DIR] [--budget-s N] [--cpu-smoke]

This module imports only the standard library until a command runs: `run` starts on the device's
bare Python before the kit is unpacked.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _build_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("build", help="download, strip, compile and pack the kit (needs PyPI and a Python 3.12)")
    p.add_argument("--out", type=Path, default=REPO / ".gpukit",
                   help="the folder the run tool carries: kit.tar.xz and manifest.json (git-ignored)")
    p.add_argument("--cache", type=Path, default=REPO / ".gpukit-cache",
                   help="downloaded wheels (reused by the next build) and the staging folder")
    p.add_argument("--python", default=None,
                   help="a Python 3.12 to compile the .pyc files with (default: python3.12, else pyenv's)")
    p.add_argument("--preset", type=int, default=9, choices=range(10), metavar="0-9", help="xz compression preset")


def _run_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run every GPU check in order and write one summary (on the device)")
    p.add_argument("--kit", type=Path, default=None,
                   help="kit.tar.xz to unpack first and put on the checks' PYTHONPATH (without it: this Python's "
                   "own packages)")
    p.add_argument("--unpack-to", type=Path, default=Path("/tmp/gpukit"), help="where the kit is unpacked")
    p.add_argument("--out", type=Path, default=Path(os.environ["OUT"]) if os.environ.get("OUT") else
                   REPO / "benchmarks" / "out" / "gpu_kit", help="summary.json, summary.md and checks.log "
                   "(default: $OUT where set, as on the device)")
    p.add_argument("--budget-s", type=float, default=None,
                   help="seconds for all checks together: a check gets the smaller of its own limit and what is "
                   "left (default: 480 on a GPU, none with --cpu-smoke)")
    p.add_argument("--cpu-smoke", action="store_true",
                   help="every check in its CPU smoke mode (tiny sizes, no GPU needed)")
    p.add_argument("--only", default=None, metavar="NAME,...", help="run only these checks (names as in the summary)")
    p.add_argument("--encoders", default=None, metavar="NAME,...",
                   help="the encoders the encoder checks train (default: checks.py's ENCODER_NAMES, the CPU-budget "
                   "ones)")
    p.add_argument("--limit", dest="limits", action="append", default=[], metavar="NAME=SECONDS",
                   help="override one check's time limit (repeatable)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_kit", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _build_parser(sub)
    _run_parser(sub)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO)) if str(REPO) not in sys.path else None
    if args.command == "build":
        from benchmarks.gpu_kit.build import build, find_python, report
        from benchmarks.gpu_kit.deps import KitError

        try:
            python = args.python or find_python()
            print(report(build(args.out.resolve(), args.cache.resolve(), python=python, preset=args.preset)))
        except KitError as err:
            sys.exit(f"error: {err}")
    else:
        from benchmarks.gpu_kit.runner import main as run

        sys.exit(run(args))


if __name__ == "__main__":
    main()
