"""The nightly gate's results files as typed documents: ``nightly_run``, ``nightly_baseline``, ``nightly_verdict``.

Each is a pydantic model registered with :func:`gqnbench.schema.register_kind`, written with
:func:`write_doc` (the model's own JSON dump inside the usual envelope) and read with
:func:`read_doc` (validation that names file and field).

Baselines: a pinned baseline stores the shared metrics (:class:`gqnbench.report.metrics.Metric`
under their shared keys). Baselines pinned before the shared engine stored raw benchmark stats
(``benchmarks``) and training results (``training``) instead; they are read as they are and
turned into the same metrics by :meth:`NightlyBaseline.pinned_metrics`, so the committed files
did not need converting.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

from pydantic import field_validator

from gqnbench.report.metrics import Metric, timing_metrics, training_setup
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
    bench_dir: str = "benchmarks"
    bench_args: tuple[str, ...] = ()
    models: tuple[str, ...] = ("gqn", "metagqn")
    train_preset: str = "tiny"
    train_steps: int = 30
    seed: int = 0
    train_args: tuple[str, ...] = ()
    skip: tuple[str, ...] = ()


class _Measured(ResultsDoc):
    """Where a run was measured: device type, baseline name, the quick matrix or the full one."""

    device: str | None = None
    device_name: str | None = None
    quick: bool | None = None


@register_kind("nightly_run")
class NightlyRun(_Measured):
    """``DIR/nightly.json``: device, plan and every step so far (rewritten after each step)."""

    kind: Literal["nightly_run"] = "nightly_run"
    plan: PlanRecord | None = None
    interrupted: bool = False
    steps: list[StepRecord] = []


class LegacyBench(Part):
    """A benchmark in a baseline pinned before the shared metrics: pytest-benchmark's stats."""

    group: str | None = None
    median_s: float
    iqr_s: float
    mean_s: float
    stddev_s: float
    rounds: int
    peak_memory_bytes: float | None = None


class LegacyTraining(Part):
    """A training run in a baseline pinned before the shared metrics."""

    model: str
    preset: str
    seed: int
    steps: int
    val_nll: float | None = None
    nll_constant: float | None = None
    run_file: str | None = None


@register_kind("nightly_baseline")
class NightlyBaseline(_Measured):
    """``ci/baselines/<device>.json``: one run's metrics, pinned on purpose."""

    kind: Literal["nightly_baseline"] = "nightly_baseline"
    source_run: str | None = None
    bench_files: list[str] = []
    metrics: dict[str, Metric] = {}
    benchmarks: dict[str, LegacyBench] | None = None  # old format, read only
    training: dict[str, LegacyTraining] | None = None  # old format, read only

    @field_validator("metrics", mode="before")
    @classmethod
    def _nan_back(cls, value: Any) -> Any:
        # The writer stores NaN as null; a pinned metric that was not measured reads back as NaN.
        if isinstance(value, dict):
            return {k: {**m, "value": math.nan} if isinstance(m, dict) and m.get("value") is None else m
                    for k, m in value.items()}  # fmt: skip
        return value

    def pinned_metrics(self) -> dict[str, Metric]:
        """The metrics to compare with, from either format."""
        if self.benchmarks is None and self.training is None:
            return dict(self.metrics)
        source = ", ".join(self.bench_files) or None
        found: list[Metric] = []
        for key, b in (self.benchmarks or {}).items():
            stats = {"median": b.median_s, "iqr": b.iqr_s, "mean": b.mean_s, "stddev": b.stddev_s, "rounds": b.rounds}
            found += timing_metrics("bench/" + key, stats, b.peak_memory_bytes, source, b.group)
        for t in (self.training or {}).values():
            value = math.nan if t.val_nll is None else t.val_nll
            setup = training_setup(t.steps, [t.seed])
            found.append(Metric(f"val_nll/{t.model}/{t.preset}", "nll", value, "nats", source=t.run_file,
                                nll_constant=t.nll_constant, setup=setup))  # fmt: skip
        out: dict[str, Metric] = {}
        for metric in found:
            out.setdefault(metric.key, metric)
        return out


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
