"""search/internals.py is the one seam to Ray's and Optuna's private internals, and its start-up
check notices when an upgrade breaks what it relies on.

The scan (`violations`) walks the AST of every .py file of search/, model/, results/, spaces/ and
benchmarks/ except search/internals.py. A private name is `_x`: one leading underscore, not a
dunder. It reports:

1. In a module of search/ or benchmarks/, or one importing ray or optuna (the only modules
   holding their objects): `X._x` where X is anything but the bare names `self` and `cls` (a local, a subscript such as
   `bracket[0]._rungs`, a class such as `ResumableASHA._brackets`), unless X is a module bound by
   a plain `import` of a package other than Ray and Optuna (`argparse._SubParsersAction` in the
   CLI), or `super()` in a class none of whose Ray or Optuna parents has `_x` (rule 3 judges
   those; an argparse formatter's `super()._get_help_string` is fine); also `getattr`, `setattr`,
   `hasattr` or `delattr` of such an X with a literal `"_x"`.
2. In search/ (the package that imports Ray), `self._x` or `cls._x` inside a class that does not
   own `_x`: owned names are those the class body itself defines (a method, a class-level
   assignment) or assigns as `self._x = ...` in its own methods. So reading a parent's private
   state (`self._ot_study` in FidelityAwareOptunaSearch, `self._brackets` in ResumableASHA)
   counts.
3. In any class (of search/, benchmarks/ or another module importing ray or optuna: the only
   modules that can subclass their classes) with a Ray or Optuna class in its MRO: `self._x`, `cls._x` or a
   method `_x` whose name belongs to such a parent, i.e. the parent defines it or its source
   mentions `self._x`. This catches writes rule 2 takes for ownership (`self._total_samples =
   budget` in a SearchGenerator subclass) and overrides of a parent's private methods.
4. A private keyword argument (`Tuner(..., _tuner_kwargs=...)`) or a private string literal as a
   dict key or subscript (`extra["_tuner_kwargs"] = ...; Tuner(..., **extra)`): the way internal
   arguments of Ray's functions are passed.

The seam's other reliances (public-looking but undocumented state such as the ConcurrencyLimiter's
`live_trials`, Ray's log message text) cannot be told apart by syntax; the seam's own docstring
lists them, and its start-up check covers them.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import logging
import re
import textwrap
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from ray.tune.schedulers import ASHAScheduler, MedianStoppingRule
from ray.tune.search import ConcurrencyLimiter, SearchGenerator
from ray.tune.search.optuna import OptunaSearch

from model.errors import ConfigError
from rundir.settings import Settings
from search import internals
from search.driver import launch, resume

REPO = Path(__file__).resolve().parents[2]
SCANNED = ("search", "model", "results", "spaces", "benchmarks")
SEAM = Path("search/internals.py")
THIRD_PARTY = ("ray", "optuna")  # the libraries whose privates only the seam may touch
ACCESSORS = {"getattr", "setattr", "hasattr", "delattr"}


def is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def is_third_party(module: str) -> bool:
    return module.split(".")[0] in THIRD_PARTY


def _targets(node: ast.AST):
    """Names assigned as `self.<name>` in an assignment target (tuples unpacked)."""
    if isinstance(node, (ast.Tuple, ast.List)):
        for element in node.elts:
            yield from _targets(element)
    elif isinstance(node, ast.Starred):
        yield from _targets(node.value)
    elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
        yield node.attr


def owned_names(cls: ast.ClassDef) -> set[str]:
    """What the class body itself defines or assigns on `self` in its own methods (rule 2)."""
    owned = set()
    for stmt in cls.body:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            owned.add(stmt.name)
        elif isinstance(stmt, ast.Assign):
            owned.update(t.id for t in stmt.targets if isinstance(t, ast.Name))
        elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
            owned.add(stmt.target.id)
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(stmt):
                if isinstance(node, ast.Assign):
                    for target in node.targets:
                        owned.update(_targets(target))
                elif isinstance(node, ast.AnnAssign):
                    owned.update(_targets(node.target))
    return owned


_SOURCES: dict[type, str] = {}


def third_party_private(cls: type, name: str) -> str | None:
    """The Ray or Optuna class in `cls`'s MRO that `name` belongs to, if any (rule 3)."""
    for parent in cls.__mro__[1:]:
        if not is_third_party(getattr(parent, "__module__", "") or ""):
            continue
        if name in vars(parent):
            return parent.__qualname__
        if parent not in _SOURCES:
            try:
                _SOURCES[parent] = inspect.getsource(parent)
            except (OSError, TypeError):
                _SOURCES[parent] = ""
        if re.search(rf"\b(self|cls)\.{re.escape(name)}\b", _SOURCES[parent]):
            return parent.__qualname__
    return None


