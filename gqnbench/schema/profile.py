"""Schema of the ``profile`` kind: where the time of a training step goes, per phase.

One case per model x precision x formulation. Closed except ``timing`` rows, ``memory`` (the
CUDA memory timeline's breakdown, open-ended) and ``overrides`` (any config field).
"""

from __future__ import annotations

from typing import Any

from gqnbench.schema.base import Part, ResultsDoc, register_kind
from gqnbench.schema.costs import MatmulPeak


class Phase(Part):
    """One labelled phase of the step: its median time, share, label ranges and FLOP rate."""

    phase: str
    label: str | None = None
    time_s: float
    mean_time_s: float | None = None
    share: float | None
    busy_s: float | None = None  # CUDA: the phase's kernel time alone (time_s adds the idle time before them)
    calls_per_step: float
    flop: float | None
    flop_per_s: float | None
    share_of_peak: float | None


class Timing(Part):
    """Step-time statistics of one way of running the step (plain, labelled, profiled)."""

    median_s: float
    q1_s: float | None = None
    q3_s: float | None = None
    min_s: float | None = None
    max_s: float | None = None
    rel_iqr: float | None = None
    times_s: list[float] | None = None


class Timings(Part):
    plain: Timing
    labelled: Timing
    profiled: Timing


class Overhead(Part):
    profiled_over_plain: float
    labelled_over_plain: float


class Operator(Part):
    """One operator's self time per step and its share of the step."""

    name: str
    self_s: float
    calls_per_step: float
    share: float | None


class ProfileCase(Part):
    """One profiled configuration."""

    label: str
    model: str
    preset: str
    mode: str
    batch: int
    dtype: str
    device: str
    fold_linear_ops: bool
    formulation: str
    overrides: dict[str, Any]
    warmup: int
    steps: int
    trace_file: str
    phase_time: str
    phases: list[Phase]
    phase_sum_s: float
    coverage: float | None = None  # phase_sum_s / profiled_step_s
    min_coverage: float | None = None  # the share the phases must cover for the attribution to be trusted
    profiled_step_s: float
    profiled_step_times_s: list[float]
    unlabelled_s: float
    step_flop: float | None
    peak_flop_per_s: float | None
    peak_name: str | None = None  # the matmul peak it is a share of: fp32, tf32, bf16, fp16
    fast_path: dict[str, Any] | None = None  # the step's fast path (gqnbench.step.FastPath record)
    timing: Timings
    overhead: Overhead
    top_operators: list[Operator]
    memory: dict[str, Any] | None


@register_kind("profile")
class ProfileDoc(ResultsDoc):
    """Every profiled case of one ``gqnbench profile`` run, with the matmul peak they are judged by."""

    preset: str
    device: str
    matmul_peak: MatmulPeak | None
    cases: list[ProfileCase]
