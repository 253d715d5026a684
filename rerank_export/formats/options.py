"""The one table parser: exporter options, recipe sections and parity thresholds are frozen dataclasses,
each field declaring its Rule, parsed from a TOML/JSON table or from CLI flags alike, so a typo
(`calib_sample = 64`) is an error naming the key, never a silent default.

Each field may carry a Rule in its metadata ("check"); without one its annotation decides (int, bool,
float, str, str | None, tuple[str, ...]). Every error goes through `must_be` / `table_error`, so each
names where the table came from, the key and the bad value the same way.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import MISSING, Field, dataclass, field, fields
from typing import Any

from ..contract import MAX_LENGTH_LIMIT
from ..errors import UsageError

Rule = tuple[Callable[[Any], bool], str]  # (accepts the value?, what it must be)


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A finite int or float (a JSON integer past float range is not: it would become inf)."""
    if is_int(value):
        return abs(value) <= 2**1023
    return isinstance(value, float) and math.isfinite(value)


TEXT: Rule = (lambda v: isinstance(v, str) and v.strip() != "", "a non-empty string")
BOOL: Rule = (lambda v: isinstance(v, bool), "true or false")
POSITIVE: Rule = (lambda v: is_int(v) and v >= 1, "a positive integer")
NON_NEGATIVE: Rule = (lambda v: is_int(v) and v >= 0, "a non-negative integer")
TEXTS: Rule = (lambda v: isinstance(v, (list, tuple)) and bool(v) and all(TEXT[0](e) for e in v),
               "a non-empty list of strings")
FRACTION: Rule = (lambda v: is_number(v) and 0 < v <= 1, "a number in (0, 1]")
LENGTH: Rule = (lambda v: is_int(v) and 1 <= v <= MAX_LENGTH_LIMIT, f"an integer from 1 to {MAX_LENGTH_LIMIT}")
TABLE: Rule = (lambda v: isinstance(v, dict), "a table")
# onnxruntime's MatMulNBits and GatherBlockQuantized assert this deep inside the quantizer, i.e. after the
# whole AWQ search: checked when the options are read instead.
BLOCK: Rule = (lambda v: is_int(v) and v >= 16 and v & (v - 1) == 0, "a power of two from 16 (16, 32, 64, 128...)")


def optional(rule: Rule) -> Rule:
    """None allowed too (TOML has no null, but options also come from Python)."""
    return (lambda v: v is None or rule[0](v), rule[1])


def one_of(*values: Any) -> Rule:
    return (lambda v: not isinstance(v, bool) and v in values, "one of " + ", ".join(map(str, values)))


def between(low: float, high: float) -> Rule:
    """A finite number in [low, high]: NaN would pass every check (NaN < x is False)."""
    return (lambda v: is_number(v) and low <= v <= high, f"a finite number from {low:g} to {high:g}")


def array_of_tables(key: str) -> Rule:
    return (lambda v: isinstance(v, (list, tuple)), f"an array of tables ([[{key}]])")


BY_ANNOTATION: dict[str, Rule] = {"int": POSITIVE, "bool": BOOL, "float": (is_number, "a finite number"),
                                  "str": TEXT, "str | None": optional(TEXT), "tuple[str, ...]": TEXTS}


def option(default: Any = MISSING, rule: Rule | None = None, help: str = "") -> Any:
    """A dataclass field with its Rule (and a line of help) in the metadata; no default = required."""
    return field(default=default, metadata=rules(rule, help))


def rules(rule: Rule | None, help: str = "") -> dict[str, Any]:
    """The metadata `option` puts on a field, for a `field(default_factory=..., metadata=rules(...))`."""
    return {"check": rule, "help": help}


# The metadata of a field the program sets, never a key of the table (a recipe's own path).
INTERNAL = {"internal": True}


@dataclass(frozen=True)
class NoOptions:
    """Formats whose exporter takes no options."""


def must_be(where: str, key: str, what: str, value: Any) -> UsageError:
    """The one wording of a bad value: `where: 'key' must be <what>, not <value>`."""
    return table_error(where, f"'{key}' must be {what}, not {show(value)}")


def table_error(where: str, message: str) -> UsageError:
    return UsageError(f"{where}: {message}")


def parse_options(cls: type, values: Any, where: str, kind: str = "option", base: Any = None) -> Any:
    """`cls` from a {key: value} table; an unknown key, a wrong value or a missing required key is a
    UsageError naming `where`, the key and the value. `kind` names a key in errors (option, key, threshold).

    An instance of `cls` passes through unchanged. With `base` (an instance), the table overrides its values.
    """
    if isinstance(values, cls):
        return values
    checked = check_table(cls, values, where, kind, required=base is None)
    return dataclasses.replace(base, **checked) if base is not None else cls(**checked)


def check_table(cls: type, values: Any, where: str, kind: str = "option", required: bool = True) -> dict[str, Any]:
    """The table's values checked against `cls`'s fields and converted (lists to tuples, ints to floats)."""
    if not isinstance(values, dict):
        raise table_error(where, f"expected a table, not {show(values)}")
    known = {f.name: f for f in fields(cls) if not f.metadata.get("internal")}
    for key, value in values.items():
        if key not in known:
            raise table_error(where, f"unknown {kind} '{key}' (known: {', '.join(sorted(known)) or 'none'})")
        accepts, what = rule_of(known[key])
        if not accepts(value):
            raise must_be(where, key, what, value)
    missing = [n for n, f in known.items() if n not in values and f.default is MISSING
               and f.default_factory is MISSING] if required else []
    if missing:
        raise table_error(where, f"'{missing[0]}' is missing")
    return {k: _convert(known[k], v) for k, v in values.items()}


def rule_of(f: Field) -> Rule:
    rule = f.metadata.get("check") or BY_ANNOTATION.get(str(f.type))
    if rule is None:  # a field type the parser cannot check is a bug in the dataclass, not the user's
        raise TypeError(f"field '{f.name}' ({f.type}) needs a Rule in its metadata")
    return rule


def _convert(f: Field, value: Any) -> Any:
    if isinstance(value, list):
        return tuple(value)  # the dataclasses are frozen
    if is_int(value) and str(f.type).startswith("float"):
        return float(value)
    return value


def as_table(options: Any) -> dict[str, Any]:
    """The options as plain JSON values (for manifests and recipe stamps)."""
    return {f.name: list(v) if isinstance(v := getattr(options, f.name), tuple) else v for f in fields(options)}


def show(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
