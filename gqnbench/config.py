"""Dataclass config helpers: apply ``section.field=value`` overrides with type coercion.

Overrides come from the command line (``--set model.z_channels=32``) or from Python
(``{"model.z_channels": 32}``); both go through :func:`apply_overrides`, so a typo in a
field name is an error that lists the valid fields instead of a silent no-op.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Iterable, Mapping
from typing import Any


class ConfigError(ValueError):
    """An override names an unknown field or carries a value of the wrong type."""


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
    """Return a copy of dataclass ``obj`` with ``overrides`` (plain field names) applied."""
    fields = {f.name: f for f in dataclasses.fields(obj)}
    hints = typing.get_type_hints(type(obj))
    changes = {}
    for key, value in overrides.items():
        if key not in fields:
            valid = ", ".join(sorted(fields))
            raise ConfigError(f"unknown field {where}{key!r}; valid fields: {valid}")
        changes[key] = _coerce(value, hints.get(key, Any), f"{where}{key}")
    return dataclasses.replace(obj, **changes)


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
