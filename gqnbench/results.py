"""Results files: one schema for every measurement, atomic writes, environment capture.

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
import errno
import json
import math
import os
import platform
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from gqnbench.schema import ResultsDoc, ResultsError, SchemaError, validate_doc

__all__ = [
    "ResultsError",
    "SchemaError",
    "as_float",
    "atomic_write_bytes",
    "atomic_write_text",
    "capture_environment",
    "git_commit",
    "load_result",
    "load_result_with_dict",
    "read_result",
    "schema_id",
    "write_result",
]

SCHEMA_VERSION = 1
# A write that failed for want of room (a full disk, a quota, a file-size limit): a failure, not bad input.
OUT_OF_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


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


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary file + rename (never a half-written file).

    A write that fails (a full disk) leaves ``path`` as it was and raises the OSError naming ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; results are meant to be shared
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename is None:
            exc.filename = str(path)  # a failed write() names no file; the user needs to know which
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


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


def _git(cwd: str | os.PathLike | None, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", *args],
        cwd=cwd or Path(__file__).resolve().parent,
        capture_output=True,
        text=True,
        timeout=5,
        check=False,
    )


def git_commit(cwd: str | os.PathLike | None = None) -> str | None:
    try:
        out = _git(cwd, "rev-parse", "--short=12", "HEAD")
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    commit = out.stdout.strip()
    dirty = _git(cwd, "status", "--porcelain", "--untracked-files=no").stdout.strip()
    return commit + ("-dirty" if dirty else "")


def capture_environment(device: str | None = None, dtype: str | None = None) -> dict[str, Any]:
    """Versions, device, threads and commit: the conditions every number is measured under."""
    import torch

    from gqnbench import __version__

    env: dict[str, Any] = {
        "gqnbench": __version__,
        "commit": git_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda_available": torch.cuda.is_available(),
        "device": device,
        "dtype": dtype,
    }
    if torch.cuda.is_available():
        env["cuda_version"] = torch.version.cuda
        env["gpu_name"] = torch.cuda.get_device_name(0)
        env["gpu_count"] = torch.cuda.device_count()
    try:
        import numpy

        env["numpy"] = numpy.__version__
    except ImportError:  # pragma: no cover - numpy is a dependency
        pass
    return env
