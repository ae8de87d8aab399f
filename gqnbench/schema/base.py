"""The envelope every results file shares, the registry of kinds, and validation naming file and field.

A kind's model subclasses :class:`ResultsDoc` and registers with :func:`register_kind`;
:func:`validate_doc` turns a JSON object into the typed document or raises
:class:`SchemaError` naming the file and each bad field (``field runs.3.value: ...``).

Floats: the writer stores infinities as ``"inf"``/``"-inf"`` and NaN as ``null``
(:func:`gqnbench.results._jsonable`); pydantic reads the strings back as floats, and a field
that may hold NaN is typed ``float | None`` so the reader must decide what a missing number means.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class ResultsError(ValueError):
    """A results file is missing, unreadable or of an unexpected kind/schema."""


class SchemaError(ResultsError):
    """A document that does not match its kind's schema; the message names file and field."""


class Part(BaseModel):
    """A closed nested object (a curve point, a run row): known fields typed, unknown ones dropped.

    Unknown fields are ignored rather than refused so that a file from a newer writer still
    validates; the raw dict stays available to whoever needs the extra fields.
    """

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


class OpenPart(BaseModel):
    """A nested object with open-ended keys (a costs section, overrides): extra fields kept."""

    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)

    def extras(self) -> dict[str, Any]:
        """The fields this model does not name, as written."""
        return dict(self.model_extra or {})


class ResultsDoc(BaseModel):
    """The envelope every results file has; a kind's model adds its fields."""

    # Unknown top-level fields are kept (a newer writer may add them) but a known field of the
    # wrong type or a missing required one is an error.
    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)

    schema_id: str | None = Field(default=None, alias="schema")
    kind: str
    created: str | None = None
    environment: dict[str, Any] = {}


_KINDS: dict[str, type[ResultsDoc]] = {}
_M = TypeVar("_M", bound=type[ResultsDoc])


def register_kind(kind: str) -> Callable[[_M], _M]:
    """Class decorator: ``@register_kind("sweep") class SweepDoc(ResultsDoc): ...``."""

    def wrap(cls: _M) -> _M:
        if kind in _KINDS and _KINDS[kind] is not cls:
            raise ValueError(f"results kind {kind!r} is already registered by {_KINDS[kind].__name__}")
        _KINDS[kind] = cls
        return cls

    return wrap


def known_kinds() -> tuple[str, ...]:
    """Every registered kind (the package's own and any a plugin or the nightly gate added)."""
    return tuple(sorted(_KINDS))


def schema_for(kind: str) -> type[ResultsDoc] | None:
    """The registered model of ``kind``, or None for a kind without a typed schema."""
    return _KINDS.get(kind)


def _where(error: dict[str, Any]) -> str:
    return ".".join(str(part) for part in error["loc"]) or "(document)"


def validate_doc(kind: str, doc: dict[str, Any], path: str | os.PathLike | None = None) -> ResultsDoc:
    """Check ``doc`` against ``kind``'s model; the error lists each bad field with the file."""
    cls = _KINDS.get(kind, ResultsDoc)
    try:
        return cls.model_validate(doc)
    except ValidationError as exc:
        where = f"{os.fspath(path)}: " if path is not None else ""
        fields = "; ".join(f"field {_where(e)}: {e['msg']}" for e in exc.errors()[:5])
        more = f" (+{exc.error_count() - 5} more)" if exc.error_count() > 5 else ""
        raise SchemaError(f"{where}not a valid {kind!r} results file: {fields}{more}") from None
