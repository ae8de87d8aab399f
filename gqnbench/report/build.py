"""Assemble a report from result sets: sections in reading order, then report.md, report.html, provenance.json.

A report is written whole or not at all: every file is assembled in a private folder inside
the output folder, then moved into place (``figures/`` and ``tables/`` as whole folders, then
the three files), so a full disk or a crash leaves the previous report as it was, never a
``report.md`` without its ``report.html``.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import sys
import tempfile
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from gqnbench import __version__
from gqnbench.environment import git_commit
from gqnbench.files import atomic_write_text
from gqnbench.report.context import ReportContext
from gqnbench.report.document import Document, Note, Paragraph, Section, render_html, render_markdown, sources_line
from gqnbench.report.inputs import ReportInputError, ResultSet
from gqnbench.report.sections import (
    claims,
    comparison,
    costs,
    curves,
    environment,
    failures,
    learning_study,
    paper_scale,
    perf_targets,
    profile,
    robustness,
    samples,
    table1,
    targets,
)

REPORT_FILES = ("report.md", "report.html", "provenance.json")


@dataclass(frozen=True)
class ReportOutput:
    out_dir: Path
    markdown: Path
    html: Path
    provenance: Path
    document: Document


SectionBuilder = Callable[[ResultSet, ReportContext], Section]

SECTIONS: list[tuple[str, SectionBuilder]] = [
    ("claims", claims.build),
    ("table1", table1.build),
    ("figure6", curves.build_figure6),
    ("figure7", curves.build_figure7),
    ("time-to-target", targets.build),
    ("robustness", robustness.build),
    ("failures", failures.build),
    ("costs", costs.build),
    ("perf-targets", perf_targets.build),
    ("scaling", costs.build_scaling),
    ("profile", profile.build),
    ("samples", samples.build),
    ("learning-study", learning_study.build),
    ("paper-scale", paper_scale.build),
]


def _safe(name: str, builder: Callable[[], Section], strict: bool) -> Section:
    """Run a section builder; outside strict mode an unexpected failure becomes a note, not a lost report."""
    try:
        return builder()
    except ReportInputError:
        raise
    except Exception as exc:  # noqa: BLE001 - one section's bug must not cost the whole report
        if strict:
            raise
        print(f"gqnbench report: section {name!r} failed: {exc}", file=sys.stderr)
        traceback.print_exc(file=sys.stderr)
        return Section(name, name, [Note(f"This section could not be built ({type(exc).__name__}: {exc}).")])


def _report_info(command: str | None) -> dict[str, Any]:
    """When, by which gqnbench and commit, and with which command this report is written."""
    return {
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "gqnbench": __version__,
        "commit": git_commit(),
        "command": command or "python -m gqnbench.report",
    }


def _sections(
    results: ResultSet, baseline: ResultSet | None, threshold: float, ctx: ReportContext, strict: bool
) -> list[Section]:
    """Every section in reading order except provenance (the comparison first when there is a baseline)."""
    sections = []
    if baseline is not None:
        sections.append(_safe("comparison", lambda: comparison.build(results, baseline, ctx, threshold), strict))
    for name, builder in SECTIONS:
        sections.append(_safe(name, lambda b=builder: b(results, ctx), strict))
    return sections


def _provenance_section(results: ResultSet, ctx: ReportContext, info: dict[str, Any], strict: bool) -> Section:
    """The environment section, ending with every artifact written so far and its sources (so it comes last)."""
    section = _safe("provenance", lambda: environment.build(results, ctx, info), strict)
    artifacts = pd.DataFrame(
        [{"artifact": a["artifact"], "sources": sources_line(a["sources"])} for a in ctx.artifacts]
    )
    if len(artifacts):
        caption = "Every figure and table and the results files it came from"
        section.blocks.append(ctx.table("provenance", artifacts, caption, [f.path for f in results.files]))
    return section


def _intro(results: ResultSet, baseline: ResultSet | None) -> list[Paragraph]:
    """What the report covers, and how many input files of which kind it read."""
    kinds = pd.Series([f.kind for f in results.files]).value_counts() if results.files else pd.Series(dtype=int)
    return [
        Paragraph(
            "Benchmarks of the reference Generative Query Network (GQN) and the 2019 study's meta-learning GQN "
            "(`metagqn`): the study's Table 1 and Figures 6-7 reproduced at our scale, time to a target NLL, "
            "robustness to the latent size, and what each model costs to train and run."
        ),
        Paragraph(
            f"Inputs: {len(results.files)} results file(s) ("
            + ", ".join(f"{n} {k}" for k, n in kinds.items())
            + ")"
            + (f"; baseline: {len(baseline.files)} file(s)" if baseline is not None else "")
            + "."
        ),
    ]


def _provenance(
    results: ResultSet, baseline: ResultSet | None, threshold: float, ctx: ReportContext, info: dict[str, Any]
) -> dict[str, Any]:
    """provenance.json: the report's info, its inputs (relative to the report folder) and every artifact."""
    return {
        **info,
        "inputs": [ctx.rel(f.path) for f in results.files],
        "baseline_inputs": [ctx.rel(f.path) for f in baseline.files] if baseline is not None else [],
        "ignored": [ctx.rel(p) for p in results.ignored],
        "threshold": threshold if baseline is not None else None,
        "artifacts": ctx.artifacts,
    }


def build_report(
    results: ResultSet,
    out_dir: str | os.PathLike,
    baseline: ResultSet | None = None,
    threshold: float = 0.05,
    command: str | None = None,
    title: str = "gqnbench report",
    strict: bool = False,
) -> ReportOutput:
    """Write report.md, report.html (self-contained), figures/, tables/ and provenance.json to ``out_dir``.

    All or nothing: on any error (a full disk included) nothing in ``out_dir`` has changed.
    """
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".report-", dir=out))
    try:
        ctx = ReportContext(out, stage)
        info = _report_info(command)
        sections = _sections(results, baseline, threshold, ctx, strict)
        sections.append(_provenance_section(results, ctx, info, strict))
        doc = Document(title=title, intro=_intro(results, baseline), sections=sections)
        atomic_write_text(stage / REPORT_FILES[0], render_markdown(doc))
        atomic_write_text(stage / REPORT_FILES[1], render_html(doc))
        provenance = _provenance(results, baseline, threshold, ctx, info)
        atomic_write_text(stage / REPORT_FILES[2], json.dumps(provenance, indent=2) + "\n")
        _publish(stage, out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return ReportOutput(out, *(out / name for name in REPORT_FILES), doc)


def _publish(stage: Path, out: Path) -> None:
    """Move the assembled report from ``stage`` into ``out``: renames only, on one file system (no space needed).

    The old ``figures/`` and ``tables/`` go whole (an artifact this report did not write would
    claim sources it does not have); the three report files replace theirs.
    """
    for folder in ("figures", "tables"):
        if (out / folder).exists():
            os.replace(out / folder, stage / f"old-{folder}")
        os.replace(stage / folder, out / folder)
    for name in REPORT_FILES:
        os.replace(stage / name, out / name)
