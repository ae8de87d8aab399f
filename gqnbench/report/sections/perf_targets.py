"""The performance targets, from ``costs`` files written by ``gqnbench perf-targets --out`` (CPU or GPU).

Each such file holds one interleaved measurement (fp32 eager, bf16 variants and the matmul
peaks timed in the same rounds); this section shows its checks and its rows as measured,
plus the spread of the matmul itself, which says how quiet the machine was.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from gqnbench.report import formatting as F
from gqnbench.report.context import ReportContext
from gqnbench.report.document import Note, Paragraph, Section
from gqnbench.report.formatting import model_label
from gqnbench.report.inputs import ResultFile, ResultSet
from gqnbench.schema.costs import CostsDoc

# check name -> (what it is, how its value is shown, the target's key and direction)
_CHECKS: dict[str, tuple[str, str, str | None, str]] = {
    "fp32_mfu": ("fp32 eager: share of the fp32 matmul peak", "pct", "fp32_mfu_min", ">="),
    "bf16_step": ("best bf16 variant: median step", "ms", "bf16_step_max_s", "<="),
    "bf16_speedup": ("best bf16 variant: speed-up over fp32 eager", "x", "bf16_speedup_min", ">="),
    "bf16_mfu": ("best bf16 variant: share of the bf16 matmul peak", "pct", "bf16_mfu_min", ">="),
    "bf16_numerics": ("bf16 gradients vs fp64 (TorchBench rule)", "sci", None, ""),
    "memory": ("cases with their GPU memory recorded", "int", None, ""),
    "timer_overhead": ("harness timer overhead / step", "sci", "timer_overhead_max", "<"),
    "rel_iqr": ("spread (IQR/median) of the judged rows", "pct", "rel_iqr_max", "<"),
}


def _fmt(value: Any, how: str) -> str:
    if how == "pct":
        return F.fmt_pct(value)
    if how == "x":
        return F.MISSING if value is None else f"{float(value):.2f}x"
    if how == "ms":
        return F.fmt_ms(value)
    if how == "int":
        return F.fmt_int(value)
    return F.fmt_sci(value, 2)


def _variant(row: dict[str, Any]) -> str:
    name = f"{row.get('dtype')} {'compiled' if row.get('compiled') else 'eager'}"
    fast = (row.get("fast_path") or {}).get("spec")
    if fast is not None:  # rows from before the fast path name channels_last alone
        return name + ("" if fast == "off" else f", fast path {fast}")
    return name + (" channels_last" if row.get("channels_last") else "")


def checks_frame(doc: dict[str, Any]) -> pd.DataFrame:
    targets = doc.get("targets") or {}
    rows = []
    for name, check in (doc.get("checks") or {}).items():
        label, how, key, direction = _CHECKS.get(name, (name, "sci", None, ""))
        rows.append(
            {
                "check": label,
                "value": check.get("value"),
                "shown": _fmt(check.get("value"), how),
                "target": f"{direction} {_fmt(targets[key], how)}" if key in targets else "passes",
                "met": bool(check.get("met")),
            }
        )
    return pd.DataFrame(rows)


def rows_frame(doc: dict[str, Any]) -> pd.DataFrame:
    rows = []
    for row in [doc.get("fp32") or {}, *(doc.get("bf16") or [])]:
        if not row:
            continue
        rows.append(
            {
                "variant": _variant(row),
                "median_s": row.get("median_s"),
                "min_s": row.get("min_s"),
                "rel_iqr": row.get("rel_iqr"),
                "flop_per_s": row.get("flop_per_s"),
                "mfu": row.get("mfu"),
                "authors_flop_rate_of_peak": row.get("authors_flop_rate_of_peak"),
                "mfu_peak": row.get("mfu_peak"),
                "peak_memory_bytes": row.get("peak_memory_bytes"),
                "compile_s": row.get("compile_s"),
                "graph_breaks": row.get("graph_breaks"),
            }
        )
    return pd.DataFrame(rows)


def machine_spread(doc: dict[str, Any]) -> dict[str, Any]:
    """The matmul's own spread; files written before it was stored carry it in the peaks."""
    if isinstance(doc.get("machine"), dict):
        return doc["machine"]
    peak = doc.get("matmul_peak") or {}
    spreads = [peak[k] for k in ("fp32_rel_iqr", "bf16_rel_iqr") if isinstance(peak.get(k), (int, float))]
    if not spreads:
        return {}
    limit = (doc.get("targets") or {}).get("rel_iqr_max", 0.05)
    return {"matmul_rel_iqr": max(spreads), "quiet": max(spreads) < limit}


def runs_frame(files: list) -> pd.DataFrame:
    """One row per measurement: how the targets moved from run to run on the same code."""
    rows = []
    for f in files:
        doc = f.doc["perf_targets"]
        checks = doc.get("checks") or {}
        rows.append(
            {
                "created": f.as_(CostsDoc).created,
                "commit": f.environment.get("commit"),
                "model": doc.get("model"),
                "batch": doc.get("batch"),
                "device": doc.get("fp32", {}).get("device"),
                "fp32_mfu": (checks.get("fp32_mfu") or {}).get("value"),
                "bf16_speedup": (checks.get("bf16_speedup") or {}).get("value"),
                "bf16_mfu": (checks.get("bf16_mfu") or {}).get("value"),
                "rel_iqr": (checks.get("rel_iqr") or {}).get("value"),
                "matmul_rel_iqr": machine_spread(doc).get("matmul_rel_iqr"),
                "all_met": all(bool(c.get("met")) for c in checks.values()) if checks else None,
            }
        )
    return pd.DataFrame(rows)