def _module_imports(tree: ast.Module) -> tuple[dict[str, str], bool]:
    """Names bound by plain `import` statements -> module; whether Ray or Optuna is imported."""
    modules, third = {}, False
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                modules[alias.asname or alias.name.split(".")[0]] = alias.name
                third |= is_third_party(alias.name)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            third |= is_third_party(node.module)
    return modules, third


def _parents(tree: ast.AST) -> dict[ast.AST, ast.AST]:
    return {child: parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}


def _enclosing_class(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> ast.ClassDef | None:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.ClassDef):
            return node
    return None


def violations(source: str, *, where: str, in_search: bool, ray_package: bool,
               resolve: Callable[[str], type | None]) -> list[str]:
    """Every private access of `source` that only the seam may make. `in_search`: rule 2 applies;
    `ray_package` (search/ or benchmarks/) or an import of ray or optuna: rule 3 applies, with
    `resolve(class_name)` giving the module's class of that name (None if it has none)."""
    tree = ast.parse(source)
    modules, imports_third_party = _module_imports(tree)
    rule3 = ray_package or imports_third_party
    parents = _parents(tree)
    owned = {cls: owned_names(cls) for cls in ast.walk(tree) if isinstance(cls, ast.ClassDef)}
    found = []

    def report(node: ast.AST, what: str, why: str) -> None:
        found.append(f"{where}:{node.lineno}: {what} ({why})")

    def check_instance(node: ast.AST, name: str, what: str) -> None:
        cls = _enclosing_class(node, parents)
        if cls is None:
            report(node, what, "rule 1: self/cls outside a class")
            return
        if in_search and name not in owned[cls]:
            report(node, what, f"rule 2: {cls.name} does not define or assign {name}")
        klass = resolve(cls.name) if rule3 else None
        parent = klass and third_party_private(klass, name)
        if parent:
            report(node, what, f"rule 3: {name} is private to {parent}, a parent of {cls.name}")

    def check_other(node: ast.AST, base: ast.AST, name: str, what: str) -> None:
        if not rule3:
            return  # a module that neither imports Ray or Optuna nor lives in search/ holds none of their objects
        if isinstance(base, ast.Name) and base.id in modules and not is_third_party(modules[base.id]):
            return  # a private of a module such as argparse, not of Ray or Optuna
        if isinstance(base, ast.Call) and isinstance(base.func, ast.Name) and base.func.id == "super":
            cls = _enclosing_class(node, parents)
            klass = resolve(cls.name) if cls is not None and rule3 else None
            if cls is not None and not rule3:
                return  # this module cannot subclass a Ray or Optuna class
            if klass is not None:
                parent = third_party_private(klass, name)
                if parent:
                    report(node, what, f"rule 3: {name} is private to {parent}, a parent of {cls.name}")
                return  # a parent outside Ray and Optuna (an argparse formatter, say)
        report(node, what, "rule 1: private attribute of another object")

    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and is_private(node.attr):
            what = f"{ast.unparse(node.value)}.{node.attr}"
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                check_instance(node, node.attr, what)
            else:
                check_other(node, node.value, node.attr, what)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ACCESSORS
              and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant)
              and isinstance(node.args[1].value, str) and is_private(node.args[1].value)):
            base, name = node.args[0], node.args[1].value
            what = f"{node.func.id}({ast.unparse(base)}, {name!r})"
            if isinstance(base, ast.Name) and base.id in ("self", "cls"):
                check_instance(node, name, what)
            else:
                check_other(node, base, name, what)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and is_private(node.name):
            cls = parents.get(node)
            if isinstance(cls, ast.ClassDef) and rule3:
                klass = resolve(cls.name)
                parent = klass and third_party_private(klass, node.name)
                if parent:
                    report(node, f"def {node.name}", f"rule 3: overrides a private of {parent}")
        elif isinstance(node, ast.keyword) and node.arg and is_private(node.arg):
            report(node, f"{node.arg}=", "rule 4: private keyword argument")
        elif isinstance(node, (ast.Dict, ast.Subscript)):
            keys = node.keys if isinstance(node, ast.Dict) else [node.slice]
            for key in keys:
                if isinstance(key, ast.Constant) and isinstance(key.value, str) and is_private(key.value):
                    report(key, repr(key.value), "rule 4: private key")
    return found


def project_files() -> list[Path]:
    return sorted(p.relative_to(REPO) for d in SCANNED for p in (REPO / d).rglob("*.py"))


