"""Generic helpers that turn nested results JSON into flat DataFrames for tables and CSVs."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from gqnbench.report import formatting as F
from gqnbench.report.document import status_cell


def flatten_nested(obj: Any, levels: list[str]) -> pd.DataFrame:
    """Rows from ``{a: {b: {metric: value}}}`` or a list of row dicts.

    Dict levels whose values are all dicts become key columns named by ``levels`` (then
    ``level3``, ...); the innermost dict is one row; a nested dict inside a row becomes dotted
    columns (``train.peak_rss_bytes``).
    """
    rows: list[dict[str, Any]] = []

    def flat_row(node: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in node.items():
            if isinstance(value, dict):
                out.update(flat_row(value, f"{prefix}{key}."))
            elif not isinstance(value, list):
                out[f"{prefix}{key}"] = value
        return out

    def walk(node: Any, keys: dict[str, Any], depth: int) -> None:
        if isinstance(node, list):
            for item in node:
                if isinstance(item, dict):
                    rows.append({**keys, **flat_row(item)})
        elif isinstance(node, dict) and node and all(isinstance(v, dict) for v in node.values()):
            name = levels[depth] if depth < len(levels) else f"level{depth}"
            for key, value in node.items():
                walk(value, {**keys, name: key}, depth + 1)
        elif isinstance(node, dict):
            rows.append({**keys, **flat_row(node)})

    walk(obj, {}, 0)
    return pd.DataFrame(rows)


def bytes_to_mib_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Columns ending in ``bytes`` become ``... (MiB)`` columns: humans read MiB, CSVs keep bytes elsewhere."""
    out = frame.copy()
    for col in list(out.columns):
        if str(col).endswith("bytes"):
            out[str(col).removesuffix("_bytes").removesuffix("bytes") + " (MiB)"] = out.pop(col).map(F.mib)
    return out


def display_generic(frame: pd.DataFrame) -> pd.DataFrame:
    """Format an arbitrary frame: integers with separators, floats with 3-4 significant digits.

    Booleans read yes/no, except in verdict columns (``passed``, ``ok``), which read passed/FAILED.
    """

    def formatter(column: str):
        verdict = any(word in column.lower() for word in ("pass", "ok"))

        def cell(value: Any) -> str:
            if isinstance(value, (bool, np.bool_)):
                if verdict:
                    return status_cell("passed", "ok") if value else status_cell("FAILED", "bad")
                return "yes" if value else "no"
            if value is None or (isinstance(value, float) and value != value):
                return F.MISSING
            if isinstance(value, (int, np.integer)):
                return F.fmt_int(value)
            if isinstance(value, (float, np.floating)):
                return F.fmt_float(value, 1) if abs(value) >= 100 else F.fmt_sig(value, 4)
            return str(value)

        return cell

    if not len(frame):
        return frame.astype(str)
    shown = pd.DataFrame({str(c): frame[c].map(formatter(str(c))) for c in frame.columns}).astype(str)
    # A column no row filled (e.g. CUDA fields on a CPU run) only adds noise.
    return shown.loc[:, [c for c in shown.columns if (shown[c] != F.MISSING).any()]]
