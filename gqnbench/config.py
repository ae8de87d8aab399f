"""Dataclass config helpers: apply ``section.field=value`` overrides with type coercion and range checks.

Overrides come from the command line (``--set model.z_channels=32``) or from Python
(``{"model.z_channels": 32}``); both go through :func:`replace_fields`, so a typo in a
field name is an error that lists the valid fields instead of a silent no-op.

Every numeric field of a config dataclass declares its allowed values once, with
:func:`ranged` (``eval_every: int = ranged(1000, lo=1)``); the dataclass checks them in
``__post_init__`` (:func:`check_ranges`), and an override out of range is refused naming
the field, the value as given and the range: ``train.eval_every=0: must be >= 1``.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


class ConfigError(ValueError):
    """An override names an unknown field or carries a value of the wrong type or out of range."""


def _num(x: float) -> str:
    return f"{x:g}"


@dataclass(frozen=True)
class Range:
    """The values a numeric config field allows: bounds (open or closed), finiteness, a step.

    ``None`` always passes (an optional field that is off); a value of another type is left to
    the type check.
    """

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    finite: bool = True
    multiple_of: int | None = None

    def __str__(self) -> str:
        if self.lo is not None and self.lo == self.hi:
            return f"must be {_num(self.lo)}"
        parts = []
        if self.lo is not None:
            parts.append(f"{'>' if self.lo_open else '>='} {_num(self.lo)}")
        if self.hi is not None:
            parts.append(f"{'<' if self.hi_open else '<='} {_num(self.hi)}")
        if self.multiple_of:
            parts.append(f"a multiple of {self.multiple_of}")
        return "must be " + (" and ".join(parts) if parts else "a finite number")

    def allows(self, value: Any) -> bool:
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            return True
        if math.isnan(value) or (self.finite and math.isinf(value)):
            return False
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            return False
        if self.hi is not None and (value >= self.hi if self.hi_open else value > self.hi):
            return False
        return not (self.multiple_of and value % self.multiple_of)


def ranged(default: Any, lo: float | None = None, hi: float | None = None, **rule: Any) -> Any:
    """A dataclass field with ``default`` whose values must lie in :class:`Range` ``(lo, hi, **rule)``."""
    return dataclasses.field(default=default, metadata={"range": Range(lo, hi, **rule)})


def range_problem(cls: type, name: str, value: Any) -> str | None:
    """What is wrong with ``value`` for field ``name`` of dataclass ``cls`` (``"must be >= 1"``), or None."""
    rule = next((f.metadata.get("range") for f in dataclasses.fields(cls) if f.name == name), None)
    return None if rule is None or rule.allows(value) else str(rule)


def check_ranges(obj: Any) -> None:
    """Raise :class:`ConfigError` for the first field of dataclass ``obj`` outside its declared range."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if (problem := range_problem(type(obj), f.name, value)) is not None:
            raise ConfigError(f"{f.name}={value!r}: {problem}")


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    if not isinstance(value, str):
        return value
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Union or (origin is not None and type(None) in args):
        if value.lower() in ("none", "null"):
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], where) if inner else value
    try:
        if annotation in (bool, "bool"):
            low = value.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if annotation in (int, "int"):
            return int(float(value)) if "e" in value.lower() else int(value)
        if annotation in (float, "float"):
            return float(value)
    except ValueError as exc:
        raise ConfigError(f"{where}: cannot read {value!r} as {annotation}") from exc
    return value


def replace_fields(obj: Any, overrides: Mapping[str, Any], where: str = "") -> Any:
    """Return a copy of dataclass ``obj`` with ``overrides`` (plain field names) applied and checked.

    ``where`` (``"train."``) prefixes the field names in errors, which quote the value as given.
    """
    fields = {f.name: f for f in dataclasses.fields(obj)}
    hints = typing.get_type_hints(type(obj))
    changes = {}
    for key, value in overrides.items():
        if key not in fields:
            valid = ", ".join(sorted(fields))
            raise ConfigError(f"unknown field {where}{key!r}; valid fields: {valid}")
        changes[key] = _coerce(value, hints.get(key, Any), f"{where}{key}")
        if (problem := range_problem(type(obj), key, changes[key])) is not None:
            raise ConfigError(f"{where}{key}={value}: {problem}")
    try:
        return dataclasses.replace(obj, **changes)
    except ValueError as exc:  # a rule across fields (__post_init__): name the section too
        raise ConfigError(f"{where}{exc}") from None


def parse_override_strings(items: Iterable[str]) -> dict[str, str]:
    """Turn ``["model.z_channels=32", ...]`` into ``{"model.z_channels": "32", ...}``."""
    out: dict[str, str] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.field=value")
        key, value = item.split("=", 1)
        out[key.strip()] = value.strip()
    return out


def to_dict(obj: Any) -> dict[str, Any]:
    """A JSON-ready dict of a (nested) dataclass."""
    return dataclasses.asdict(obj)
