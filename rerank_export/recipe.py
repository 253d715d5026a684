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

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from .contract import DEFAULT_MAX_LENGTH
from .errors import RecipeError, UsageError
from .formats import FORMATS, get_format, parse_format_options
from .formats.options import (
    INTERNAL,
    LENGTH,
    POSITIVE,
    TABLE,
    TEXT,
    TEXTS,
    Rule,
    array_of_tables,
    check_table,
    is_int,
    option,
    optional,
    parse_options,
    rules,
    table_error,
)
from .formats.spec import FormatSpec, Thresholds

SEED: Rule = (lambda v: is_int(v) and 0 <= v <= 2**32 - 1, "an integer from 0 to 4294967295")
DEVICE: Rule = (lambda v: v in ("cuda", "cpu"), "'cuda' or 'cpu'")
MEMORY: Rule = (lambda v: isinstance(v, str) or is_int(v), 'a size such as "4GiB"')


@dataclass(frozen=True)
class SourceSpec:
    model: str = option(rule=TEXT)
    revision: str | None = option(None, optional(TEXT))
    # Set only in the offline demo recipe: build the embedded tiny model into `model` when it is missing.
    tiny_seed: int | None = option(None, optional(SEED))


@dataclass(frozen=True)
class ArtifactSpec:
    format: str = option(rule=TEXT)
    # As written in the recipe: the recipe stamp compares it, so a rebuild follows an edit of the recipe.
    options: dict[str, Any] = field(default_factory=dict, metadata=rules(TABLE))
    # The format's options dataclass, parsed from `options` when the recipe is read (None: not parsed yet).
    parsed: Any = field(default=None, metadata=INTERNAL)


@dataclass(frozen=True)
class ParitySpec:
    eval: tuple[str, ...] = option(("builtin",), TEXTS)
    max_queries: int | None = option(None, optional(POSITIVE))
    # {format: its FORMATS limits with the recipe's overrides in place}; formats not named keep FORMATS'.
    thresholds: dict[str, Thresholds] = field(default_factory=dict, metadata=rules(TABLE))


@dataclass(frozen=True)
class TargetSpec:
    name: str = option(rule=TEXT)
    device: str = option(rule=DEVICE)
    memory: str = option(rule=MEMORY)
    max_length: int = option(DEFAULT_MAX_LENGTH, LENGTH)


@dataclass(frozen=True)
class Recipe:
    name: str = option(rule=TEXT)
    source: SourceSpec = field(metadata=rules(TABLE))
    artifacts: tuple[ArtifactSpec, ...] = option(rule=array_of_tables("artifacts"))
    parity: ParitySpec = field(default_factory=ParitySpec, metadata=rules(TABLE))
    targets: tuple[TargetSpec, ...] = option((), array_of_tables("targets"))
    path: str = field(default="", metadata=INTERNAL)

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
    """Validate every key and value (types, ranges, known names) into a Recipe; errors name `where` and the key.

    Every section goes through the one table parser (formats/options.py); its UsageErrors become RecipeErrors.
    """
    try:
        return _recipe(data, where)
    except UsageError as exc:
        raise RecipeError(str(exc)) from None


def _recipe(data: Any, where: str) -> Recipe:
    top = check_table(Recipe, data, where, kind="key")
    source = parse_options(SourceSpec, top["source"], f"{where}: [source]", kind="key")
    artifacts = tuple(_artifact(a, f"{where}: artifacts[{i}]") for i, a in enumerate(top["artifacts"]))
    if not artifacts:
        raise table_error(where, f"[[artifacts]] is empty; name at least one format of {', '.join(FORMATS)}")
    _unique([a.format for a in artifacts], "format", f"{where}: [[artifacts]]")
    parity = _parity(top.get("parity", {}), f"{where}: [parity]")
    targets = tuple(_target(t, f"{where}: targets[{i}]") for i, t in enumerate(top.get("targets", ())))
    _unique([t.name for t in targets], "name", f"{where}: [[targets]]")
    return Recipe(top["name"], source, artifacts, parity, targets, where)


def _unique(values: list[str], key: str, where: str) -> None:
    seen = {v for v in values if values.count(v) > 1}
    if seen:
        raise table_error(where, f"{key} '{min(seen)}' appears more than once")


def _artifact(data: Any, where: str) -> ArtifactSpec:
    """The entry with its options parsed now, before any export: a typo is an error, not a silent default."""
    spec = parse_options(ArtifactSpec, data, where, kind="key")
    fmt = _format(spec.format, where)
    parsed = parse_format_options(fmt, spec.options, f"{where}: options for {spec.format}")
    return ArtifactSpec(spec.format, spec.options, parsed)


def _parity(data: Any, where: str) -> ParitySpec:
    """Each format's thresholds parsed now, before any export or scoring: a NaN limit would pass every check."""
    spec = parse_options(ParitySpec, data, where, kind="key")
    limits = {}
    for fmt, values in spec.thresholds.items():
        at = f"{where}: thresholds.{fmt}"
        limits[fmt] = _format(fmt, at).thresholds.override(values, at)
    return ParitySpec(spec.eval, spec.max_queries, limits)


def _format(name: str, where: str) -> FormatSpec:
    try:
        return get_format(name)
    except UsageError as exc:  # the registry's own message (it lists the known names), placed in the recipe
        raise table_error(where, str(exc)) from None


def _target(data: Any, where: str) -> TargetSpec:
    spec = parse_options(TargetSpec, data, where, kind="key")
    from .select import parse_memory

    try:
        parse_memory(str(spec.memory))
    except UsageError as exc:
        raise table_error(where, str(exc)) from None
    return spec