NO_TARGETS = (
    "No performance-target measurement among the inputs. `gqnbench perf-targets --out "
    "results/perf_targets.json` measures one (paper-size GQN step, about 3 minutes on 2 cores)."
)


def _runs_table(files: list[ResultFile], ctx: ReportContext) -> Any:
    runs = runs_frame(files)
    return ctx.table(
        "perf_targets_runs",
        runs,
        f"{len(files)} measurements, one per file (details of each below)",
        [f.path for f in files],
        display=pd.DataFrame(
            {
                "measured at": runs["created"].astype(str),
                "commit": runs["commit"].astype(str),
                "case": [
                    f"{model_label(str(m))}, batch {b}, {d}"
                    for m, b, d in zip(runs["model"], runs["batch"], runs["device"])
                ],
                "fp32 MFU": runs["fp32_mfu"].map(F.fmt_pct),
                "bf16 speed-up": runs["bf16_speedup"].map(lambda v: _fmt(v, "x")),
                "bf16 MFU": runs["bf16_mfu"].map(F.fmt_pct),
                "step spread": runs["rel_iqr"].map(F.fmt_pct),
                "matmul spread (machine)": runs["matmul_rel_iqr"].map(F.fmt_pct),
                "all met": runs["all_met"].map(lambda m: F.fmt_bool(m, "yes", "no")),
            }
        ),
    )


def _measurement_paragraph(doc: dict[str, Any]) -> Paragraph:
    peak = doc.get("matmul_peak") or {}
    machine = machine_spread(doc)
    quiet = machine.get("quiet")
    spread = F.fmt_pct(machine.get("matmul_rel_iqr")) if machine else "not recorded"
    peaks = [
        f"{name} {F.fmt_float(as_giga(peak.get(f'{name}_flop_per_s')), 0)} GFLOP/s"
        for name in ("fp32", "tf32", "bf16")
        if peak.get(f"{name}_flop_per_s") is not None
    ]
    return Paragraph(
        f"{model_label(str(doc.get('model')))}, `{doc.get('preset')}` preset, training step at batch "
        f"{doc.get('batch')}; rounds interleaved with a {peak.get('n')}² matmul that gives the peaks "
        f"({', '.join(peaks)}). The matmul's own IQR/median "
        f"was {spread}{'' if quiet is None else (' (quiet machine)' if quiet else ' (machine not quiet)')}. "
        "MFU counts the FLOPs this implementation executes; the authors' column divides the FLOPs of "
        "their step-by-step formulation (the SPEC's 272 GFLOP/scene at paper size) by the same time."
    )


def _checks_table(number: int, f: ResultFile, doc: dict[str, Any], ctx: ReportContext) -> Any | None:
    checks = checks_frame(doc)
    if not len(checks):
        return None
    display = pd.DataFrame(
        {
            "target": checks["check"],
            "measured": checks["shown"],
            "required": checks["target"],
            "met": checks["met"].map(lambda m: F.fmt_bool(m, "met", "NOT met")),
        }
    )
    raw = checks.drop(columns=["shown"])
    return ctx.table(f"perf_targets_checks_{number}", raw, "Targets", [f.path], display=display)


def _rows_table(number: int, f: ResultFile, doc: dict[str, Any], ctx: ReportContext) -> Any | None:
    rows = rows_frame(doc)
    if not len(rows):
        return None
    display = pd.DataFrame(
        {
            "variant": rows["variant"],
            "median (s)": rows["median_s"].map(lambda v: F.fmt_float(v, 3 if (v or 0) >= 0.1 else 4)),
            "min (s)": rows["min_s"].map(lambda v: F.fmt_float(v, 3 if (v or 0) >= 0.1 else 4)),
            "IQR/median": rows["rel_iqr"].map(F.fmt_pct),
            "GFLOP/s": rows["flop_per_s"].map(lambda v: F.fmt_float(as_giga(v), 0)),
            "MFU": rows["mfu"].map(F.fmt_pct),
            "MFU against": rows["mfu_peak"].map(lambda v: F.MISSING if v is None or pd.isna(v) else f"{v} peak"),
            "authors' FLOPs / peak": rows["authors_flop_rate_of_peak"].map(F.fmt_pct),
            "peak memory (MiB)": rows["peak_memory_bytes"].map(lambda b: F.fmt_float(F.mib(b), 0)),
            "compile (s)": rows["compile_s"].map(lambda v: F.fmt_float(v, 1)),
        }
    )
    caption = "The measured variants (median of the interleaved rounds)"
    return ctx.table(f"perf_targets_rows_{number}", rows, caption, [f.path], display=display)


def build(results: ResultSet, ctx: ReportContext) -> Section:
    section = Section("Performance targets", "perf-targets")
    # perf_targets is an open-ended costs section (checks and variants vary by device): read as written.
    files = [f for f in results.of_kind("costs") if f.as_(CostsDoc).perf_targets is not None]
    if not files:
        section.blocks.append(Note(NO_TARGETS))
        return section
    if len(files) > 1:
        section.blocks.append(_runs_table(files, ctx))
    for number, f in enumerate(files, start=1):
        doc = f.as_(CostsDoc).perf_targets or {}
        section.blocks.append(_measurement_paragraph(doc))
        tables = [_checks_table(number, f, doc, ctx), _rows_table(number, f, doc, ctx)]
        section.blocks += [t for t in tables if t is not None]
    return section


def as_giga(value: Any) -> float | None:
    return None if value is None else float(value) / 1e9
