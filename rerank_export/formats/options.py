"""Exporter options: one frozen dataclass per format, parsed from a recipe's `options` table and from CLI
flags alike, so a typo (`calib_sample = 64`) is an error naming the key, never a silent default.

Each field may carry a Rule in its metadata ("check"); without one its annotation decides (int, bool,
float, str, str | None, tuple[str, ...]).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import Field, dataclass, field, fields
from typing import Any

from ..errors import UsageError
from ..contract import MAX_LENGTH_LIMIT

Rule = tuple[Callable[[Any], bool], str]  # (accepts the value?, what it must be)


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return (is_int(value) or isinstance(value, float)) and math.isfinite(value)


TEXT: Rule = (lambda v: isinstance(v, str) and v.strip() != "", "a non-empty string")
BOOL: Rule = (lambda v: isinstance(v, bool), "true or false")
POSITIVE: Rule = (lambda v: is_int(v) and v >= 1, "a positive integer")
NON_NEGATIVE: Rule = (lambda v: is_int(v) and v >= 0, "a non-negative integer")
TEXTS: Rule = (lambda v: isinstance(v, (list, tuple)) and bool(v) and all(TEXT[0](e) for e in v),
               "a non-empty list of strings")
FRACTION: Rule = (lambda v: is_number(v) and 0 < v <= 1, "a number in (0, 1]")
LENGTH: Rule = (lambda v: is_int(v) and 1 <= v <= MAX_LENGTH_LIMIT, f"an integer from 1 to {MAX_LENGTH_LIMIT}")


def optional(rule: Rule) -> Rule:
    """None allowed too (TOML has no null, but options also come from Python)."""
    return (lambda v: v is None or rule[0](v), rule[1])


def one_of(*values: Any) -> Rule:
    return (lambda v: not isinstance(v, bool) and v in values, "one of " + ", ".join(map(str, values)))


BY_ANNOTATION: dict[str, Rule] = {"int": POSITIVE, "bool": BOOL, "float": (is_number, "a finite number"),
                                  "str": TEXT, "str | None": optional(TEXT), "tuple[str, ...]": TEXTS}


def option(default: Any, rule: Rule | None = None, help: str = "") -> Any:
    """A dataclass field with its Rule (and a line of help) in the metadata."""
    return field(default=default, metadata={"check": rule, "help": help})


@dataclass(frozen=True)
class NoOptions:
    """Formats whose exporter takes no options."""


def parse_options(cls: type, values: Any, where: str) -> Any:
    """`cls` from a {key: value} table; an unknown key or a wrong value is a UsageError naming `where`.

    An instance of `cls` passes through unchanged. Lists become tuples (the dataclasses are frozen).
    """
    if isinstance(values, cls):
        return values
    if not isinstance(values, dict):
        raise UsageError(f"{where}: expected a table of options, not {_show(values)}")
    known = {f.name: f for f in fields(cls)}
    for key, value in values.items():
        if key not in known:
            raise UsageError(f"{where}: unknown option '{key}' (known: {', '.join(sorted(known)) or 'none'})")
        accepts, what = _rule(known[key])
        if not accepts(value):
            raise UsageError(f"{where}: '{key}' must be {what}, not {_show(value)}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def _rule(f: Field) -> Rule:
    rule = f.metadata.get("check") or BY_ANNOTATION.get(str(f.type))
    if rule is None:  # a field type the parser cannot check is a bug in the options class, not the user's
        raise TypeError(f"option '{f.name}' ({f.type}) needs a Rule in its metadata")
    return rule


def as_table(options: Any) -> dict[str, Any]:
    """The options as plain JSON values (for manifests and recipe stamps)."""
    return {f.name: list(v) if isinstance(v := getattr(options, f.name), tuple) else v for f in fields(options)}


def _show(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
