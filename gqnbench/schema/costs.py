"""Schema of the ``costs`` kind: parameters, FLOPs, memory, throughput, numerics, scaling, targets.

A costs file is written section by section (``gqnbench costs``, ``perf-targets``, a subcommand's
``--out``), so every section is optional and only ``preset`` is always there. Sections are
open-ended (``extra="allow"``): per-operator and per-module breakdowns, timing lists and the
perf-targets checks carry keys that depend on the model, the device and the measurement; the
fields the report reads are typed, the rest are kept as written.
"""

from __future__ import annotations

from typing import Any

from gqnbench.schema.base import OpenPart, ResultsDoc, register_kind


class ParamCount(OpenPart):
    """One model's parameter count two ways (all, and those the objective uses)."""

    total: int
    used_by_objective: int | None = None
    unused: int | None = None
    per_module: dict[str, Any] | None = None
    config: dict[str, Any] | None = None
    authors_layout: bool | None = None


class FlopCount(OpenPart):
    """One model's FLOPs per scene (forward, training step, inference), by operator and module."""

    forward_per_scene: float | None = None
    train_per_scene: float | None = None
    infer_per_scene: float | None = None
    authors_forward_per_scene: float | None = None
    authors_train_per_scene: float | None = None
    fvcore_forward_macs_per_scene: float | None = None
    by_operator: dict[str, Any] | None = None
    per_module: dict[str, Any] | None = None


class ThroughputRow(OpenPart):
    """One timed configuration (model x mode x dtype x batch x compile)."""

    model: str
    mode: str
    dtype: str
    batch: int
    median_s: float | None
    iqr_s: float | None = None
    images_per_s: float | None = None
    flop_per_s: float | None = None
    mfu: float | None = None
    peak_memory_bytes: int | None = None
    compiled: bool | None = None
    preset: str | None = None
    device: str | None = None
    fold_linear_ops: bool | None = None
    compile_s: float | None = None
    graph_breaks: int | None = None


class ScalingPoint(OpenPart):
    """Step time and peak memory of one model at one value of a scaled axis (batch, image size...)."""

    model: str
    axis: str
    value: int | float
    step_s: float | None
    peak_memory_bytes: int | None = None


class MatmulPeak(OpenPart):
    """The measured dense-matmul rate per dtype that MFU and share of peak are relative to."""

    fp32_flop_per_s: float | None = None
    bf16_flop_per_s: float | None = None
    device: str | None = None
    n: int | None = None

    def rates(self) -> dict[str, float]:
        """``{"fp32": FLOP/s, "bf16": ..., other dtypes measured}``, the measured ones only."""
        named = {"fp32": self.fp32_flop_per_s, "bf16": self.bf16_flop_per_s}
        named |= {k.removesuffix("_flop_per_s"): v for k, v in self.extras().items() if k.endswith("_flop_per_s")}
        return {dtype: float(v) for dtype, v in named.items() if v is not None}


class Reference(OpenPart):
    """Parameters and FLOPs at the study's own sizes (the paper configuration)."""

    preset: str | None = None
    params: dict[str, ParamCount] | None = None
    flops: dict[str, FlopCount] | None = None


@register_kind("costs")
class CostsDoc(ResultsDoc):
    """What a model costs; each section optional (a file may hold any subset of them)."""

    preset: str
    device: str | None = None
    quick: bool | None = None
    models: list[str] | None = None
    overrides: dict[str, Any] | None = None
    timings_s: dict[str, float] | None = None
    params: dict[str, ParamCount] | None = None
    flops: dict[str, FlopCount] | None = None
    reference: Reference | None = None
    matmul_peak: MatmulPeak | None = None
    throughput: list[ThroughputRow] | None = None
    # model -> mode ("train"/"infer") -> the memory harness's row
    memory: dict[str, dict[str, dict[str, Any]]] | None = None
    # a list of check rows; files written before the rows were flattened hold model -> dtype -> row
    numerics: list[dict[str, Any]] | dict[str, Any] | None = None
    scaling: list[ScalingPoint] | None = None
    perf_targets: dict[str, Any] | None = None