def scan(path: Path) -> list[str]:
    source = (REPO / path).read_text(encoding="utf-8")
    module = None

    def resolve(name: str) -> type | None:
        nonlocal module
        module = module or importlib.import_module(".".join(path.with_suffix("").parts))
        klass = getattr(module, name, None)
        return klass if isinstance(klass, type) else None

    return violations(source, where=str(path), in_search=path.parts[0] == "search",
                      ray_package=path.parts[0] in ("search", "benchmarks"), resolve=resolve)


def test_only_the_seam_touches_private_internals():
    files = project_files()
    assert SEAM in files and Path("search/searcher.py") in files
    found = [line for path in files if path != SEAM for line in scan(path)]
    assert not found, "private attributes of Ray/Optuna outside search/internals.py:\n" + "\n".join(found)


def snippet_violations(code: str, *, in_search: bool = True) -> list[str]:
    code = textwrap.dedent(code)
    namespace: dict = {}
    exec(compile(code, "<snippet>", "exec"), namespace)
    return violations(code, where="snippet", in_search=in_search, ray_package=True,
                      resolve=lambda name: namespace.get(name) if isinstance(namespace.get(name), type) else None)


def test_the_scan_catches_what_the_seam_replaced():
    # What search/searcher.py, search/scheduler.py and search/driver.py did before the seam.
    found = snippet_violations("""
        import argparse
        from ray.tune.schedulers import ASHAScheduler
        from ray.tune.search import SearchGenerator
        from ray.tune.search.optuna import OptunaSearch

        class Searcher(OptunaSearch):
            def __init__(self):
                self._reopened = {}                      # its own: fine

            def reopen(self, new):
                self._ot_study.enqueue_trial({})         # rules 2 and 3
                self._reopened["t"] = new._trial_id      # rule 1 (the right-hand side)
                return getattr(self, "_ot_trials")       # rules 2 and 3

        class ASHA(ASHAScheduler):
            def rungs(self):
                return self._brackets[0]._rungs          # rules 2, 3 and rule 1

        class Generator(SearchGenerator):
            def set_state(self, state):
                self._total_samples = 3                  # rule 3 only: rule 2 takes it as its own

        def tuner(make, config, **kwargs):
            extra = {"_tuner_kwargs": {}}                # rule 4
            extra["_tuner_kwargs"]["resume_config"] = config  # rule 4
            return make(_tuner_kwargs=extra, **kwargs)   # rule 4

        def parser(sub: argparse._SubParsersAction):     # a stdlib private: fine
            return getattr(sub, "_own", None)            # rule 1

        class Formatter(argparse.HelpFormatter):
            def _get_help_string(self, action):          # a stdlib private: fine
                return super()._get_help_string(action)  # fine

        class Searcher2(OptunaSearch):
            def suggest(self, trial_id):
                return super()._setup_study("max")     # rule 3 (a private of OptunaSearch)
        """)
    text = "\n".join(found)
    assert "_reopened" not in text and "_SubParsersAction" not in text
    expected = [("self._ot_study", "rule 2"), ("self._ot_study", "rule 3"), ("new._trial_id", "rule 1"),
                ("getattr(self, '_ot_trials')", "rule 2"), ("getattr(self, '_ot_trials')", "rule 3"),
                ("self._brackets", "rule 2"), ("self._brackets", "rule 3"),
                ("self._brackets[0]._rungs", "rule 1"), ("self._total_samples", "rule 3"),
                ("getattr(sub, '_own')", "rule 1"), ("super()._setup_study", "rule 3"),
                ("'_tuner_kwargs'", "rule 4"), ("'_tuner_kwargs'", "rule 4"),
                ("_tuner_kwargs=", "rule 4")]
    for what, rule in expected:
        assert any(f": {what} ({rule}" in line for line in found), (what, rule, text)
    assert not any("self._total_samples (rule 2" in line for line in found)
    assert len(found) == len(expected), text


def test_the_scan_lets_own_private_state_be():
    assert snippet_violations("""
        from ray.tune import Callback

        class Board(Callback):
            limit = 3
            _cache: dict = {}

            def __init__(self):
                self._synced, (self._count, self._seen) = False, (0, set())

            def _say(self, text):
                return text

            def on_step_begin(self, iteration, trials, **info):
                self._synced = self._count < self.limit
                return self._say(str(self._seen)), self._cache
        """) == []


# --- the start-up check -----------------------------------------------------------------------------

def test_the_checks_pass_on_the_installed_versions():
    assert internals.problems() == []
    internals.check()


def test_supported_versions_are_the_pins():
    pins = dict(re.findall(r"^(ray|optuna)(?:\[[^\]]*\])?==(\S+)", (REPO / "requirements.txt").read_text(),
                           flags=re.MULTILINE))
    assert pins == internals.SUPPORTED


