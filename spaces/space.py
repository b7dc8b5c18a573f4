"""Search spaces: a YAML file -> an Optuna define-by-run function.

Format (every name is a `TrialConfig` field; see spaces/demo.yaml):

    description: one line shown in the run's record
    fixed:                      # values every trial shares
      encoder: tiny
    params:                     # what Optuna samples, in dependency order
      lr:          {float: [1.0e-4, 3.0e-3], log: true}
      batch_size:  {int: [16, 64], step: 16}
      loss:        {choice: [ce, focal]}
      focal_gamma: {float: [0.5, 3.0], when: {loss: focal}}     # exists only when loss is focal
      msd_reduce:  {choice: [mean, sum], when: {msd_count: [2, 4]}}
      label_smoothing: {value: 0.1, when: {loss: ce}}           # conditional constant
    warm_start:                 # named points, evaluated first; unnamed params are sampled
      baseline: {lr: 1.0e-3, loss: ce}

`when` maps parent parameters to one allowed value or a list of them; a parameter is active only
when every parent is active and has an allowed value. Inactive parameters are not sampled, not
passed to the trial (the `TrialConfig` default applies) and empty in the leaderboard.

Fixing values from the command line (`python -m search launch --set KEY=VALUE`): `load_space(...,
sets={...})` merges the values into `fixed` before the space is validated, so a space may leave a
value to its user (spaces/pretrained.yaml fixes `encoder: bert` but no `checkpoint`) and everything
downstream (preflight, trials, confirm, predict) sees one ordinary space. A `--set` may only fix a
field the space does not search: searching a narrower range is an edit of the space, not a flag.
The raw `KEY=VALUE` strings are kept in the run's settings (run.json), so `resume`, `confirm`,
`predict` and the leaderboard's `train-one` command rebuild the same space.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import optuna
import yaml

from model.config import CROSS_FIELDS, LIMITS, TrialConfig, check_value, coerce_value, field_names, field_type
from model.errors import ConfigError

SPACES_DIR = Path(__file__).resolve().parent
DEFAULT_SPACE = SPACES_DIR / "demo.yaml"
KINDS = ("float", "int", "choice", "value")
OPTIONS = {"log", "step", "when"}
TOP_LEVEL = {"description", "fixed", "params", "warm_start"}
# Limits on the YAML document, far above any hand-written space (the shipped ones are ~5 KB, ~600
# nodes, 5 levels deep): an alias bomb (`a: &a [x, x]`, `b: &b [*a, *a]`, ...) is a few hundred
# bytes that expand to billions of nodes, and ends in a MemoryError wherever the space is walked.
MAX_SPACE_BYTES = 1_000_000
MAX_SPACE_NODES = 100_000  # after expanding aliases
MAX_SPACE_DEPTH = 32
# Cross-field combinations (`check_combinations`): an int range of a `CROSS_FIELDS` field is tried
# at every value of its grid when it has at most this many, else at its bounds only.
MAX_GRID = 256


class SpaceError(ConfigError):
    """A search-space file is invalid; the message names the file, line and parameter."""


_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrialConfig)}


def parse_number(text: str) -> int | float | None:
    """Python `int()`/`float()` syntax -> the number (`3`, `-0.5`, `2e-05`, `1E5`); anything else -> None.

    Not YAML: YAML 1.1 reads `2e-05` and `1e-3` as strings. `float(repr(x)) == x` for every float, so a
    value written with `repr`/`str` (the leaderboard's `command`) reads back exactly."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return None


def parse_set_value(name: str, text: str) -> Any:
    """The value of `--set name=text` for `TrialConfig` field `name`: a number for a number field (a
    finite one), the text itself for a string field. The field's check then validates it."""
    if field_type(name) is str:
        return text  # verbatim: a checkpoint directory named `2024` stays a string
    example = f"--set {name}={_DEFAULTS[name]!r}"
    number = parse_number(text)
    if number is None:
        raise ConfigError(f"--set {name}={text}: `{name}` takes a number ({field_type(name).__name__}), "
                          f"e.g. {example}")
    if isinstance(number, float) and not math.isfinite(number):
        raise ConfigError(f"--set {name}={text}: `{name}` must be a finite number, e.g. {example}")
    return number


def parse_sets(items: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """`["lr=2e-05", "loss=focal"]` -> {"lr": 2e-05, "loss": "focal"} (see `parse_set_value`)."""
    values, unknown = {}, []
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set {item!r} is not key=value, e.g. --set lr=0.001")
        if key in _DEFAULTS:
            values[key] = parse_set_value(key, text)
        else:
            unknown.append(key)
    if unknown:
        raise ConfigError(f"--set names unknown field(s) {', '.join(sorted(set(unknown)))}; valid fields are: "
                          f"{', '.join(field_names())}")
    return values


class _Mapping(dict):
    """A YAML mapping that remembers the line of each key."""

    lines: dict[str, int]


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses documents nested deeper than MAX_SPACE_DEPTH or that expand (aliases
    counted at every use) to more than MAX_SPACE_NODES nodes, before anything is constructed."""

    depth = 0

    def compose_node(self, parent, index):
        self.depth += 1
        if self.depth > MAX_SPACE_DEPTH:
            raise SpaceError(f"{self.name}: line {self.peek_event().start_mark.line + 1}: nested more than "
                             f"{MAX_SPACE_DEPTH} levels deep; a space is a few levels of mappings and lists")
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def compose_document(self):
        node = super().compose_document()
        size = _expanded_size(node, self.name)
        if size > MAX_SPACE_NODES:
            raise SpaceError(f"{self.name}: its aliases (*name) expand to {size} YAML nodes, more than the "
                             f"{MAX_SPACE_NODES} a space may have (an alias bomb?); write the values out "
                             "or use fewer nested aliases")
        return node


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return list(node.value) if isinstance(node, yaml.SequenceNode) else []


def _expanded_size(root: yaml.Node, source: str) -> int:
    """Nodes of the document with every alias expanded, counted without expanding (iterative DFS, each
    node once). A node that contains itself (`a: &a [*a]`) is refused."""
    sizes: dict[int, int] = {}
    stack = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if children_done:
            sizes[id(node)] = 1 + sum(sizes[id(c)] for c in _children(node))
        elif id(node) in sizes:
            if sizes[id(node)] < 0:
                raise SpaceError(f"{source}: line {node.start_mark.line + 1}: an alias refers to a node that "
                                 "contains it (a recursive structure); a space cannot contain itself")
        else:
            sizes[id(node)] = -1  # on the current path
            stack.append((node, True))
            stack.extend((c, False) for c in _children(node) if sizes.get(id(c), -1) < 0)
    return sizes[id(root)]


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> _Mapping:
    # Keys merged in by `<<: *alias` come first and may be overridden; the mapping's own keys not.
    own = {id(k) for k, _ in node.value if k.tag != "tag:yaml.org,2002:merge"}
    loader.flatten_mapping(node)
    out, seen = _Mapping(), set()
    out.lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if not isinstance(key, (str, int, float, bool)) and key is not None:
            raise SpaceError(f"{loader.name}: line {line}: a key must be a name, not {type(key).__name__} {key!r}")
        if id(key_node) in own:
            if key in seen:
                raise SpaceError(f"{loader.name}: line {line}: key {key!r} repeated (first on line {out.lines[key]})")
            seen.add(key)
        out[key] = loader.construct_object(value_node, deep=True)
        out.lines[key] = line
    return out


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


@dataclass(frozen=True)
class Param:
    name: str
    kind: str  # one of KINDS
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple = ()
    value: Any = None
    when: dict[str, tuple] = field(default_factory=dict)

    @property
    def searched(self) -> bool:
        return self.kind != "value"

    def contains(self, value: Any) -> bool:
        if self.kind == "value":
            return value == self.value
        if self.kind == "choice":
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.kind == "int" and not float(value).is_integer():
            return False
        return self.low <= value <= self.high and self.on_grid(value)

    def on_grid(self, value: float) -> bool:
        """`value` is low + k * step (decimal arithmetic on the written numbers, as Optuna does)."""
        return self.step is None or (_decimal(value) - _decimal(self.low)) % _decimal(self.step) == 0

    def grid(self) -> tuple:
        """The values `check_combinations` tries: every choice, the value, an int range's whole grid
        when it has at most MAX_GRID points, else a range's bounds."""
        if self.kind == "choice":
            return self.choices
        if self.kind == "value":
            return (self.value,)
        step = int(self.step or 1)
        if self.kind == "int" and (self.high - self.low) // step < MAX_GRID:
            return tuple(range(int(self.low), int(self.high) + 1, step))
        return (self.low, self.high)

    def suggest(self, trial: optuna.Trial) -> Any:
        if self.kind == "float":
            return trial.suggest_float(self.name, self.low, self.high, log=self.log, step=self.step)
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log,
                                     step=int(self.step or 1))
        if self.kind == "choice":
            return trial.suggest_categorical(self.name, list(self.choices))
        return self.value


def _decimal(number: float) -> Decimal:
    return Decimal(str(number))


@dataclass(frozen=True)
class SearchSpace:
    path: str
    description: str
    fixed: dict[str, Any]
    params: tuple[Param, ...]  # parents before children
    warm_start: dict[str, dict[str, Any]]
    lines: dict[str, int] = field(default_factory=dict, compare=False)  # of fixed and params, for errors

    @property
    def searched(self) -> list[str]:
        """Names of the parameters Optuna samples (the leaderboard's `param.<name>` columns)."""
        return [p.name for p in self.params if p.searched]

    def is_active(self, param: Param, values: dict[str, Any]) -> bool:
        return all(parent in values and values[parent] in allowed for parent, allowed in param.when.items())

    def sample(self, trial: optuna.Trial) -> dict[str, Any]:
        """The define-by-run function: sample every active parameter, in dependency order."""
        values: dict[str, Any] = {}
        for param in self.params:
            if self.is_active(param, values):
                values[param.name] = param.suggest(trial)
        return values

    def with_constants(self, values: dict[str, Any]) -> dict[str, Any]:
        """`values` plus the conditional constants (`value:` parameters) active under them."""
        out = dict(values)
        for param in self.params:
            if not param.searched and param.name not in out and self.is_active(param, out):
                out[param.name] = param.value
        return out

    def config(self, params: dict[str, Any], **overrides: Any) -> TrialConfig:
        """The trial config of sampled `params`: defaults <- fixed <- params <- overrides."""
        return TrialConfig.from_dict({**self.fixed, **params, **overrides})

    def draws(self, names: tuple[str, ...], point: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Every assignment of the searched parameters among `names` that a trial starting from `point`
        (a warm-start point, or {}) can draw, in sampling order, each parameter over its `grid()`.
        Values the point sets are pinned. A condition on a parameter outside `names` may go either
        way, so such a parameter is also tried inactive (the `TrialConfig` default applies)."""
        point = point or {}
        draws: list[dict[str, Any]] = [{}]
        for param in self.params:
            if param.name not in names:
                continue
            values = (point[param.name],) if param.name in point else param.grid()
            known = [parent for parent in param.when if parent in names]
            undecided = len(known) < len(param.when) and param.name not in point
            grown = []
            for draw in draws:
                if any(draw.get(parent) not in param.when[parent] for parent in known):
                    grown.append(draw)  # inactive in this draw
                    continue
                grown += [{**draw, param.name: value} for value in values] + ([draw] if undecided else [])
            draws = grown
        return draws


def check_combinations(space: SearchSpace, overrides: dict[str, Any] | None = None) -> None:
    """Every combination of `CROSS_FIELDS` values the space can draw makes a valid `TrialConfig`
    (hidden_size divisible by num_heads, a checkpoint for a checkpoint encoder, ...), so a bad one
    fails here rather than as a failed trial. Only those fields combine, and only over their grids
    (`Param.grid`), so a space of dozens of parameters and float ranges stays a few configs."""
    overrides = overrides or {}
    for draw in space.draws(CROSS_FIELDS):
        try:
            space.config(draw, **overrides)
        except ConfigError as err:
            shown = {**{k: v for k, v in space.fixed.items() if k in CROSS_FIELDS}, **draw}
            combo = ", ".join(f"{k} = {v!r}" + (f" (line {space.lines[k]})" if k in space.lines else "")
                              for k, v in shown.items() if k not in overrides)
            raise SpaceError(f"{space.path}: trials with {combo or 'the defaults'} cannot run: {err}. Every "
                             "combination a space can draw must make a valid config: narrow the choices or "
                             "ranges, or add a `when` condition") from None


# ----------------------------------------------------------------------------- loading


def resolve_space_path(space: str | Path | None) -> Path:
    """A path, or the name of a shipped space (`demo` -> spaces/demo.yaml)."""
    if space is None:
        return DEFAULT_SPACE
    path = Path(space)
    if not path.exists() and not path.suffix and (SPACES_DIR / f"{space}.yaml").exists():
        path = SPACES_DIR / f"{space}.yaml"
    if not path.is_file():
        shipped = ", ".join(sorted(p.stem for p in SPACES_DIR.glob("*.yaml")))
        raise SpaceError(f"search space {str(space)!r} not found: pass a YAML file or one of: {shipped}")
    return path


def load_space(space: str | Path | None = None, *, sets: dict[str, Any] | None = None,
               skip_searched: bool = False) -> SearchSpace:
    """The space in file (or shipped name) `space`, with `sets` (`parse_sets` of `--set`s) fixed."""
    path = resolve_space_path(space)
    _check_size(path.stat().st_size, str(path))  # before reading a huge file into memory
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise SpaceError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start}); save the space as "
                         "UTF-8 YAML") from None
    return parse_space(text, source=str(path), sets=sets, skip_searched=skip_searched)


def parse_space(text: str, *, source: str = "<space>", sets: dict[str, Any] | None = None,
                skip_searched: bool = False) -> SearchSpace:
    """`sets`: values that replace or add to `fixed` (launch's `--set`); naming a searched parameter is
    an error, unless `skip_searched` (train-one, whose `--set`s also override sampled values itself)."""
    _check_size(len(text.encode("utf-8")), source)
    try:
        loader = _Loader(text)
        loader.name = source
        try:
            doc = loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.YAMLError as err:
        raise SpaceError(f"{source}: not valid YAML: {err}") from err
    if not isinstance(doc, dict):
        raise SpaceError(f"{source}: must be a mapping with keys {', '.join(sorted(TOP_LEVEL))}")
    where = _Where(source, doc)
    unknown = sorted(set(doc) - TOP_LEVEL)
    if unknown:
        raise SpaceError(f"{where(unknown[0])}: unknown top-level key {unknown[0]!r}; "
                         f"valid keys are: {', '.join(sorted(TOP_LEVEL))}")
    raw_fixed = _apply_sets(doc.get("fixed") or {}, doc.get("params") or {}, sets or {}, source, skip_searched)
    raw_params = doc.get("params") or {}
    searched = frozenset(raw_params) if isinstance(raw_params, dict) else frozenset()
    fixed = _parse_fixed(raw_fixed, where, searched=searched)
    params = _parse_params(raw_params, where, fixed)
    if not any(p.searched for p in params):
        raise SpaceError(f"{source}: `params` declares nothing to search; add at least one float, int "
                         "or choice parameter")
    lines = {**getattr(doc.get("params"), "lines", {}), **getattr(raw_fixed, "lines", {})}
    space = SearchSpace(path=source, description=str(doc.get("description", "")), fixed=fixed,
                        params=params, warm_start={}, lines=lines)
    # max_epochs is --max-epochs' unless the space fixes it; preflight checks again with the flag.
    check_combinations(space, {} if "max_epochs" in fixed else {"max_epochs": LIMITS["max_epochs"][0]})
    warm = _parse_warm_start(doc.get("warm_start") or {}, where, space)
    return dataclasses.replace(space, warm_start=warm)


def _check_size(size: int, source: str) -> None:
    if size > MAX_SPACE_BYTES:
        raise SpaceError(f"{source}: {size} bytes, more than the {MAX_SPACE_BYTES} a space file may have "
                         "(hand-written spaces are a few KB); is it the right file?")


class _Where:
    """Formats 'file: line N (`key`)' prefixes for error messages."""

    def __init__(self, source: str, mapping: dict):
        self.source, self.mapping = source, mapping

    def __call__(self, key: str, mapping: dict | None = None) -> str:
        line = getattr(mapping if mapping is not None else self.mapping, "lines", {}).get(key)
        return f"{self.source}: line {line}" if line else self.source


def _check_field(name: str, value: Any, where: str, role: str) -> Any:
    if name not in field_names():
        raise SpaceError(f"{where}: {role} {name!r} is not a TrialConfig field; valid fields are: "
                         f"{', '.join(field_names())}")
    value = coerce_value(name, _number(value) if field_type(name) is not str else value)
    try:
        check_value(name, value)
    except ConfigError as err:
        raise SpaceError(f"{where}: {err}") from None
    return value


def _number(value: Any) -> Any:
    # YAML 1.1 reads `1e-4` (no dot) as a string; accept it as the number it obviously is.
    if isinstance(value, str):
        try:
            return float(value) if any(c in value for c in ".eE") else int(value)
        except ValueError:
            return value
    return value


def _apply_sets(fixed: Any, params: Any, sets: dict[str, Any], source: str, skip_searched: bool) -> Any:
    """`fixed` with the `--set` values merged in (file lines kept for the file's own keys)."""
    if not sets or not isinstance(fixed, dict):
        return fixed
    searched = [k for k in sets if isinstance(params, dict) and k in params]
    if searched and not skip_searched:
        names = ", ".join(searched)
        raise SpaceError(f"--set {searched[0]}=...: {source} searches {names} (under `params`), and --set only "
                         f"fixes fields a space does not search; drop the --set, or copy the space and move "
                         f"{names} from `params` to `fixed` there")
    for name, value in sets.items():
        if name in searched:
            continue
        try:
            check_value(name, coerce_value(name, value))
        except ConfigError as err:
            raise SpaceError(f"--set {name}={value}: {err}") from None
    out = _Mapping({**fixed, **{k: v for k, v in sets.items() if k not in searched}})
    out.lines = {k: line for k, line in getattr(fixed, "lines", {}).items() if k not in sets}
    return out


def _parse_fixed(fixed: dict, where: _Where, *, searched: frozenset[str] = frozenset()) -> dict[str, Any]:
    """The fixed values, valid as a config on their own unless what they lack is searched (a fixed
    checkpoint encoder whose `checkpoint` is a choice, or fixed values such as `view: bigrams` that
    only the searched encoders read: `check_combinations` checks each draw)."""
    if not isinstance(fixed, dict):
        raise SpaceError(f"{where('fixed')}: `fixed` must be a mapping of TrialConfig fields to values")
    out = {name: _check_field(name, value, where(name, fixed), "fixed value") for name, value in fixed.items()}
    try:
        TrialConfig.from_dict(out)
    except ConfigError as err:
        if "encoder" in searched and "encoder" not in out:
            return out  # TrialConfig's default encoder is no encoder this space draws
        if not out.get("checkpoint") and "`checkpoint`" in str(err):
            if "checkpoint" in searched:
                return out
            # A space that fixes a checkpoint encoder but leaves the directory to its user.
            raise SpaceError(f"{where.source} needs a checkpoint for encoder {out.get('encoder')!r}: pass --set "
                             "checkpoint=DIR (a directory written by `python -m search pretrain`, or any "
                             "checkpoint with a config, the weights and vocab.txt)") from None
        raise SpaceError(f"{where('fixed')}: the fixed values do not make a valid config: {err}") from None
    return out


def _parse_params(params: dict, where: _Where, fixed: dict[str, Any]) -> tuple[Param, ...]:
    if not isinstance(params, dict):
        raise SpaceError(f"{where('params')}: `params` must be a mapping of TrialConfig fields to domains")
    parsed: dict[str, Param] = {}
    for name, spec in params.items():
        at = where(name, params)
        if name in fixed:
            raise SpaceError(f"{at}: {name!r} is both fixed and searched; keep one")
        parsed[name] = _parse_param(name, spec, at)
    for param in parsed.values():
        at = where(param.name, params)
        for parent, allowed in param.when.items():
            if parent not in parsed:
                raise SpaceError(f"{at}: `{param.name}` has a condition on {parent!r}, which is not a "
                                 f"parameter of this space; conditions may name: {', '.join(parsed)}")
            outside = [v for v in allowed if not parsed[parent].contains(v)]
            if outside:
                raise SpaceError(f"{at}: `{param.name}` has a condition {parent} = {outside[0]!r}, which "
                                 f"`{parent}` can never take")
    return tuple(parsed[name] for name in _dependency_order(parsed, where, params))


def _parse_param(name: str, spec: Any, at: str) -> Param:
    kind = _param_kind(name, spec, at)
    when = _parse_when(name, spec.get("when"), at)
    log, step = spec.get("log", False), _number(spec.get("step"))
    if not isinstance(log, bool):
        raise SpaceError(f"{at}: `{name}`: log is {log!r}, but must be true or false")
    if kind in ("value", "choice") and ("log" in spec or "step" in spec):
        raise SpaceError(f"{at}: `{name}`: log and step apply to float and int ranges only")
    if kind == "value":
        return Param(name, kind, value=_check_field(name, spec["value"], at, "value of"), when=when)
    if kind == "choice":
        return Param(name, kind, choices=_parse_choices(name, spec["choice"], at), when=when)
    low, high = _parse_bounds(name, kind, spec[kind], at)
    _check_log_and_step(name, kind, low, high, log=log, step=step, at=at)
    for bound in (low, high):
        _check_field(name, int(bound) if kind == "int" else float(bound), at, "bound of")
    return Param(name, kind, low=low, high=high, log=log, step=step, when=when)


def _param_kind(name: str, spec: Any, at: str) -> str:
    """The one kind (float, int, choice, value) a parameter's mapping names."""
    if name not in field_names():
        raise SpaceError(f"{at}: parameter {name!r} is not a TrialConfig field; valid fields are: "
                         f"{', '.join(field_names())}")
    if not isinstance(spec, dict):
        raise SpaceError(f"{at}: `{name}` must be a mapping like {{float: [low, high]}}, "
                         f"{{int: [low, high]}}, {{choice: [a, b]}} or {{value: x}}")
    kinds = [k for k in KINDS if k in spec]
    unknown = sorted(set(spec) - set(KINDS) - OPTIONS)
    if unknown:
        raise SpaceError(f"{at}: `{name}` has unknown key {unknown[0]!r}; valid keys are: "
                         f"{', '.join(KINDS + tuple(sorted(OPTIONS)))}")
    if len(kinds) != 1:
        raise SpaceError(f"{at}: `{name}` needs exactly one of {', '.join(KINDS)} (found "
                         f"{', '.join(kinds) or 'none'})")
    return kinds[0]


def _parse_choices(name: str, choices: Any, at: str) -> tuple:
    if not isinstance(choices, list) or not choices:
        raise SpaceError(f"{at}: `{name}`: choice must be a non-empty list of values")
    if len(set(map(repr, choices))) != len(choices):
        raise SpaceError(f"{at}: `{name}`: choice lists a value twice")
    for value in choices:
        if not isinstance(value, (str, int, float, bool)):
            raise SpaceError(f"{at}: `{name}`: choice {value!r} must be a string or a number")
    return tuple(_check_field(name, v, at, "choice of") for v in choices)


def _parse_bounds(name: str, kind: str, bounds: Any, at: str) -> tuple[float, float]:
    """[low, high] of a float or int range, checked against the field's type."""
    if not isinstance(bounds, list) or len(bounds) != 2:
        raise SpaceError(f"{at}: `{name}`: {kind} needs [low, high], got {bounds!r}")
    low, high = (_number(b) for b in bounds)
    for bound in (low, high):
        if isinstance(bound, bool) or not isinstance(bound, (int, float)) or not math.isfinite(bound):
            raise SpaceError(f"{at}: `{name}`: bound {bound!r} is not a finite number")
    if kind == "int" and not all(float(b).is_integer() for b in (low, high)):
        raise SpaceError(f"{at}: `{name}`: int bounds must be whole numbers, got [{low}, {high}]")
    if field_type(name) is int and kind == "float":
        raise SpaceError(f"{at}: `{name}` is an integer field; use int: [{low}, {high}]")
    if field_type(name) is str:
        raise SpaceError(f"{at}: `{name}` takes names, not numbers; use choice: [...]")
    if low > high:
        raise SpaceError(f"{at}: `{name}`: low {low} is greater than high {high}")
    return low, high


def _check_log_and_step(name: str, kind: str, low: float, high: float, *, log: bool, step: Any, at: str) -> None:
    if log and low <= 0:
        raise SpaceError(f"{at}: `{name}`: a log range needs low > 0, got {low}")
    if log and step is not None:
        raise SpaceError(f"{at}: `{name}`: Optuna cannot combine log with step; drop one")
    if step is not None and (isinstance(step, bool) or not isinstance(step, (int, float)) or step <= 0
                             or not math.isfinite(step)):
        raise SpaceError(f"{at}: `{name}`: step must be a positive number, got {step!r}")
    if step is not None and kind == "int" and not float(step).is_integer():
        raise SpaceError(f"{at}: `{name}`: an int range needs a whole step, got {step!r}")
    if step is not None and (_decimal(high) - _decimal(low)) % _decimal(step) != 0:
        # Optuna would silently lower `high` to the last point of the grid.
        top = _decimal(low) + (_decimal(high) - _decimal(low)) // _decimal(step) * _decimal(step)
        raise SpaceError(f"{at}: `{name}`: step {step} does not divide the range [{low}, {high}], so {high} "
                         f"is never drawn; make high {top} or pick a step that divides high - low")


def _parse_when(name: str, when: Any, at: str) -> dict[str, tuple]:
    if when is None:
        return {}
    if not isinstance(when, dict) or not when:
        raise SpaceError(f"{at}: `{name}`: when must map parent parameters to allowed values, "
                         "e.g. when: {loss: focal}")
    for parent, allowed in when.items():
        if allowed == [] or allowed is None:
            raise SpaceError(f"{at}: `{name}`: when {{{parent}: {allowed!r}}} lists no value, so `{name}` "
                             f"would never be active; list the values of {parent} it applies to")
        if not isinstance(allowed, (list, str, int, float, bool)):
            raise SpaceError(f"{at}: `{name}`: when {parent}: {allowed!r} must be a value or a list of values")
    return {parent: tuple(_number(v) for v in (allowed if isinstance(allowed, list) else [allowed]))
            for parent, allowed in when.items()}


def _dependency_order(parsed: dict[str, Param], where: _Where, params: dict) -> list[str]:
    """Parents before children, otherwise file order; a cycle is an error."""
    order: list[str] = []
    state: dict[str, str] = {}

    def visit(name: str, chain: list[str]) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            cycle = " -> ".join(chain[chain.index(name):] + [name])
            raise SpaceError(f"{where(name, params)}: conditions form a cycle: {cycle}")
        state[name] = "visiting"
        for parent in parsed[name].when:
            visit(parent, chain + [name])
        state[name] = "done"
        order.append(name)

    for name in parsed:
        visit(name, [])
    return order


def _parse_warm_start(warm: dict, where: _Where, space: SearchSpace) -> dict[str, dict[str, Any]]:
    if not isinstance(warm, dict):
        raise SpaceError(f"{where('warm_start')}: `warm_start` must map point names to parameter values")
    by_name = {p.name: p for p in space.params}
    out: dict[str, dict[str, Any]] = {}
    for point_name, point in warm.items():
        at = where(point_name, warm)
        if not isinstance(point, dict) or not point:
            raise SpaceError(f"{at}: warm-start point {point_name!r} must map parameters to values")
        values = {k: v if k in by_name and by_name[k].kind == "choice" else _number(v)
                  for k, v in point.items()}
        for key, value in values.items():
            if key not in by_name or not by_name[key].searched:
                raise SpaceError(f"{at}: warm-start point {point_name!r} sets {key!r}, which is not a "
                                 f"searched parameter; it may set: {', '.join(space.searched)}")
            if not by_name[key].contains(value):
                raise SpaceError(f"{at}: warm-start point {point_name!r} sets {key} = {value!r}, outside "
                                 f"its domain ({_describe(by_name[key])})")
        # Walk the space as sampling would: a parameter the point sets must be active there, which
        # is only decidable when the point also sets its parents.
        known: dict[str, Any] = {}
        for param in space.params:
            decidable = all(parent in known for parent in param.when)
            if param.name in values:
                if not decidable:
                    missing = [p for p in param.when if p not in known]
                    raise SpaceError(f"{at}: warm-start point {point_name!r} sets {param.name!r} but not "
                                     f"its parent(s) {', '.join(missing)}; set them too")
                if not space.is_active(param, known):
                    raise SpaceError(f"{at}: warm-start point {point_name!r} sets {param.name!r}, but its "
                                     f"condition {_describe_when(param)} does not hold in that point")
                known[param.name] = values[param.name]
            elif not param.searched and decidable and space.is_active(param, known):
                known[param.name] = param.value
        out[str(point_name)] = {k: coerce_value(k, v) for k, v in values.items()}
    return out


def _describe(param: Param) -> str:
    if param.kind == "choice":
        return "one of " + ", ".join(map(str, param.choices))
    if param.kind == "value":
        return f"= {param.value!r}"
    return (f"{param.kind} in [{param.low}, {param.high}]" + (" log" if param.log else "")
            + (f" step {param.step}" if param.step is not None else ""))


def _describe_when(param: Param) -> str:
    return " and ".join(f"{k} in {list(v)}" for k, v in param.when.items())
