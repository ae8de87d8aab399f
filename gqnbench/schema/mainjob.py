"""Schema of the ``main_job`` kind: the state file of ``gqnbench run`` (plan and stage records).

``plan.budget`` and ``plan.overrides`` are open-ended (the preset's budget fields, any config field).
"""

from __future__ import annotations

from typing import Any, Literal

from gqnbench.schema.base import Part, ResultsDoc, register_kind
from gqnbench.schema.training import MachineLoad


class Plan(Part):
    """What the job was asked to do; a resumed job must match it."""

    preset: str
    quick: bool
    data_root: str | None
    models: list[str]
    budget: dict[str, Any]
    overrides: dict[str, Any]


class Stage(Part):
    """One stage's outcome: status, wall time, a one-line detail and the machine load around it.

    ``failed``: some of its runs failed (the detail says which and why); running the job again retries them.
    """

    status: Literal["done", "failed"]
    wall_s: float | None = None
    detail: str | None = None
    concurrent: bool | None = None
    load: MachineLoad | None = None


@register_kind("main_job")
class MainJobDoc(ResultsDoc):
    """The main job's plan and each stage's record."""

    plan: Plan
    stages: dict[str, Stage]
    # train.amp=auto resolved once for the job's runs (gqnbench.precision.PrecisionChoice); null otherwise.
    precision: dict[str, Any] | None = None