class _NoCompletedTrials(OptunaSearch):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        del self._completed_trials  # as if Ray renamed it


class _RenamedBrackets(ASHAScheduler):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._bracket_list = self.__dict__.pop("_brackets")


class _RenamedResults(MedianStoppingRule):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._trial_results = self.__dict__.pop("_results")


class _RenamedBudget(SearchGenerator):
    """The budget moved to another attribute, which set_state restores."""

    @property
    def total_samples(self):
        return self.__dict__.get("_budget", 0)

    def set_state(self, state):
        super().set_state(state)
        self._budget = state["total_samples"]

    def is_finished(self):
        return self._counter >= self.total_samples


class _NoLiveTrials(ConcurrencyLimiter):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        del self.live_trials


class _TunerDroppingKwargs(internals.Tuner):
    """A Tuner that no longer passes `_tuner_kwargs` on to tune.run."""

    def __init__(self, *args, _tuner_kwargs=None, **kwargs):
        super().__init__(*args, **kwargs)


class _ControllerWithNewMessage(internals.TuneController):
    """A TuneController that logs a failed restore in other words."""

    def __init__(self, *, resume_config=None, **kwargs):
        try:
            self.resume(resume_config)
        except Exception:
            logging.getLogger(internals.RESTORE_LOGGER).exception("Could not restore the experiment.")


# name: (the fake, every check it breaks, the attribute each failure names); ASHA's brackets serve
# the one-bracket rungs and the several brackets of Hyperband alike.
BREAKS = {
    "OptunaSearch": (_NoCompletedTrials, "items 1-5", "_completed_trials"),
    "ASHAScheduler": (_RenamedBrackets, ("items 6-7", "items 14-15"), "_brackets"),
    "MedianStoppingRule": (_RenamedResults, "items 14-15", "_results"),
    "SearchGenerator": (_RenamedBudget, "items 8-9", "_total_samples"),
    "ConcurrencyLimiter": (_NoLiveTrials, "items 8-9", "live_trials"),
    "Tuner": (_TunerDroppingKwargs, "item 10", "_tuner_kwargs"),
    "TuneController": (_ControllerWithNewMessage, "item 11", "Failed to restore the run state"),
}


@pytest.mark.parametrize("name", list(BREAKS))
def test_a_broken_assumption_fails_naming_the_supported_versions(monkeypatch, name):
    fake, items, attribute = BREAKS[name]
    items = (items,) if isinstance(items, str) else items
    monkeypatch.setattr(internals, name, fake)
    found = internals.problems()
    assert len(found) == len(items), found
    assert all(f"({item})" in line and attribute in line for item, line in zip(items, found, strict=True)), found
    with pytest.raises(internals.UnsupportedInternals) as caught:
        internals.check()
    message = str(caught.value)
    assert isinstance(caught.value, ConfigError)  # the CLI prints it as a user-facing error
    assert f"ray {internals.SUPPORTED['ray']}, optuna {internals.SUPPORTED['optuna']}" in message
    assert f"installed ray {internals.ray.__version__} and optuna {optuna.__version__}" in message
    assert found[0] in message and "pip install -r requirements.txt" in message


def test_launch_and_resume_check_before_touching_anything(monkeypatch, tmp_path):
    def broken():
        raise AssertionError("OptunaSearch._ot_study is not the searcher's optuna.Study")

    monkeypatch.setattr(internals, "CHECKS", {"OptunaSearch and optuna.Trial (items 1-5)": broken})
    with pytest.raises(internals.UnsupportedInternals, match="_ot_study"):
        launch(Settings(storage_path=str(tmp_path / "runs"), name="x"), out=lambda line: None)
    assert not (tmp_path / "runs").exists()
    with pytest.raises(internals.UnsupportedInternals, match="_ot_study"):
        resume(tmp_path / "missing", out=lambda line: None)  # checked before "not a run directory"


# --- seam functions not exercised by the searcher and scheduler tests ---------------------------------

def test_on_restore_failure_hands_ray_s_cause_to_the_handler():
    causes = []

    class Stop(Exception):
        pass

    def handler(cause):
        causes.append(cause)
        raise Stop

    logger = logging.getLogger(internals.RESTORE_LOGGER)
    with internals.on_restore_failure(handler):
        logger.warning("Restarting experiment.")  # other lines pass
        with pytest.raises(Stop):
            try:
                raise KeyError("state")
            except KeyError:
                logger.exception(internals.RESTORE_FAILED + ".")
    assert len(causes) == 1 and isinstance(causes[0], KeyError)
    logger.error(internals.RESTORE_FAILED + ".")  # the filter is gone after the block
    assert len(causes) == 1
