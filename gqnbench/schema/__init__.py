"""Typed schemas of results files: one pydantic model per ``kind``, checked on write and on read.

Every results file (see :mod:`gqnbench.results`) shares the envelope :class:`ResultsDoc`
(``schema``, ``kind``, ``created``, ``environment``); each kind subclasses it in the module of
its area and registers with :func:`register_kind`:

- :mod:`gqnbench.schema.training`  ``training_run``, ``time_to_target``, ``sweep``
- :mod:`gqnbench.schema.study`     ``learning_study``, ``samples``
- :mod:`gqnbench.schema.costs`     ``costs``
- :mod:`gqnbench.schema.profile`   ``profile``
- :mod:`gqnbench.schema.mainjob`   ``main_job``

Other packages register their own kinds the same way (the nightly gate's ``nightly_*``).
:func:`validate_doc` turns a JSON object into the typed document, or raises
:class:`SchemaError` naming the file and the field that is wrong.

This package imports only pydantic, so every package (harness, training, report, the nightly
gate) may use it.
"""

from __future__ import annotations

from gqnbench.schema.base import (
    OpenPart,
    Part,
    ResultsDoc,
    ResultsError,
    SchemaError,
    known_kinds,
    register_kind,
    schema_for,
    validate_doc,
)

# Imported for their registrations; PACKAGE_KINDS is what they registered (before any other package adds its own).
from gqnbench.schema import costs, mainjob, profile, study, training  # noqa: E402,F401  (isort: skip)

PACKAGE_KINDS: tuple[str, ...] = known_kinds()

__all__ = [
    "PACKAGE_KINDS",
    "OpenPart",
    "Part",
    "ResultsDoc",
    "ResultsError",
    "SchemaError",
    "known_kinds",
    "register_kind",
    "schema_for",
    "validate_doc",
]
