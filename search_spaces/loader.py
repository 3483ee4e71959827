"""Search spaces as data: YAML files whose keys are a head's constructor parameter names.

```yaml
units: {choices: [64, 128, 256]}                            # CategoricalDistribution
feature_norm: {choices: [none, train, per_video], grid: [none]}   # searched; the grid uses none only
n_layers: {low: 1, high: 3}                                 # IntDistribution (both bounds ints; step, log optional)
learning_rate: {low: 1.0e-4, high: 1.0e-2, log: true, grid: [1.0e-3]}   # FloatDistribution
max_epochs: 50                                              # a bare scalar: fixed, not searched
dilations: {fixed: [1, 2, 4]}                               # a fixed value of any shape
```
Fixed values are kept out of the Optuna distributions, so they never appear in `trial.params`;
`SearchSpace.suggest` and `SearchSpace.with_fixed` merge them back in. `grid:` lists the values a
grid search uses: required for a low/high range; for choices it is optional (default: all the
choices) and must pick among them, so a parameter can be searched by the other samplers while the
grid keeps it at one value. A file whose
top-level values are all such mappings keyed by head name (like `demo.yaml`) holds several heads.
"""

from __future__ import annotations

import math
import re
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from ..core.errors import ConfigError

SPACES_DIR = Path(__file__).resolve().parent
# A fused backbone's pairs also search the balance of its parts (a head's `fusion_balance`: log10 of
# the first part's weight over the others'), unless the file sets it: from 1 % to 100x, the grid at
# the block-scaled join (0). Which part carries a behaviour differs by behaviour; CV chooses. At the
# ends (heads.base.SOLO_BALANCE) the head sees one side only: the fused search's warm start.
FUSION_BALANCE = "fusion_balance"
FUSION_BALANCE_RANGE, FUSION_BALANCE_GRID = (-2.0, 2.0), [0.0]
DEMO = "demo"

_RANGE_KEYS = {"low", "high", "log", "step", "grid"}
_CHOICE_KEYS = {"choices", "grid"}
_FIXED_KEYS = {"fixed"}
_SPEC_KEYS = _RANGE_KEYS | _CHOICE_KEYS | _FIXED_KEYS
_SCALAR = (str, int, float, bool, type(None))


class _SpaceLoader(yaml.SafeLoader):
    """SafeLoader that reads `1e-3` as a number and refuses duplicate keys.

    YAML 1.1 (PyYAML) reads `1e-3` as the string "1e-3", and silently keeps the last of two equal
    keys; both are easy mistakes in a search space and would otherwise surface far from the file.
    """

    def construct_mapping(self, node, deep=False):  # noqa: D102 (PyYAML hook)
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, Hashable):
                continue  # PyYAML's own check reports it
            line = key_node.start_mark.line + 1
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key '{key}' appears twice (lines {seen[key]} and {line})", key_node.start_mark
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


_SpaceLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class SearchSpace:
    """One head's hyperparameter search space: Optuna distributions, fixed values and grid values.

    `source` (the file it came from) is left out of equality, so a space rebuilt from `to_dict()`
    equals the loaded one.
    """

    head: str
    source: Path = field(compare=False)
    distributions: dict[str, BaseDistribution]
    fixed: dict[str, Any]
    grid_values: dict[str, list]

    @classmethod
    def from_dict(
        cls,
        head: str,
        raw: Any,
        source: str | Path = "<dict>",
        allowed: Iterable[str] | None = None,
    ) -> SearchSpace:
        """Build a space from the YAML form (a mapping of parameter name -> spec).

        Raises ConfigError, naming `source`, for any spec that cannot work.
        """
        source = Path(source)
        if not isinstance(raw, Mapping):
            raise ConfigError(
                f"{source}: search space for '{head}' must be a mapping of parameter name -> spec, "
                f"got {type(raw).__name__}; see the format in search_spaces/loader.py"
            )
        if not raw:
            raise ConfigError(f"{source}: search space for '{head}' defines no parameters; add at least one")
        if allowed is not None:
            allowed = sorted(set(allowed))
            for name in raw:
                if name not in allowed:
                    raise ConfigError(
                        f"{source}: '{name}' is not a parameter of head '{head}'; "
                        f"use only: {', '.join(allowed)}"
                    )
        distributions: dict[str, BaseDistribution] = {}
        fixed: dict[str, Any] = {}
        grid_values: dict[str, list] = {}
        for name, spec in raw.items():
            if not isinstance(name, str):
                raise ConfigError(
                    f"{source}: parameter name {name!r} is not text; use the constructor's parameter names"
                )
            kind, value, grid = _parse_spec(source, name, spec)
            if kind == "fixed":
                fixed[name] = value
                continue
            distributions[name] = value
            if grid is not None:
                grid_values[name] = grid
        return cls(head=head, source=source, distributions=distributions, fixed=fixed, grid_values=grid_values)

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """Sample every distribution through `trial.suggest_*`; returns them merged with the fixed values."""
        params: dict[str, Any] = {}
        for name, dist in self.distributions.items():
            if isinstance(dist, CategoricalDistribution):
                params[name] = trial.suggest_categorical(name, dist.choices)
            elif isinstance(dist, IntDistribution):
                params[name] = trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
            else:
                params[name] = trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)
        return self.with_fixed(params)

    def for_fused(self) -> SearchSpace:
        """This space plus `fusion_balance` (FUSION_BALANCE_RANGE, grid FUSION_BALANCE_GRID), for a fused
        backbone's pairs; unchanged when the file already sets it."""
        if FUSION_BALANCE in self.distributions or FUSION_BALANCE in self.fixed:
            return self
        return SearchSpace(self.head, self.source, {**self.distributions, FUSION_BALANCE: FloatDistribution(
            *FUSION_BALANCE_RANGE)}, dict(self.fixed), {**self.grid_values, FUSION_BALANCE: list(FUSION_BALANCE_GRID)})

    def with_fixed(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The head's full constructor params from a trial's `params` (which never hold fixed values)."""
        return {**self.fixed, **params}

    def extremes(self) -> list[dict[str, Any]]:
        """Full parameter sets that between them reach every choice and both ends of every range (the
        other parameters at their first value): checking these finds a bad value before any trial runs."""
        ends = {name: list(dist.choices) if isinstance(dist, CategoricalDistribution) else [dist.low, dist.high]
                for name, dist in self.distributions.items()}
        base = {name: values[0] for name, values in ends.items()}
        sets = [self.with_fixed(base)]
        for name, values in ends.items():
            sets += [self.with_fixed({**base, name: value}) for value in values[1:]]
        return sets

    def grid(self) -> dict[str, list]:
        """The full grid for `optuna.samplers.GridSampler`.

        Raises ConfigError when a low/high parameter has no `grid:` values.
        """
        missing = [name for name in self.distributions if name not in self.grid_values]
        if missing:
            raise ConfigError(
                f"{self.source}: no grid values for {', '.join(repr(name) for name in missing)} of head "
                f"'{self.head}'; add grid: [...] to each (e.g. learning_rate: {{low: 1.0e-4, high: 1.0e-2, "
                f"log: true, grid: [1.0e-3]}}) or use a sampler other than grid"
            )
        return {name: list(self.grid_values[name]) for name in self.distributions}

    def grid_size(self) -> int:
        """Number of parameter sets in `grid()` (1 when every parameter is fixed)."""
        return math.prod(len(values) for values in self.grid().values())

    def to_dict(self) -> dict[str, Any]:
        """The YAML form: `SearchSpace.from_dict(head, space.to_dict()) == space`."""
        out: dict[str, Any] = {}
        for name, dist in self.distributions.items():
            if isinstance(dist, CategoricalDistribution):
                out[name] = {"choices": list(dist.choices)}
                if self.grid_values.get(name, list(dist.choices)) != list(dist.choices):
                    out[name]["grid"] = list(self.grid_values[name])
                continue
            number = int if isinstance(dist, IntDistribution) else float
            spec: dict[str, Any] = {"low": number(dist.low), "high": number(dist.high)}
            if dist.log:
                spec["log"] = True
            if dist.step is not None and not (isinstance(dist, IntDistribution) and dist.step == 1):
                spec["step"] = number(dist.step)
            if name in self.grid_values:
                spec["grid"] = list(self.grid_values[name])
            out[name] = spec
        for name, value in self.fixed.items():
            out[name] = value if isinstance(value, _SCALAR) else {"fixed": value}
        return out


def _parse_spec(source: Path, name: str, spec: Any) -> tuple[str, Any, list | None]:
    """One parameter's spec -> ("fixed", value, None) or ("dist", distribution, grid values or None)."""

    def fail(problem: str, fix: str) -> ConfigError:
        return ConfigError(f"{source}: parameter '{name}' {problem}; {fix}")

    if isinstance(spec, _SCALAR):
        return "fixed", spec, None
    if isinstance(spec, list):
        raise fail(
            f"is a bare list {spec!r}",
            "write {choices: [...]} to search over the values or {fixed: [...]} to pass the list as is",
        )
    if not isinstance(spec, Mapping):
        raise fail(
            f"has a spec of type {type(spec).__name__}", "use a scalar, {choices: [...]} or {low: .., high: ..}"
        )
    keys = set(spec)
    if keys & _FIXED_KEYS:
        if keys != _FIXED_KEYS:
            raise fail(
                f"mixes fixed with {sorted(keys - _FIXED_KEYS)}", "give either {fixed: value} or a range/choices"
            )
        return "fixed", spec["fixed"], None
    if "choices" in keys:
        if not keys <= _CHOICE_KEYS:
            raise fail(
                f"mixes choices with {sorted(keys - _CHOICE_KEYS)}",
                "choices take only grid: [...] besides (a subset of the choices; default all of them)",
            )
        return "dist", *_categorical(spec["choices"], spec.get("grid"), fail)
    if "low" in keys and "high" in keys:
        unknown = keys - _RANGE_KEYS
        if unknown:
            raise fail(f"has unknown key(s) {sorted(unknown)}", f"a range takes only {sorted(_RANGE_KEYS)}")
        return "dist", *_range(spec, fail)
    raise fail(
        f"has spec {dict(spec)!r}, which is neither choices nor a low/high range",
        "write {choices: [...]}, {low: .., high: .., log: .., step: .., grid: [...]}, a scalar or {fixed: value}",
    )


def _categorical(choices: Any, grid: Any, fail) -> tuple[CategoricalDistribution, list]:
    if not isinstance(choices, list) or not choices:
        raise fail(f"has choices {choices!r}", "give a non-empty list, e.g. choices: [64, 128]")
    for choice in choices:
        if not isinstance(choice, _SCALAR):
            raise fail(f"has choice {choice!r}", "Optuna choices must be numbers, text, booleans or null")
    if len({(type(c), c) for c in choices}) != len(choices):
        raise fail(f"lists a choice twice in {choices!r}", "list each choice once")
    if grid is None:
        return CategoricalDistribution(choices), list(choices)
    if not isinstance(grid, list) or not grid:
        raise fail(f"has grid {grid!r}", "give a non-empty list of some of the choices, or leave grid out")
    known = {(type(c), c) for c in choices}
    for value in grid:
        if not isinstance(value, _SCALAR) or (type(value), value) not in known:
            raise fail(f"has grid value {value!r}, which is not among the choices {choices!r}",
                       "use values from choices")
    if len({(type(v), v) for v in grid}) != len(grid):
        raise fail(f"lists a grid value twice in {grid!r}", "list each value once")
    return CategoricalDistribution(choices), list(grid)


def _range(spec: Mapping[str, Any], fail) -> tuple[BaseDistribution, list | None]:
    low, high = spec["low"], spec["high"]
    log, step, grid = spec.get("log", False), spec.get("step"), spec.get("grid")
    for key, value in (("low", low), ("high", high)):
        if not _is_number(value):
            raise fail(f"has {key} {value!r}", f"give a number for {key}")
    if not isinstance(log, bool):
        raise fail(f"has log {log!r}", "use log: true or log: false")
    if low >= high:
        raise fail(f"has low {low} >= high {high}", "make low smaller than high (use a scalar to fix a value)")
    if log and low <= 0:
        raise fail(f"has log: true with low {low}", "a log range needs low > 0")
    is_int = isinstance(low, int) and isinstance(high, int) and (step is None or isinstance(step, int))
    if step is not None:
        if not _is_number(step) or step <= 0:
            raise fail(f"has step {step!r}", "give a positive number or leave step out")
        if log:
            raise fail("has both log and step", "use one of them (Optuna cannot combine them)")
        spans = (high - low) / step
        if not math.isclose(spans, round(spans), abs_tol=1e-9):
            raise fail(
                f"has range [{low}, {high}] that is not a whole number of steps of {step}", "adjust high or step"
            )
    try:
        if is_int:
            dist: BaseDistribution = IntDistribution(low, high, log=log, step=step or 1)
        else:
            dist = FloatDistribution(float(low), float(high), log=log, step=None if step is None else float(step))
    except ValueError as error:  # any rule of Optuna's not checked above
        raise fail(f"is rejected by Optuna ({error})", "fix the range") from None
    if grid is None:
        return dist, None
    if not isinstance(grid, list) or not grid:
        raise fail(f"has grid {grid!r}", "give a non-empty list of values inside [low, high]")
    values = []
    for value in grid:
        if not _is_number(value) or (is_int and not isinstance(value, int)):
            kind = "integers" if is_int else "numbers"
            raise fail(f"has grid value {value!r}", f"give {kind} inside [{low}, {high}]")
        if not low <= value <= high:
            raise fail(
                f"has grid value {value} outside [{low}, {high}]", "move it inside the range or widen the range"
            )
        if step is not None and not math.isclose((value - low) / step, round((value - low) / step), abs_tol=1e-9):
            raise fail(f"has grid value {value} off the step {step} from {low}", "use a value on the step")
        values.append(value if is_int else float(value))
    if len(set(values)) != len(values):
        raise fail(f"lists a grid value twice in {grid!r}", "list each value once")
    return dist, values


def default_space_path(head: str) -> Path:
    """The packaged `search_spaces/<head>.yaml` (`default_space_path("demo")` is the multi-head demo file)."""
    return SPACES_DIR / f"{head}.yaml"


def packaged_heads() -> list[str]:
    """Heads with a packaged single-head space file."""
    return sorted(path.stem for path in SPACES_DIR.glob("*.yaml") if path.stem != DEMO)


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(
            f"{path}: cannot read search space ({error.strerror}); check the path and its permissions"
        ) from None
    try:
        return yaml.load(text, Loader=_SpaceLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or "syntax error"
        raise ConfigError(f"{path}: not valid YAML{at} ({problem}); fix the syntax") from None


def _is_multi_head(raw: Mapping[str, Any]) -> bool:
    # Every value is a mapping of specs (scalars or mappings) and none is itself a spec: the keys are
    # head names, not parameters.
    return all(
        isinstance(section, Mapping)
        and not (set(section) & _SPEC_KEYS)
        and all(isinstance(spec, (Mapping, *_SCALAR)) for spec in section.values())
        for section in raw.values()
    )


def load_search_space(
    head: str,
    path: str | Path | None = None,
    allowed: Iterable[str] | None = None,
) -> SearchSpace:
    """Load `head`'s search space.

    Args:
        head: the head's registered name.
        path: a YAML file (single-head, or multi-head with head names as top-level keys), a folder
            holding `<head>.yaml`, or None for the packaged `search_spaces/<head>.yaml`.
        allowed: the head's constructor parameter names; any other key is a ConfigError.
    """
    if path is None:
        file = default_space_path(head)
        if not file.is_file():
            raise ConfigError(
                f"{file}: no packaged search space for head '{head}' (packaged: {', '.join(packaged_heads())}); "
                f"write one (see search_spaces/lstm.yaml) and pass its path"
            )
    else:
        file = Path(path).expanduser()
        if file.is_dir():
            file = file / f"{head}.yaml"
        if not file.is_file():
            raise ConfigError(f"{file}: search space file not found; fix the path or use the packaged default")
    raw = _read_yaml(file)
    if not isinstance(raw, Mapping) or not raw:
        raise ConfigError(
            f"{file}: a search space must be a YAML mapping of parameter name -> spec, got "
            f"{'an empty file' if raw is None else type(raw).__name__}; see search_spaces/lstm.yaml"
        )
    if _is_multi_head(raw):
        if head not in raw:
            raise ConfigError(
                f"{file}: no search space for head '{head}'; the file has: {', '.join(map(str, raw))}; "
                f"add a '{head}:' section or pass another file"
            )
        raw = raw[head]
    return SearchSpace.from_dict(head, raw, source=file, allowed=allowed)
