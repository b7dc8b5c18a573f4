"""model/ has an acyclic import graph.

The graph has an edge A -> B for every import of model module B written in model module A, found
by an AST pass over model/*.py (nothing is imported). Imports inside `if TYPE_CHECKING:` blocks
are skipped: they never run, and they are how a component names `TrialConfig` in annotations.
Imports inside functions DO count: a lazy import that closes a cycle still makes the modules
depend on each other (one can only be initialised after the other, and the order then depends on
which is imported first), so "lazy to break a cycle" is not allowed here. model/config.py's lazy
import of model/components.py is there for import time only and keeps the graph acyclic.
"""

from __future__ import annotations

import ast
from pathlib import Path

MODEL_DIR = Path(__file__).resolve().parents[2] / "model"


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _module_name(path: Path) -> str:
    return "model" if path.stem == "__init__" else f"model.{path.stem}"


def model_imports(path: Path, modules: set[str]) -> set[str]:
    """The model modules that `path` imports, outside `if TYPE_CHECKING:` blocks."""
    package = "model"  # every file lives directly in model/, so `from . import x` is model.x
    found: set[str] = set()

    def add(name: str) -> None:
        module = ".".join(name.split(".")[:2])  # model.x.y -> model.x (model/ has no subpackages)
        found.add(module if module in modules else "model")

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "model" or alias.name.startswith("model."):
                    add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = package if node.level else node.module or ""
            if node.level and node.module:
                base = f"{package}.{node.module}"
            if base == "model":
                for alias in node.names:  # `from model import metrics`: the submodule, else the package
                    add(f"model.{alias.name}" if f"model.{alias.name}" in modules else "model")
            elif base.startswith("model."):
                add(base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
    found.discard(_module_name(path))
    return found


def import_graph() -> dict[str, set[str]]:
    paths = sorted(MODEL_DIR.glob("*.py"))
    modules = {_module_name(p) for p in paths}
    return {_module_name(p): model_imports(p, modules) for p in paths}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle as [a, b, ..., a], or None."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_model_modules_import_each_other_without_a_cycle():
    graph = import_graph()
    assert {"model.config", "model.components", "model.encoders", "model.rnn"} <= set(graph)
    cycle = find_cycle(graph)
    assert cycle is None, (
        f"import cycle in model/: {' -> '.join(cycle)}. Import what is needed only for annotations "
        "under `if TYPE_CHECKING:`, or move the shared piece into a module both can import")


def test_the_components_use_trial_config_for_annotations_only():
    graph = import_graph()
    assert graph["model.components"] >= {"model.encoders", "model.rnn", "model.poolers", "model.losses",
                                         "model.contrastive", "model.adversarial"}
    assert "model.components" in graph["model.config"]
    for component in ("encoders", "rnn", "poolers", "losses", "contrastive", "adversarial"):
        assert "model.config" not in graph[f"model.{component}"], component


def test_the_cycle_finder_finds_cycles_and_skips_type_checking_imports(tmp_path):
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    source = tmp_path / "x.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "import model.errors\n"
        "from model import metrics, nothing_such\n"
        "if TYPE_CHECKING:\n    from model.config import TrialConfig\n"
        "else:\n    from model.registry import Registry\n"
        "def f():\n    from model.rnn import RNN_LAYERS\n"
    )
    modules = {"model", "model.errors", "model.metrics", "model.config", "model.registry", "model.rnn"}
    assert model_imports(source, modules) == {"model", "model.errors", "model.metrics", "model.registry",
                                              "model.rnn"}
