"""Failed and unfinished runs, and timings taken on a shared machine.

A diverged, interrupted or still-running training run is never a result: :func:`main_runs`
leaves it out of Table 1, the curves and every median, and this section lists it with its
status, the reason and the step. Timings taken while another gqnbench process ran on the
machine (a training run's or a main-job stage's ``concurrent`` flag) are listed too.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from gqnbench.report.context import ReportContext
from gqnbench.report.document import Note, Paragraph, Section, status_cell
from gqnbench.report.inputs import ResultSet
from gqnbench.report.runs import failed_runs


def _reason(doc: dict[str, Any]) -> str:
    status = doc.get("status")
    if status == "diverged":
        return str(doc.get("diverged_reason") or "diverged")
    if status == "interrupted":
        return "interrupted (Ctrl-C, a time limit or a stop); continue it by running the same command again"
    if status == "running":
        return "still running, or killed without a chance to write its status"
    return f"status {status!r}"


def _step(doc: dict[str, Any]) -> Any:
    if doc.get("status") == "diverged" and doc.get("diverged_step") is not None:
        return doc["diverged_step"]
    return (doc.get("final") or {}).get("step")


def _status_cell(status: object) -> str:
    return status_cell(status, "warn") if status == "diverged" else str(status)


def failures_frame(results: ResultSet, ctx: ReportContext) -> pd.DataFrame:
    rows = [
        {
            "model": r.doc.get("model"),
            "tag": r.doc.get("tag"),
            "seed": r.doc.get("seed"),
            "status": r.doc.get("status"),
            "step": _step(r.doc),
            "reason": _reason(r.doc),
            "file": ctx.rel(r.path),
        }
        for r in failed_runs(results)
    ]
    return pd.DataFrame(rows, columns=["model", "tag", "seed", "status", "step", "reason", "file"])


def concurrent_frame(results: ResultSet, ctx: ReportContext) -> pd.DataFrame:
    rows = []
    for r in results.of_kind("training_run"):
        load = r.doc.get("machine_load") or {}
        if r.doc.get("concurrent"):
            pids = ", ".join(str(p.get("pid")) for p in load.get("other_gqnbench", []))
            rows.append({"what": f"training run {r.doc.get('model')} seed {r.doc.get('seed')}", "other pids": pids,
                         "file": ctx.rel(r.path)})  # fmt: skip
    for f in results.of_kind("main_job"):
        for stage, info in (f.doc.get("stages") or {}).items():
            if isinstance(info, dict) and info.get("concurrent"):
                pids = ", ".join(str(p.get("pid")) for p in (info.get("load") or {}).get("other_gqnbench", []))
                rows.append({"what": f"main-job stage {stage}", "other pids": pids, "file": ctx.rel(f.path)})
    return pd.DataFrame(rows, columns=["what", "other pids", "file"])


def build(results: ResultSet, ctx: ReportContext) -> Section:
    section = Section("Failed and unfinished runs", "failures")
    failed = failures_frame(results, ctx)
    if len(failed):
        section.blocks.append(
            Paragraph(
                f"{len(failed)} training run(s) did not complete. They are not results: Table 1, the curves, the "
                "claims and every median leave them out (time to target still counts a run that did not reach "
                "the target as never reaching it)."
            )
        )
        section.blocks.append(
            ctx.table(
                "failed_runs",
                failed,
                "Training runs that diverged, were interrupted or are still running: status, step and reason",
                [r.path for r in failed_runs(results)],
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
