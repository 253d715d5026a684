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

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import tomllib

from .contract import DEFAULT_MAX_LENGTH
from .errors import RecipeError
from .formats import FORMATS


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
    _known(data, Recipe, where, skip={"path"})
    source = _build(SourceSpec, _table(data, "source", where), f"{where}: [source]")
    artifacts = tuple(_artifact(a, f"{where}: artifacts[{i}]") for i, a in enumerate(_list(data, "artifacts", where)))
    if not artifacts:
        raise RecipeError(f"{where}: [[artifacts]] is empty; name at least one format of {', '.join(FORMATS)}")
    parity = _parity(data.get("parity", {}), f"{where}: [parity]")
    targets = tuple(_target(t, f"{where}: targets[{i}]") for i, t in enumerate(_list(data, "targets", where)))
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise RecipeError(f"{where}: 'name' must be a non-empty string")
    return Recipe(name, source, artifacts, parity, targets, where)


def _known(data: Any, cls: type, where: str, skip: set[str] = frozenset()) -> None:
    if not isinstance(data, dict):
        raise RecipeError(f"{where}: expected a table")
    allowed = {f.name for f in fields(cls)} - skip
    for key in data:
        if key not in allowed:
            raise RecipeError(f"{where}: unknown key '{key}' (known: {', '.join(sorted(allowed))})")


def _build(cls: type, data: Any, where: str) -> Any:
    _known(data, cls, where)
    try:
        return cls(**data)
    except TypeError as exc:
        raise RecipeError(f"{where}: {exc}") from exc


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
    if not isinstance(spec.options, dict):
        raise RecipeError(f"{where}: 'options' must be a table")
    return spec


def _parity(data: Any, where: str) -> ParitySpec:
    spec = _build(ParitySpec, data, where)
    evals = spec.eval if isinstance(spec.eval, (list, tuple)) else None
    if not evals or not all(isinstance(e, str) for e in evals):
        raise RecipeError(f"{where}: 'eval' must be a non-empty list of eval set names or paths")
    for fmt, limits in spec.thresholds.items():
        if fmt not in FORMATS:
            raise RecipeError(f"{where}: thresholds for unknown format '{fmt}'")
        _known(limits, FORMATS[fmt].thresholds.__class__, f"{where}.thresholds.{fmt}")
    return ParitySpec(tuple(evals), spec.max_queries, spec.thresholds)


def _target(data: Any, where: str) -> TargetSpec:
    spec = _build(TargetSpec, data, where)
    if spec.device not in ("cuda", "cpu"):
        raise RecipeError(f"{where}: device '{spec.device}' must be 'cuda' or 'cpu'")
    from .select import parse_memory

    parse_memory(spec.memory)
    return spec
