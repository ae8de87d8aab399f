"""Results files: one schema for every measurement, atomic writes, environment capture.

Every results file is a JSON object with at least::

    {"schema": "gqnbench.<kind>/<version>", "kind": "<kind>", "created": ISO-8601,
     "environment": {...}, ...kind-specific fields...}

Kinds (each writer documents its own fields next to the code that writes it):

- ``training_run``   one training run: config, curve points, divergence, final NLL
                     (gqnbench.training).
- ``time_to_target`` per model x seed: reached?, steps, wall seconds (gqnbench.training).
- ``sweep``          per model x setting: final NLL, learned?, curve file (gqnbench.training).
- ``costs``          parameters, FLOPs, memory, throughput, numerics, scaling (gqnbench.harness).
- ``samples``        prediction grids for the report (gqnbench.training.samples).
- ``profile``        per model x precision x formulation: time, FLOPs and share of peak of each
                     phase of a training step, profiler overhead, top operators, the trace
                     file it came from (gqnbench.harness.profile).

pytest-benchmark's own JSON is read as it is. The report reads only these files, so it
never needs to import a model. Writes go to a temporary file in the same folder and are
renamed into place, so an interrupted run never leaves a half-written results file.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from gqnbench.schema import ResultsError

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


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary file + rename (never a half-written file)."""
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
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def write_result(
    path: str | os.PathLike, kind: str, payload: dict[str, Any], environment: dict[str, Any] | None = None
) -> Path:
    """Write a results file of ``kind`` atomically, stamping schema, time and environment."""
    doc = {
        "schema": schema_id(kind),
        "kind": kind,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "environment": environment if environment is not None else capture_environment(),
    }
    doc.update(payload)
    return atomic_write_text(path, json.dumps(_jsonable(doc), indent=2, sort_keys=False) + "\n")


def read_result(path: str | os.PathLike, kind: str | None = None) -> dict[str, Any]:
    """Load a results file, checking it is JSON of the expected kind and a known schema."""
    path = Path(path)
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
    return doc


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
