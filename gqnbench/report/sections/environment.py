"""Environment and provenance: where every number was measured and which file every artifact came from."""

from __future__ import annotations

from typing import Any

import pandas as pd

from gqnbench.report.context import ReportContext
from gqnbench.report.document import Note, Paragraph, Section, sources_line
from gqnbench.report.inputs import PYTEST_BENCHMARK, ResultSet
from gqnbench.report.tables import display_generic

ENV_FIELDS = [
    "device",
    "gpu_name",
    "dtype",
    "torch",
    "cuda_version",
    "python",
    "numpy",
    "gqnbench",
    "commit",
    "platform",
    "processor",
    "cpu_count",
    "torch_threads",
]


def environment_frame(results: ResultSet, ctx: ReportContext) -> pd.DataFrame:
    """One row per distinct environment among the results files, with the files measured under it."""
    groups: dict[tuple, dict[str, Any]] = {}
    for f in results.files:
        if f.kind == PYTEST_BENCHMARK:
            machine = f.doc.get("machine_info") or {}
            commit = f.doc.get("commit_info") or {}
            cpu = machine.get("cpu") or {}
            env = {
                "device": ", ".join(sorted({str(b.get("extra_info", {}).get("device")) for b in f.doc["benchmarks"]})),
                "python": machine.get("python_version"),
                "platform": f"{machine.get('system', '')} {machine.get('release', '')}".strip() or None,
                "processor": cpu.get("brand_raw") or machine.get("processor") or None,
                "cpu_count": cpu.get("count"),
                "commit": (str(commit.get("id"))[:12] + ("-dirty" if commit.get("dirty") else ""))
                if commit.get("id")
                else None,
                "pytest-benchmark": f.doc.get("version"),
            }
        else:
            env = dict(f.environment)
        key = tuple(str(env.get(k)) for k in [*ENV_FIELDS, "pytest-benchmark"])
        group = groups.setdefault(
            key, {**{k: env.get(k) for k in ENV_FIELDS}, "pytest-benchmark": env.get("pytest-benchmark"), "files": []}
        )
        group["files"].append(ctx.rel(f.path))
    rows = []
    for group in groups.values():
        files = group.pop("files")
        group["files"] = f"{len(files)}: {sources_line(files)}"
        rows.append(group)
    frame = pd.DataFrame(rows)
    # Drop fields no results file recorded (e.g. gpu_name on a CPU machine).
    return frame.dropna(axis=1, how="all") if len(frame) else frame


def stage_frame(doc: dict[str, Any]) -> pd.DataFrame:
    """The main job's stages in run order with their wall time, plus a total row."""
    rows = [
        {"stage": name, "status": info.get("status"), "wall_s": info.get("wall_s"), "detail": info.get("detail")}
        for name, info in (doc.get("stages") or {}).items()
        if isinstance(info, dict)
    ]
    if not rows:
        return pd.DataFrame()
    total = sum(float(r["wall_s"] or 0.0) for r in rows)
    rows.append({"stage": "total", "status": None, "wall_s": round(total, 2), "detail": None})
    return pd.DataFrame(rows)


def transposed(frame: pd.DataFrame) -> pd.DataFrame:
    """Fields as rows, one column per environment: a wide environment table reads better on its side."""
    shown = display_generic(frame)
    out = shown.T.reset_index()
    out.columns = ["field", *[f"environment {i + 1}" for i in range(len(frame))]]
    return out


def build(results: ResultSet, ctx: ReportContext, report_info: dict[str, Any]) -> Section:
    section = Section("Environment and provenance", "provenance")
    section.blocks.append(
        Paragraph(
            f"Report written {report_info['created']} by gqnbench {report_info['gqnbench']} "
            f"(commit `{report_info.get('commit') or 'unknown'}`) with: `{report_info['command']}`. "
            "Every figure and table names the results files it came from; `provenance.json` lists them all."
        )
    )
    env = environment_frame(results, ctx)
    if len(env):
        section.blocks.append(
            ctx.table(
                "environments",
                env,
                "Measurement environments (one column per distinct environment)",
                [f.path for f in results.files],
                display=transposed(env),
            )
        )
    else:
        section.blocks.append(Note("No results files, so no measurement environment to show."))
    for job in results.of_kind("main_job"):
        stages = stage_frame(job.doc)
        if len(stages):
            plan = job.doc.get("plan") or {}
            section.blocks.append(
                ctx.table(
                    "main_job_stages",
                    stages,
                    f"What the main job's stages took (preset {plan.get('preset')}"
                    f"{', quick' if plan.get('quick') else ''}; wall clock, seconds)",
                    [job.path],
                    display=display_generic(stages),
                )
            )
    if results.ignored:
        names = ", ".join(f"`{ctx.rel(p)}`" for p in results.ignored[:10])
        section.blocks.append(
            Note(
                f"Ignored while scanning (JSON that is neither a gqnbench results file nor pytest-benchmark): {names}."
            )
        )
    return section
