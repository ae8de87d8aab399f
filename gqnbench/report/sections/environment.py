"""Environment and provenance: where every number was measured and which file every artifact came from."""

from __future__ import annotations

from typing import Any

import pandas as pd

from gqnbench.report.context import ReportContext
from gqnbench.report.document import Note, Paragraph, Section, Table, sources_line
from gqnbench.report.inputs import PYTEST_BENCHMARK, ResultFile, ResultSet
from gqnbench.report.tables import display_generic
from gqnbench.schema.mainjob import MainJobDoc

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


def _commit_label(commit: dict[str, Any]) -> str | None:
    """pytest-benchmark's commit_info as the results files write it: 12 hex digits, ``-dirty`` if so."""
    if not commit.get("id"):
        return None
    return str(commit["id"])[:12] + ("-dirty" if commit.get("dirty") else "")


def _pytest_benchmark_env(doc: dict[str, Any]) -> dict[str, Any]:
    """The environment fields of a pytest-benchmark JSON (its own layout, read as written)."""
    machine = doc.get("machine_info") or {}
    cpu = machine.get("cpu") or {}
    return {
        "device": ", ".join(sorted({str(b.get("extra_info", {}).get("device")) for b in doc["benchmarks"]})),
        "python": machine.get("python_version"),
        "platform": f"{machine.get('system', '')} {machine.get('release', '')}".strip() or None,
        "processor": cpu.get("brand_raw") or machine.get("processor") or None,
        "cpu_count": cpu.get("count"),
        "commit": _commit_label(doc.get("commit_info") or {}),
        "pytest-benchmark": doc.get("version"),
    }


def _env_of(f: ResultFile) -> dict[str, Any]:
    # A results file's environment is open-ended (capture_environment's fields); a field it lacks shows as missing.
    return _pytest_benchmark_env(f.doc) if f.kind == PYTEST_BENCHMARK else dict(f.environment)


def environment_frame(results: ResultSet, ctx: ReportContext) -> pd.DataFrame:
    """One row per distinct environment among the results files, with the files measured under it."""
    fields = [*ENV_FIELDS, "pytest-benchmark"]
    groups: dict[tuple[str, ...], dict[str, Any]] = {}
    for f in results.files:
        env = _env_of(f)
        key = tuple(str(env.get(k)) for k in fields)
        group = groups.setdefault(key, {**{k: env.get(k) for k in fields}, "files": []})
        group["files"].append(ctx.rel(f.path))
    rows = [{**group, "files": f"{len(group['files'])}: {sources_line(group['files'])}"} for group in groups.values()]
    frame = pd.DataFrame(rows)
    # Drop fields no results file recorded (e.g. gpu_name on a CPU machine).
    return frame.dropna(axis=1, how="all") if len(frame) else frame


def stage_frame(job: MainJobDoc) -> pd.DataFrame:
    """The main job's stages in run order with their wall time, plus a total row."""
    rows = [
        {"stage": name, "status": stage.status, "wall_s": stage.wall_s, "detail": stage.detail}
        for name, stage in job.stages.items()
    ]
    if not rows:
        return pd.DataFrame()
    # The total is over the stages that recorded a time (one that never started has none).
    total = sum(stage.wall_s for stage in job.stages.values() if stage.wall_s is not None)
    rows.append({"stage": "total", "status": None, "wall_s": round(total, 2), "detail": None})
    return pd.DataFrame(rows)


def transposed(frame: pd.DataFrame) -> pd.DataFrame:
    """Fields as rows, one column per environment: a wide environment table reads better on its side."""
    shown = display_generic(frame)
    out = shown.T.reset_index()
    out.columns = ["field", *[f"environment {i + 1}" for i in range(len(frame))]]
    return out


def _written_by(report_info: dict[str, Any]) -> Paragraph:
    """When, by which gqnbench and commit, and with which command the report was written."""
    return Paragraph(
        f"Report written {report_info['created']} by gqnbench {report_info['gqnbench']} "
        f"(commit `{report_info['commit'] or 'unknown'}`) with: `{report_info['command']}`. "
        "Every figure and table names the results files it came from; `provenance.json` lists them all."
    )


def _environment_block(results: ResultSet, ctx: ReportContext) -> Table | Note:
    env = environment_frame(results, ctx)
    if not len(env):
        return Note("No results files, so no measurement environment to show.")
    caption = "Measurement environments (one column per distinct environment)"
    return ctx.table("environments", env, caption, [f.path for f in results.files], display=transposed(env))


def _main_job_blocks(results: ResultSet, ctx: ReportContext) -> list[Table]:
    """What each main job's stages took."""
    blocks = []
    for job in results.of_kind("main_job"):
        doc = job.as_(MainJobDoc)
        stages = stage_frame(doc)
        if len(stages):
            caption = (
                f"What the main job's stages took (preset {doc.plan.preset}"
                f"{', quick' if doc.plan.quick else ''}; wall clock, seconds)"
            )
            blocks.append(ctx.table("main_job_stages", stages, caption, [job.path], display=display_generic(stages)))
    return blocks


def build(results: ResultSet, ctx: ReportContext, report_info: dict[str, Any]) -> Section:
    """Where every number was measured, the main job's stages, and the JSON the scan ignored."""
    section = Section("Environment and provenance", "provenance")
    section.blocks += [_written_by(report_info), _environment_block(results, ctx), *_main_job_blocks(results, ctx)]
    if results.ignored:
        names = ", ".join(f"`{ctx.rel(p)}`" for p in results.ignored[:10])
        section.blocks.append(
            Note(
                f"Ignored while scanning (JSON that is neither a gqnbench results file nor pytest-benchmark): {names}."
            )
        )
    return section
