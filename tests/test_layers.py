"""The package layers and what each may import (README "Layout" draws them).

    cli       the command line: parses flags, imports a command's code only when it runs
    stages    the commands before and after the search (train-one, pretrain, confirm, ensemble, predict)
    search    the Ray Tune layer: the only code that imports Ray
    results   pure tables and math over a run's records; status, export, report
    rundir    the run directory: paths, typed records, atomic writes, lock, settings, preflight
    spaces    search-space files -> Optuna define-by-run spaces
    model     what one trial trains; runs from plain Python

A package may import its own modules and the packages below it, never one above. The graph is read
from the source (an AST pass; nothing is imported) and counts imports inside functions too: a lazy
import that reaches up is still a dependency. Imports under `if TYPE_CHECKING:` are skipped (they
never run). The Ray rule is checked for real as well: importing the Ray-free entry points in a
fresh interpreter must not load `ray`, directly or through a constant.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("model", "spaces", "rundir", "results", "search", "stages", "cli")
# Files allowed to break the order, and why.
EXEMPT = {
    "search/__main__.py": "the `python -m search` entry point hands over to cli/",
}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imported_modules(path: Path) -> set[str]:
    """Every absolute module name `path` imports outside `if TYPE_CHECKING:` blocks."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
    return found


def violations() -> list[str]:
    out = []
    for rank, package in enumerate(LAYERS):
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            if relative in EXEMPT:
                continue
            for module in sorted(imported_modules(path)):
                top = module.split(".")[0]
                if top in LAYERS and LAYERS.index(top) > rank:
                    out.append(f"{relative} imports {module} ({top} is above {package})")
                if top == "ray" and package != "search":
                    out.append(f"{relative} imports {module}: only search/ imports Ray")
    return out


def test_no_package_imports_a_layer_above_it_and_only_search_imports_ray():
    found = violations()
    assert not found, "layer violations:\n" + "\n".join(found)


def test_the_checker_sees_lazy_imports_and_skips_type_checking_ones(tmp_path):
    source = tmp_path / "x.py"
    source.write_text("from typing import TYPE_CHECKING\nimport rundir.io\n"
                      "if TYPE_CHECKING:\n    from search.session import RestoreFailed\n"
                      "def f():\n    from stages.predict import run_predict\n")
    assert imported_modules(source) == {"typing", "typing.TYPE_CHECKING", "rundir.io", "stages.predict",
                                        "stages.predict.run_predict"}


def _loaded(code: str, modules: tuple[str, ...]) -> dict[str, bool]:
    """Which of `modules` a fresh interpreter has loaded after running `code` from the repository root."""
    probe = f"{code}\nimport sys\nprint(' '.join(str(m in sys.modules) for m in {modules!r}))"
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return dict(zip(modules, (flag == "True" for flag in result.stdout.split()), strict=True))


@pytest.mark.parametrize("entry", ["stages.ensemble", "stages.predict", "stages.train_one", "stages.confirm.reader",
                                   "stages.confirm.writer", "results.report", "results.status", "rundir.inputs"])
def test_the_stages_that_need_no_ray_do_not_load_it(entry):
    assert _loaded(f"import {entry}", ("ray",)) == {"ray": False}


def test_building_the_command_line_loads_no_heavy_library():
    """`--help` and a refused flag answer fast: the parser is built from light modules only."""
    heavy = ("torch", "ray", "transformers", "optuna", "sklearn", "pandas")
    assert _loaded("from cli.main import build_parser\nbuild_parser()", heavy) == dict.fromkeys(heavy, False)
