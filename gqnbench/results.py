"""Results files: one schema for every measurement, written atomically (:mod:`gqnbench.files`).

Every results file is a JSON object with at least::

    {"schema": "gqnbench.<kind>/<version>", "kind": "<kind>", "created": ISO-8601,
     "environment": {...}, ...kind-specific fields...}

Kinds (fields and which are optional: the typed model of each in :mod:`gqnbench.schema`):

- ``training_run``   one training run: config, curve points, divergence, final NLL
                     (gqnbench.training; schema.training.TrainingRunDoc).
- ``time_to_target`` per model x seed: reached?, steps, wall seconds (gqnbench.training;
                     schema.training.TimeToTargetDoc).
- ``sweep``          per model x setting: final NLL, learned?, curve file (gqnbench.training;
                     schema.training.SweepDoc).
- ``learning_study`` per model x study entry: final MSE ratios, learned?, ratio curve
                     (gqnbench.training.learning_study; schema.study.LearningStudyDoc).
- ``samples``        prediction grids for the report (gqnbench.training.samples;
                     schema.study.SamplesDoc).
- ``costs``          parameters, FLOPs, memory, throughput, numerics, scaling, perf targets; any
                     subset of the sections (gqnbench.harness, gqnbench.commands;
                     schema.costs.CostsDoc).
- ``profile``        per model x precision x formulation: time, FLOPs and share of peak of each
                     phase of a training step, profiler overhead, top operators, the trace
                     file it came from (gqnbench.harness.profile; schema.profile.ProfileDoc).
- ``main_job``       the state of ``gqnbench run``: its plan and each stage's status, wall time
                     and machine load (gqnbench.mainjob; schema.mainjob.MainJobDoc).
- ``nightly_baseline``, ``nightly_verdict``, ``nightly_run``: the nightly regression gate's
                     stored baseline, its verdict and its run manifest (registered by the
                     nightly gate's own module).

Every write and every read checks the document against its kind's model and raises
:class:`SchemaError` naming the file and the field (``runs.3.value``); nothing is written
when the check fails. A kind nobody registered is checked for the envelope only.

pytest-benchmark's own JSON is read as it is. The report reads only these files, so it
never needs to import a model. Writes go to a temporary file in the same folder and are
renamed into place, so an interrupted run never leaves a half-written results file.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
from pathlib import Path
from typing import Any

from gqnbench.environment import capture_environment
from gqnbench.files import atomic_write_text
from gqnbench.schema import ResultsDoc, ResultsError, validate_doc

SCHEMA_VERSION = 1

def schema_id(kind: str) -> str:
    return f"gqnbench.{kind}/{SCHEMA_VERSION}"


def _jsonable(obj: Any) -> Any:
    # Infinity/NaN are not JSON; "not reached" must stay distinguishable from a number.
    if isinstance(obj, float):
        if math.isnan(obj):
            return None
        if math.isinf(obj):
            return "inf" if obj > 0 else "-inf"
        return obj
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        return _jsonable(obj.item())
    return obj


def write_result(
    path: str | os.PathLike, kind: str, payload: dict[str, Any], environment: dict[str, Any] | None = None
) -> Path:
    """Write a results file of ``kind`` atomically, stamping schema, time and environment.

    The document is checked against ``kind``'s schema first: a writer bug raises
    :class:`SchemaError` naming the field, and the file on disk is left as it was.
    """
    doc = {
        "schema": schema_id(kind),
        "kind": kind,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "environment": environment if environment is not None else capture_environment(),
    }
    doc.update(payload)
    doc = _jsonable(doc)
    validate_doc(kind, doc, path)
    return atomic_write_text(path, json.dumps(doc, indent=2, sort_keys=False) + "\n")


def _read_checked(path: Path, kind: str | None) -> tuple[dict[str, Any], ResultsDoc]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ResultsError(f"{path}: results file not found") from exc
    except json.JSONDecodeError as exc:
        raise ResultsError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(doc, dict) or "kind" not in doc or "schema" not in doc:
        raise ResultsError(f"{path}: not a gqnbench results file (no 'kind'/'schema' fields)")
    if kind is not None and doc["kind"] != kind:
        raise ResultsError(f"{path}: expected a {kind!r} results file, found {doc['kind']!r}")
    version = str(doc["schema"]).rsplit("/", 1)[-1]
    if not version.isdigit() or int(version) > SCHEMA_VERSION:
        raise ResultsError(
            f"{path}: schema {doc['schema']!r} is newer than this gqnbench understands ({SCHEMA_VERSION})"
        )
    return doc, validate_doc(str(doc["kind"]), doc, path)


def read_result(path: str | os.PathLike, kind: str | None = None) -> dict[str, Any]:
    """Load a results file as its JSON dict, checked against its kind's schema (see :func:`load_result`)."""
    return _read_checked(Path(path), kind)[0]


def load_result(path: str | os.PathLike, kind: str | None = None) -> ResultsDoc:
    """Load a results file as its kind's typed model (e.g. ``SweepDoc``), checked as :func:`read_result` does."""
    return _read_checked(Path(path), kind)[1]


def load_result_with_dict(path: str | os.PathLike, kind: str | None = None) -> tuple[dict[str, Any], ResultsDoc]:
    """Both views of one file in one read: the JSON dict as written and the typed model."""
    return _read_checked(Path(path), kind)


def as_float(value: Any) -> float:
    """Read back a number written by :func:`write_result` ("inf" strings included)."""
    if value is None:
        return math.nan
    if isinstance(value, str):
        return float(value)
    return float(value)


