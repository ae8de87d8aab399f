"""Present a :class:`~gqnbench.nightly.gate.Verdict`: a plain-text table and a ``nightly_verdict`` results file."""

from __future__ import annotations

import math
from pathlib import Path

from gqnbench.files import atomic_write_text
from gqnbench.nightly.gate import Verdict
from gqnbench.nightly.schema import VerdictRow, write_doc
from gqnbench.report.metrics import RATIO_UNIT

ORDER = {"failed": 0, "regressed": 1, "missing": 2, "busy": 3, "unstable": 4, "new": 5, "no-data": 6, "improved": 7,
         "ok": 8, "shown": 9}  # fmt: skip


def fmt_value(value: float | None, unit: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if unit == "s":
        if value >= 1:
            return f"{value:.3f} s"
        if value >= 1e-3:
            return f"{value * 1e3:.3f} ms"
        return f"{value * 1e6:.3g} us"
    if unit == "bytes":
        if value >= 2**30:
            return f"{value / 2**30:.2f} GiB"
        return f"{value / 2**20:.1f} MiB"
    if unit == "nats":
        return f"{value:.3f} nats"
    if unit == RATIO_UNIT:
        return f"{value:.4g}x ref"
    return f"{value:g}"


def fmt_delta(row: VerdictRow) -> str:
    if row.delta is None:
        return "-"
    if row.unit == "nats":
        return f"{row.delta:+.3f} nats"
    if math.isinf(row.delta):
        return "+inf%"
    return f"{row.delta:+.1f}%"


def describe_regression(row: VerdictRow) -> str:
    """One sentence naming the benchmark, its baseline and current values and the delta."""
    what = {"time": "median time", "ratio": "time relative to the reference", "memory": "peak memory",
            "nll": "validation NLL", "step": "run step"}  # fmt: skip
    text = f"{row.key}: {what.get(row.metric, row.metric)} {row.status}"
    if row.baseline is not None or row.current is not None:
        text += f", baseline {fmt_value(row.baseline, row.unit)} -> current {fmt_value(row.current, row.unit)}"
    if row.delta is not None:
        text += f" ({fmt_delta(row)}, limit {row.limit})"
    elif row.limit:
        text += f" (limit {row.limit})"
    if row.note:
        text += f" - {row.note}"
    return text


def render_table(verdict: Verdict) -> str:
    header = ("STATUS", "METRIC", "BENCHMARK / RUN", "BASELINE", "CURRENT", "DELTA", "LIMIT", "NOTE")
    rows = sorted(verdict.rows, key=lambda r: (ORDER.get(r.status, 9), r.metric, r.key))
    body = [
        (
            r.status.upper(),
            r.metric,
            r.key,
            fmt_value(r.baseline, r.unit),
            fmt_value(r.current, r.unit),
            fmt_delta(r),
            r.limit,
            r.note if r.status not in ("ok", "shown") else "",
        )
        for r in rows
    ]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(header)]
    lines = [
        f"nightly check: current {verdict.current}",
        f"               baseline {verdict.baseline} (device {verdict.device_name or 'unknown'})",
        f"thresholds: {verdict.thresholds}",
        verdict.host,
        "",
    ]

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()

    lines.append(line(header))
    lines.append(line(tuple("-" * w for w in widths)))
    lines.extend(line(b) for b in body)
    if not body:
        lines.append("(nothing to compare)")
    if verdict.warnings:
        lines.append("")
        lines.extend(f"WARNING: {w}" for w in verdict.warnings)
    regs = verdict.regressions
    lines.append("")
    if regs:
        lines.append(f"REGRESSIONS ({len(regs)}):")
        lines.extend(f"  - {describe_regression(r)}" for r in regs)
    counts = ", ".join(f"{n} {s}" for s, n in sorted(verdict.counts().items(), key=lambda kv: ORDER.get(kv[0], 9)))
    lines.append(f"verdict: {'FAIL' if regs else 'PASS'} ({counts or 'no rows'}) -> exit {verdict.exit_code}")
    return "\n".join(lines) + "\n"


def write_verdict(verdict: Verdict, json_path: Path, environment: dict | None = None) -> Path:
    """``verdict.json`` (a gqnbench results file of kind ``nightly_verdict``) and ``verdict.txt`` beside it."""
    write_doc(json_path, verdict.doc(), environment=environment)
    atomic_write_text(json_path.with_suffix(".txt"), render_table(verdict))
    return json_path
