"""Recipes: what to build from which model, how to gate it, and which deployment targets to report.

A recipe is a TOML file validated into frozen dataclasses; unknown keys are an error naming the key.

    name = "qwen3-reranker-0.6b"
    [source]
    model = "Qwen/Qwen3-Reranker-0.6B"
    revision = "main"                 # optional
    tiny_seed = 0                     # demo only: build the embedded tiny model into `model` if missing
    [[artifacts]]
    format = "awq-int4"               # a FORMATS name
    options = { calib_samples = 64 }  # exporter options (optional)
    [parity]
    eval = ["builtin"]                # eval sets: builtin, JSONL files, NovelEval folders
    max_queries = 20                  # optional: first N queries of each set
    [parity.thresholds.onnx-int8]     # optional per-format overrides
    max_abs_dp = 0.05
    [[targets]]
    name = "gpu-4gb"
    device = "cuda"                   # cuda | cpu
    memory = "4GiB"
    max_length = 8192                 # optional
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

import tomllib

from .contract import DEFAULT_MAX_LENGTH
from .errors import RecipeError, UsageError
from .formats import FORMATS, parse_format_options
from .formats.options import LENGTH, POSITIVE, TEXT, TEXTS, Rule, is_int, optional


@dataclass(frozen=True)
class SourceSpec:
    model: str
    revision: str | None = None
    # Set only in the offline demo recipe: build the embedded tiny model into `model` when it is missing.
    tiny_seed: int | None = None


@dataclass(frozen=True)
class ArtifactSpec:
    format: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ParitySpec:
    eval: tuple[str, ...] = ("builtin",)
    max_queries: int | None = None
    thresholds: dict[str, dict[str, float]] = field(default_factory=dict)


@dataclass(frozen=True)
class TargetSpec:
    name: str
    device: str
    memory: str
    max_length: int = DEFAULT_MAX_LENGTH


@dataclass(frozen=True)
class Recipe:
    name: str
    source: SourceSpec
    artifacts: tuple[ArtifactSpec, ...]
    parity: ParitySpec = ParitySpec()
    targets: tuple[TargetSpec, ...] = ()
    path: str = ""

    def artifact_names(self) -> list[str]:
        return [a.format for a in self.artifacts]


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a recipe file; relative eval paths resolve against the recipe's folder."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe '{path}' not found (see recipes/ for examples)")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise RecipeError(f"recipe '{path}' is not valid TOML: {exc}") from exc
    return parse_recipe(data, str(path))


def parse_recipe(data: dict[str, Any], where: str = "recipe") -> Recipe:
    """Validate every key and value (types, ranges, known names) into a Recipe; errors name `where` and the key."""
    _known(data, Recipe, where, skip={"path"})
    _check_fields({k: v for k, v in data.items() if k == "name"}, {"name": TEXT}, where)
    source = _build(SourceSpec, _table(data, "source", where), f"{where}: [source]")
    artifacts = tuple(_artifact(a, f"{where}: artifacts[{i}]") for i, a in enumerate(_list(data, "artifacts", where)))
    if not artifacts:
        raise RecipeError(f"{where}: [[artifacts]] is empty; name at least one format of {', '.join(FORMATS)}")
    _unique([a.format for a in artifacts], "format", f"{where}: [[artifacts]]")
    parity = _parity(data.get("parity", {}), f"{where}: [parity]")
    targets = tuple(_target(t, f"{where}: targets[{i}]") for i, t in enumerate(_list(data, "targets", where)))
    _unique([t.name for t in targets], "name", f"{where}: [[targets]]")
    if "name" not in data:
        raise RecipeError(f"{where}: 'name' is missing")
    return Recipe(data["name"], source, artifacts, parity, targets, where)


TABLE: Rule = (lambda v: isinstance(v, dict), "a table")
SEED: Rule = (lambda v: is_int(v) and 0 <= v <= 2**32 - 1, "an integer from 0 to 4294967295")

FIELDS: dict[type, dict[str, Rule]] = {
    SourceSpec: {"model": TEXT, "revision": optional(TEXT), "tiny_seed": optional(SEED)},
    ArtifactSpec: {"format": TEXT, "options": TABLE},
    ParitySpec: {"eval": TEXTS, "max_queries": optional(POSITIVE), "thresholds": TABLE},
    TargetSpec: {"name": TEXT, "device": (lambda v: v in ("cuda", "cpu"), "'cuda' or 'cpu'"),
                 "memory": (lambda v: isinstance(v, str) or is_int(v), 'a size such as "4GiB"'),
                 "max_length": LENGTH},
}

def _known(data: Any, cls: type, where: str, skip: set[str] = frozenset()) -> None:
    if not isinstance(data, dict):
        raise RecipeError(f"{where}: expected a table, not {_show(data)}")
    allowed = {f.name for f in fields(cls)} - skip
    for key in data:
        if key not in allowed:
            raise RecipeError(f"{where}: unknown key '{key}' (known: {', '.join(sorted(allowed))})")


def _check_fields(data: dict[str, Any], rules: dict[str, Rule], where: str) -> None:
    for key, value in data.items():
        ok, what = rules[key]
        if not ok(value):
            raise RecipeError(f"{where}: '{key}' must be {what}, not {_show(value)}")


def _build(cls: type, data: Any, where: str) -> Any:
    _known(data, cls, where)
    _check_fields(data, FIELDS[cls], where)
    missing = [f.name for f in fields(cls) if f.name not in data
               and f.default is MISSING and f.default_factory is MISSING]
    if missing:
        raise RecipeError(f"{where}: '{missing[0]}' is missing")
    return cls(**data)


def _show(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _unique(values: list[str], key: str, where: str) -> None:
    seen = {v for v in values if values.count(v) > 1}
    if seen:
        raise RecipeError(f"{where}: {key} '{min(seen)}' appears more than once")


def _table(data: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    if key not in data:
        raise RecipeError(f"{where}: missing [{key}]")
    return data[key]


def _list(data: dict[str, Any], key: str, where: str) -> list[Any]:
    value = data.get(key, [])
    if not isinstance(value, list):
        raise RecipeError(f"{where}: '{key}' must be an array of tables ([[{key}]])")
    return value


def _artifact(data: Any, where: str) -> ArtifactSpec:
    spec = _build(ArtifactSpec, data, where)
    if spec.format not in FORMATS:
        raise RecipeError(f"{where}: format '{spec.format}' is unknown; known: {', '.join(FORMATS)}")
    try:  # checked now, before any export: a typo is an error, not a silent default
        parse_format_options(FORMATS[spec.format], spec.options, f"{where}: options for {spec.format}")
    except UsageError as exc:
        raise RecipeError(str(exc)) from None
    return spec


def _parity(data: Any, where: str) -> ParitySpec:
    spec = _build(ParitySpec, data, where)
    for fmt, limits in spec.thresholds.items():
        if fmt not in FORMATS:
            raise RecipeError(f"{where}: thresholds for unknown format '{fmt}'; known: {', '.join(FORMATS)}")
        try:  # checked now, before any export or scoring: a NaN limit would pass every check
            FORMATS[fmt].thresholds.override(limits, f"{where}: thresholds.{fmt}")
        except UsageError as exc:
            raise RecipeError(str(exc)) from None
    return ParitySpec(tuple(spec.eval), spec.max_queries, spec.thresholds)


def _target(data: Any, where: str) -> TargetSpec:
    spec = _build(TargetSpec, data, where)
    from .select import parse_memory

    try:
        parse_memory(str(spec.memory))
    except UsageError as exc:
        raise RecipeError(f"{where}: {exc}") from None
    return spec
