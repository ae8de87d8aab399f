"""Failed and unfinished runs, and timings taken on a shared machine.

A diverged, interrupted, failed or still-running training run is never a result: :func:`main_runs`
leaves it out of Table 1, the curves and every median, and this section lists it with its
status, the reason and the step. So does a sweep's or time to target's run that failed before
it wrote a results file of its own (another process writing it, a full disk, a setting that
cannot train): its row there carries the error, and it is in no count of its section. Timings
taken while another gqnbench process ran on the machine (a training run's or a main-job
stage's ``concurrent`` flag) are listed too.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from gqnbench.report.context import ReportContext
from gqnbench.report.document import Note, Paragraph, Section, status_cell
from gqnbench.report.inputs import ResultFile, ResultSet
from gqnbench.report.runs import failed_runs
from gqnbench.schema.mainjob import MainJobDoc
from gqnbench.schema.training import MachineLoad, SweepDoc, TimeToTargetDoc, TrainingRunDoc

COLUMNS = ["model", "tag", "seed", "status", "step", "reason", "file"]


def _reason(doc: TrainingRunDoc) -> str:
    if doc.status == "diverged":
        return doc.diverged_reason or "diverged"
    if doc.status == "failed":
        return doc.error or "failed"
    if doc.status == "interrupted":
        return "interrupted (Ctrl-C, a time limit or a stop); continue it by running the same command again"
    if doc.status == "running":
        return "still running, or killed without a chance to write its status"
    return f"status {doc.status!r}"


def _step(doc: TrainingRunDoc) -> int | None:
    """The step a failed run stopped at: where it diverged, else its last evaluation (None if it had none)."""
    if doc.status == "diverged" and doc.diverged_step is not None:
        return doc.diverged_step
    return doc.final.step


def _status_cell(status: object) -> str:
    return status_cell(status, "warn") if status == "diverged" else str(status)


def _failure_row(run: ResultFile, ctx: ReportContext) -> dict[str, Any]:
    doc = run.as_(TrainingRunDoc)
    return {
        "model": doc.model,
        "tag": doc.tag,
        "seed": doc.seed,
        "status": doc.status,
        "step": _step(doc),
        "reason": _reason(doc),
        "file": ctx.rel(run.path),
    }


def _failed_rows(results: ResultSet, ctx: ReportContext) -> list[dict[str, Any]]:
    """The sweep and time-to-target rows of runs that failed with an error (``status`` failed)."""
    rows = []
    for kind, cls in (("sweep", SweepDoc), ("time_to_target", TimeToTargetDoc)):
        for f in results.of_kind(kind):
            doc = f.as_(cls)
            for r in doc.runs:
                if r.status == "failed":
                    what = f"sweep {doc.field}={r.value}" if isinstance(doc, SweepDoc) else "time to target"
                    rows.append({"model": r.model, "tag": what, "seed": r.seed, "status": "failed", "step": None,
                                 "reason": r.error, "file": ctx.rel(f.path)})  # fmt: skip
    return rows


def failures_frame(results: ResultSet, ctx: ReportContext) -> pd.DataFrame:
    """One row per run that is not a result: status, the step it stopped at and why.

    A failed row of a sweep or time to target whose run file already says the same (model, seed
    and error) is listed once."""
    rows = [_failure_row(r, ctx) for r in failed_runs(results)]
    seen = {(r["model"], r["seed"], r["reason"]) for r in rows}
    rows += [r for r in _failed_rows(results, ctx) if (r["model"], r["seed"], r["reason"]) not in seen]
    return pd.DataFrame(rows, columns=COLUMNS)


def _other_pids(load: MachineLoad | None) -> str:
    """The other gqnbench processes a machine-load record saw, as a comma-separated list of pids."""
    return ", ".join(str(p.pid) for p in load.other_gqnbench) if load is not None else ""


def concurrent_frame(results: ResultSet, ctx: ReportContext) -> pd.DataFrame:
    """Training runs and main-job stages timed while another gqnbench process ran on the machine."""
    rows = []
    for r in results.of_kind("training_run"):
        doc = r.as_(TrainingRunDoc)
        if doc.concurrent:
            rows.append({"what": f"training run {doc.model} seed {doc.seed}", "other pids": _other_pids(doc.machine_load),
                         "file": ctx.rel(r.path)})  # fmt: skip
    for f in results.of_kind("main_job"):
        for stage, info in f.as_(MainJobDoc).stages.items():
            if info.concurrent:
                rows.append(
                    {"what": f"main-job stage {stage}", "other pids": _other_pids(info.load), "file": ctx.rel(f.path)}
                )
    return pd.DataFrame(rows, columns=["what", "other pids", "file"])


def build(results: ResultSet, ctx: ReportContext) -> Section:
    section = Section("Failed and unfinished runs", "failures")
    failed = failures_frame(results, ctx)
    if len(failed):
        section.blocks.append(
            Paragraph(
                f"{len(failed)} training run(s) did not complete. They are not results: Table 1, the curves, the "
                "claims, every count and every median leave them out (time to target still counts a run that "
                "diverged before the target as never reaching it, and the robustness sweep counts a diverged run "
                "as one that did not learn; a run that failed with an error is in no count)."
            )
        )
        section.blocks.append(
            ctx.table(
                "failed_runs",
                failed,
                "Training runs that diverged, failed, were interrupted or are still running: status, step and reason",
                [f.path for f in results.files if ctx.rel(f.path) in set(failed["file"])],
                display=failed.astype(str).assign(status=failed["status"].map(_status_cell)),
            )
        )
    else:
        section.blocks.append(Note("Every training run completed."))
    shared = concurrent_frame(results, ctx)
    if len(shared):
        section.blocks.append(
            ctx.table(
                "concurrent_timings",
                shared,
                "Timings taken while another gqnbench process ran on the machine (not clean; re-measure on a "
                "quiet machine)",
                [f.path for f in results.files if ctx.rel(f.path) in set(shared["file"])],
            )
        )
    return section
