"""Schemas of the ``learning_study`` and ``samples`` kinds (what the report shows of learning).

Both closed; ``overrides`` of a study entry hold any config field.
"""

from __future__ import annotations

from typing import Any

from gqnbench.schema.base import Part, ResultsDoc, register_kind


class RatioPoint(Part):
    """One evaluation as MSE and foreground MSE relative to the mean training frame."""

    step: int
    mse_ratio: float | None
    fg_ratio: float | None


class StudyFinal(Part):
    """The last evaluation's ratios (z sampled and z at the mean) and its NLL."""

    mse_ratio: float | None
    fg_ratio: float | None
    mse_ratio_zmean: float | None = None
    fg_ratio_zmean: float | None = None
    val_nll: float | None = None


class StudyEntry(Part):
    """One model at one entry of the study grid."""

    name: str
    model: str
    description: str
    overrides: dict[str, Any]
    status: str
    steps: int | None
    final: StudyFinal
    curve: list[RatioPoint]
    learned: bool | None = None
    total_wall_s: float | None = None
    steps_per_s: float | None = None
    device: str | None = None
    run_file: str | None = None


@register_kind("learning_study")
class LearningStudyDoc(ResultsDoc):
    """Every model x entry of the learning-study grid, trained for the same number of steps."""

    preset: str
    steps: int
    eval_every: int
    val_scenes: int
    amp: str
    max_seconds: float | None
    reference: str
    entries: list[StudyEntry]


class SampleScene(Part):
    """One validation scene: base64 PNGs of its context views, the query, predictions, references."""

    index: int
    context: list[str]
    query: str
    predictions: dict[str, str]
    references: dict[str, str] | None = None


@register_kind("samples")
class SamplesDoc(ResultsDoc):
    """Prediction grids for the report."""

    image_size: int
    step: int
    scenes: list[SampleScene]
    preset: str | None = None
    steps: dict[str, int] | None = None
    z: str | None = None
    # Runs whose predictions are not shown (they did not complete), by label, with the reason.
    left_out: dict[str, str] | None = None
