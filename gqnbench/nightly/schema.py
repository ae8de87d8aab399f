"""The nightly gate's results files as typed documents: ``nightly_run``, ``nightly_baseline``, ``nightly_verdict``.

Each is a pydantic model registered with :func:`gqnbench.schema.register_kind`, written with
:func:`write_doc` (the model's own JSON dump inside the usual envelope) and read with
:func:`read_doc` (validation that names file and field).

Baselines: a pinned baseline stores the shared metrics (:class:`gqnbench.report.metrics.Metric`
under their shared keys), the host they were measured on (:class:`HostRecord`) and the plan
of the run (which presets, which training), so the gate knows what it can compare.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

from pydantic import field_validator

from gqnbench.report.metrics import Metric
from gqnbench.results import read_result, write_result
from gqnbench.schema import Part, ResultsDoc, register_kind, validate_doc

ENVELOPE = {"schema_id", "kind", "created", "environment"}
D = TypeVar("D", bound=ResultsDoc)


class StepRecord(Part):
    """One step of a nightly run: its command, exit code (None: not run) and log."""

    name: str
    command: list[str] = []
    rc: int | None = None
    wall_s: float = 0.0
    log: str = ""
    gates: bool = True  # a failed report is shown but does not fail the gate
    note: str = ""


class PlanRecord(Part):
    """What a nightly run was asked to do (the recorded part of its plan)."""

    bench_presets: tuple[str, ...] = ()
    preset_args: dict[str, tuple[str, ...]] = {}  # extra pytest arguments of one preset's benchmark run
    bench_dir: str = "benchmarks"
    bench_args: tuple[str, ...] = ()
    models: tuple[str, ...] = ("gqn", "metagqn")
    train_preset: str = "tiny"
    train_steps: int = 30
    seed: int = 0
    train_args: tuple[str, ...] = ()
    skip: tuple[str, ...] = ()


class HostRecord(Part):
    """The machine a run was measured on (:func:`gqnbench.nightly.device.host_info`); None: not known."""

    cpu_model: str | None = None
    cpu_signature: str | None = None  # "family F model M stepping S" (Linux)
    physical_cores: int | None = None
    logical_cpus: int | None = None
    usable_cpus: int | None = None  # the CPUs this process may run on
    isa: list[str] | None = None  # the instruction-set features of ISA_FLAGS it has
    memory_bytes: int | None = None
    gpu_name: str | None = None
    gpu_memory_bytes: int | None = None
    gpu_driver: str | None = None
    gpu_max_sm_clock_mhz: int | None = None
    gpu_max_memory_clock_mhz: int | None = None
    gpu_app_sm_clock_mhz: int | None = None
    gpu_power_limit_w: float | None = None


class _Measured(ResultsDoc):
    """Where a run was measured: device type, baseline name, the quick matrix or the full one, the host."""

    device: str | None = None
    device_name: str | None = None
    quick: bool | None = None
    host: HostRecord | None = None


@register_kind("nightly_run")
class NightlyRun(_Measured):
    """``DIR/nightly.json``: device, plan and every step so far (rewritten after each step)."""

    kind: Literal["nightly_run"] = "nightly_run"
    plan: PlanRecord | None = None
    interrupted: bool = False
    steps: list[StepRecord] = []


@register_kind("nightly_baseline")
class NightlyBaseline(_Measured):
    """``ci/baselines/<device>.json``: one run's metrics, pinned on purpose."""

    kind: Literal["nightly_baseline"] = "nightly_baseline"
    source_run: str | None = None
    plan: PlanRecord | None = None
    bench_files: list[str] = []
    metrics: dict[str, Metric] = {}

    @field_validator("metrics", mode="before")
    @classmethod
    def _nan_back(cls, value: Any) -> Any:
        # The writer stores NaN as null; a pinned metric that was not measured reads back as NaN.
        if isinstance(value, dict):
            return {k: {**m, "value": math.nan} if isinstance(m, dict) and m.get("value") is None else m
                    for k, m in value.items()}  # fmt: skip
        return value


class VerdictRow(Part):
    """One gated comparison: the shared row's numbers and the gate's status, limit and note."""

    metric: str  # time | memory | nll | step (the shared category, or a run step)
    key: str
    status: str
    baseline: float | None = None
    current: float | None = None
    delta: float | None = None  # percent for time/memory, nats for nll
    limit: str = ""
    note: str = ""
    gates: bool = False
    unit: str = ""  # s | bytes | nats


@register_kind("nightly_verdict")
class NightlyVerdict(ResultsDoc):
    """``DIR/verdict.json``: passed, exit code and every row (or why there was nothing to compare)."""

    kind: Literal["nightly_verdict"] = "nightly_verdict"

    passed: bool
    exit_code: int
    current: str
    baseline: str | None = None
    device_name: str | None = None
    thresholds: str | None = None
    host: str | None = None  # how this run's host compares with the baseline's, and what is judged then
    counts: dict[str, int] = {}
    regressions: list[VerdictRow] = []
    rows: list[VerdictRow] = []
    warnings: list[str] = []
    expected_baseline: str | None = None  # set when no baseline was found
    message: str | None = None


def write_doc(
    path: str | os.PathLike, doc: ResultsDoc, environment: dict[str, Any] | None = None, exclude: set[str] = frozenset()
) -> Path:
    """Write ``doc`` as a results file of its kind (the writer stamps schema, time and environment)."""
    payload = doc.model_dump(mode="json", by_alias=True, exclude=ENVELOPE | exclude)
    return write_result(path, doc.kind, payload, environment=environment or {})


def read_doc(path: str | os.PathLike, cls: type[D]) -> D:
    """Read and validate a results file of ``cls``'s kind (errors name the file and the field)."""
    kind = cls.model_fields["kind"].default
    return cast(D, validate_doc(kind, read_result(path, kind), path))
