"""Costs: parameters per module, FLOPs, memory, step time, images/s, MFU, eager vs compiled, fp32 vs bf16.

Reads the harness's ``costs`` files and pytest-benchmark JSON (whose ``extra_info`` carries the
same fields as a harness throughput row). Units: GFLOP = 1e9 floating-point operations counted
as 2 FLOP per multiply-add (``torch.utils.flop_counter.FlopCounterMode``); fvcore's count is in
multiply-adds (GMAC); memory in MiB (2**20 bytes); time in milliseconds unless marked.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from gqnbench.report import formatting as F
from gqnbench.report.context import ReportContext
from gqnbench.report.document import Note, Paragraph, Section
from gqnbench.report.inputs import PYTEST_BENCHMARK, ResultSet
from gqnbench.report.study import model_label
from gqnbench.report.tables import bytes_to_mib_columns, display_generic, flatten_nested
from gqnbench.results import as_float

_DTYPES = {
    "float32": "fp32",
    "torch.float32": "fp32",
    "fp32": "fp32",
    "bfloat16": "bf16",
    "torch.bfloat16": "bf16",
    "bf16": "bf16",
    "float16": "fp16",
    "torch.float16": "fp16",
    "fp16": "fp16",
}

THROUGHPUT_COLUMNS = [
    "source",
    "benchmark",
    "model",
    "preset",
    "mode",
    "batch",
    "dtype",
    "compiled",
    "formulation",
    "device",
    "median_s",
    "iqr_s",
    "images_per_s",
    "flop_per_s",
    "mfu",
    "peak_memory_bytes",
    "compile_s",
    "graph_breaks",
    "file",
]


def norm_dtype(value: Any) -> str:
    return _DTYPES.get(str(value), str(value))


def _formulation(fold_linear_ops: Any) -> str:
    """``fold_linear_ops`` of a throughput row as a label; files from before the flag say "default"."""
    if fold_linear_ops is None:
        return "default"
    return "folded" if fold_linear_ops else "unfolded"


def throughput_frame(results: ResultSet) -> pd.DataFrame:
    """Step-time rows from costs files (source 'harness') and pytest-benchmark JSON (source 'pytest-benchmark')."""
    rows: list[dict[str, Any]] = []
    for costs in results.of_kind("costs"):
        for row in costs.doc.get("throughput") or []:
            rows.append(
                {
                    "source": "harness",
                    "benchmark": None,
                    **{k: row.get(k) for k in THROUGHPUT_COLUMNS if k not in ("source", "benchmark", "file")},
                    "formulation": _formulation(row.get("fold_linear_ops")),
                    "device": row.get("device", costs.doc.get("device")),
                    "file": costs.path,
                }
            )
    for bench_file in results.of_kind(PYTEST_BENCHMARK):
        for bench in bench_file.doc["benchmarks"]:
            info = bench.get("extra_info") or {}
            stats = bench["stats"]
            median = as_float(stats["median"])
            flop = info.get("flop_per_step")
            rows.append(
                {
                    "source": "pytest-benchmark",
                    "benchmark": bench["fullname"],
                    "model": info.get("model"),
                    "preset": info.get("preset"),
                    "mode": info.get("mode"),
                    "batch": info.get("batch"),
                    "dtype": info.get("dtype"),
                    "compiled": info.get("compiled"),
                    "formulation": _formulation(info.get("fold_linear_ops")),
                    "device": info.get("device"),
                    "median_s": median,
                    "iqr_s": as_float(stats.get("iqr")),
                    "images_per_s": info.get("images_per_s"),
                    "flop_per_s": as_float(flop) / median if flop is not None and median > 0 else None,
                    "mfu": info.get("mfu"),
                    "peak_memory_bytes": info.get("peak_memory_bytes"),
                    "compile_s": info.get("compile_s"),
                    "graph_breaks": info.get("graph_breaks"),
                    "file": bench_file.path,
                }
            )
    frame = pd.DataFrame(rows, columns=THROUGHPUT_COLUMNS)
    if len(frame):
        frame["dtype"] = frame["dtype"].map(norm_dtype)
        frame["compiled"] = frame["compiled"].map(lambda v: bool(v) if v is not None else False)
        for col in ("median_s", "iqr_s", "images_per_s", "flop_per_s", "mfu", "peak_memory_bytes", "compile_s"):
            frame[col] = frame[col].map(as_float)
    return frame


# What must match for two throughput rows to be a like-for-like pair.
_PAIR_KEYS = ("source", "model", "preset", "mode", "batch", "dtype", "compiled", "formulation", "device")


# The like-for-like pair tables: (table name, column that differs, base value, caption, display names).
_PAIR_TABLES: tuple[tuple[str, str, Any, str, dict[str, str]], ...] = (
    (
        "eager_vs_compiled",
        "compiled",
        False,
        "Eager vs torch.compile (median step)",
        {"False": "eager", "True": "compiled"},
    ),
    ("fp32_vs_lowp", "dtype", "fp32", "fp32 vs bf16/fp16 autocast (median step)", {}),
    (
        "folded_vs_unfolded",
        "formulation",
        "unfolded",
        "Folded cores vs the authors' step-by-step formulation (median step; same parameters and function)",
        {"unfolded": "authors' formulation", "folded": "folded"},
    ),
)


def pair_frame(throughput: pd.DataFrame, column: str, base: Any) -> pd.DataFrame:
    """Median step time side by side across ``column`` (e.g. compiled, dtype), with speed-up over ``base``.

    Rows match on every other identifying field, so only like-for-like pairs are compared; rows
    without the ``base`` value or without any other value are dropped. Column values become strings
    (``"False"``/``"True"`` for ``compiled``).
    """
    keys = [k for k in _PAIR_KEYS if k != column]
    if throughput.empty:
        return pd.DataFrame()
    frame = throughput.copy()
    # A batch column holding a None somewhere turns float; keep "16", not "16.0".
    frame["batch"] = frame["batch"].map(lambda b: str(int(b)) if pd.notna(b) else "nan")
    frame[[*keys, column]] = frame[[*keys, column]].astype(str)
    wide = frame.pivot_table(index=keys, columns=column, values="median_s", aggfunc="median")
    base = str(base)
    if base not in wide.columns:
        return pd.DataFrame()
    others = [c for c in wide.columns if c != base]
    if not others:
        return pd.DataFrame()
    wide = wide[wide[base].notna() & wide[others].notna().any(axis=1)]
    # Values that only appeared in rows without a pair (e.g. "default") leave empty columns.
    wide = wide.dropna(axis=1, how="all")
    others = [c for c in wide.columns if c != base]
    out = wide.reset_index()
    out.columns = [str(c) for c in out.columns]
    for other in others:
        out[f"speedup_{other}"] = out[base] / out[other]
    return out.reset_index(drop=True)


def flops_frame(results: ResultSet) -> pd.DataFrame:
    rows = []
    for costs in results.of_kind("costs"):
        for model, entry in (costs.doc.get("flops") or {}).items():
            if not isinstance(entry, dict):
                continue
            fwd = as_float(entry.get("forward_per_scene"))
            macs = as_float(entry.get("fvcore_forward_macs_per_scene"))
            rows.append(
                {
                    "model": entry.get("model", model),
                    "preset": entry.get("preset", costs.doc.get("preset")),
                    "forward_gflop_per_scene": fwd / 1e9,
                    "train_gflop_per_scene": as_float(entry.get("train_per_scene")) / 1e9,
                    "infer_gflop_per_scene": as_float(entry.get("infer_per_scene")) / 1e9,
                    # Older costs files lack the authors' formulation: NaN, shown as a dash.
                    "authors_train_gflop_per_scene": as_float(entry.get("authors_train_per_scene")) / 1e9,
                    "fvcore_forward_gmac_per_scene": macs / 1e9,
                    "flopcounter_over_2x_fvcore": fwd / (2 * macs) if macs else math.nan,
                    "file": costs.path,
                }
            )
    return pd.DataFrame(rows)


def per_module_frame(results: ResultSet, section: str, value_name: str) -> pd.DataFrame:
    """``costs[section][model]['per_module']`` as rows (model, module, ...)."""
    frames = []
    for costs in results.of_kind("costs"):
        per_model = {
            m: e.get("per_module")
            for m, e in (costs.doc.get(section) or {}).items()
            if isinstance(e, dict) and e.get("per_module")
        }
        if not per_model:
            continue
        frame = flatten_nested(
            {
                m: {mod: (v if isinstance(v, dict) else {value_name: v}) for mod, v in pm.items()}
                for m, pm in per_model.items()
            },
            ["model", "module"],
        )
        frame["file"] = costs.path
        frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def generic_frame(results: ResultSet, section: str, levels: list[str]) -> pd.DataFrame:
    frames = []
    for costs in results.of_kind("costs"):
        data = costs.doc.get(section)
        if not data:
            continue
        frame = flatten_nested(data, levels)
        if len(frame):
            frame["file"] = costs.path
            frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _throughput_display(frame: pd.DataFrame) -> pd.DataFrame:
    spread = frame["iqr_s"] / frame["median_s"]
    return pd.DataFrame(
        {
            "source": frame["source"],
            "model": frame["model"].map(model_label),
            "preset": frame["preset"].astype(str),
            "mode": frame["mode"].astype(str),
            "batch": frame["batch"].map(F.fmt_int),
            "dtype": frame["dtype"],
            "eager / compiled": frame["compiled"].map(lambda c: "compiled" if c else "eager"),
            "median step (ms)": frame["median_s"].map(F.fmt_ms),
            "IQR / median": spread.map(F.fmt_pct),
            "images/s": frame["images_per_s"].map(F.fmt_float),
            "GFLOP/s": (frame["flop_per_s"] / 1e9).map(F.fmt_float),
            "MFU": frame["mfu"].map(F.fmt_pct),
            "peak memory (MiB)": frame["peak_memory_bytes"].map(lambda b: F.fmt_float(F.mib(b), 0)),
            "compile (s)": frame["compile_s"].map(F.fmt_float),
            "graph breaks": frame["graph_breaks"].map(F.fmt_int),
        }
    )


def _pair_display(pairs: pd.DataFrame, column: str, base: str, names: dict[str, str]) -> pd.DataFrame:
    keys = [k for k in _PAIR_KEYS if k != column and k in pairs]
    out = pairs[keys].copy()
    out["model"] = out["model"].map(model_label)
    if "compiled" in out:
        out["compiled"] = out["compiled"].map(lambda c: "compiled" if c == "True" else "eager")
    for col in pairs.columns:
        if col in keys or col.startswith("speedup_"):
            continue
        out[f"{names.get(col, col)} (ms)"] = pairs[col].map(F.fmt_ms)
    for col in pairs.columns:
        if col.startswith("speedup_"):
            other = col.removeprefix("speedup_")
            out[f"speed-up {names.get(other, other)} vs {names.get(base, base)}"] = pairs[col].map(
                lambda v: F.MISSING if pd.isna(v) else f"{v:.2f}x"
            )
    return out


def build(results: ResultSet, ctx: ReportContext) -> Section:
    section = Section("Costs", "costs")
    costs_files = results.of_kind("costs")
    throughput = throughput_frame(results)
    if not costs_files and throughput.empty:
        section.blocks.append(Note("No costs.json and no pytest-benchmark JSON: this section is omitted."))
        return section
    section.blocks.append(
        Paragraph(
            "Units: GFLOP = 10⁹ floating-point operations, counted as **2 FLOP per multiply-add** by "
            "`torch.utils.flop_counter.FlopCounterMode` (convolutions and matmuls, backward included for training); "
            "fvcore counts multiply-adds (GMAC, forward only). Times are medians after warm-up with the device "
            "synchronised; spread = IQR / median. Memory in MiB (2²⁰ bytes). MFU = achieved FLOP/s ÷ the dense "
            "matmul peak measured on the same device in the same run."
        )
    )
    for costs in costs_files:
        peak = costs.doc.get("matmul_peak")
        if isinstance(peak, dict) and peak:
            parts = [
                f"{k.split('_')[0]} {F.fmt_float(as_float(v) / 1e9)} GFLOP/s"
                for k, v in peak.items()
                if k.endswith("_flop_per_s") and v is not None
            ]
            if peak.get("n"):
                parts.append(f"{peak['n']}² matrices")
            section.blocks.append(
                Paragraph(
                    f"Dense matmul peak on `{costs.doc.get('device', '?')}`: {', '.join(parts)} ({ctx.rel(costs.path)})."
                )
            )

    per_module = per_module_frame(results, "params", "total")
    if len(per_module):
        disp = per_module.drop(columns=["file"]).copy()
        disp["model"] = disp["model"].map(model_label)
        section.blocks.append(
            ctx.table(
                "params_per_module",
                per_module.drop(columns=["file"]),
                "Parameters per module (all / used by the objective)",
                per_module["file"],
                display=display_generic(disp),
            )
        )

    flops = flops_frame(results)
    if len(flops):
        section.blocks.append(
            ctx.table(
                "flops",
                flops.drop(columns=["file"]),
                "FLOPs per scene (GFLOP, 2 FLOP per multiply-add; fvcore in GMAC)",
                flops["file"],
                display=pd.DataFrame(
                    {
                        "model": flops["model"].map(model_label),
                        "preset": flops["preset"].astype(str),
                        "forward (GFLOP/scene)": flops["forward_gflop_per_scene"].map(lambda v: F.fmt_float(v, 2)),
                        "forward + backward (GFLOP/scene)": flops["train_gflop_per_scene"].map(
                            lambda v: F.fmt_float(v, 2)
                        ),
                        "inference (GFLOP/scene)": flops["infer_gflop_per_scene"].map(lambda v: F.fmt_float(v, 2)),
                        "forward + backward, authors' formulation (GFLOP/scene)": flops[
                            "authors_train_gflop_per_scene"
                        ].map(lambda v: F.fmt_float(v, 2)),
                        "fvcore forward (GMAC/scene)": flops["fvcore_forward_gmac_per_scene"].map(
                            lambda v: F.fmt_float(v, 3)
                        ),
                        "FlopCounter ÷ (2 × fvcore)": flops["flopcounter_over_2x_fvcore"].map(
                            lambda v: F.fmt_float(v, 4)
                        ),
                    }
                ),
            )
        )
        flops_mod = per_module_frame(results, "flops", "forward")
        if len(flops_mod):
            raw = flops_mod.drop(columns=["file"])
            disp = raw.copy()
            disp["model"] = disp["model"].map(model_label)
            for col in disp.columns[2:]:
                disp[col] = disp[col].map(lambda v: F.fmt_float(as_float(v) / 1e9, 3))
            disp.columns = [*disp.columns[:2], *[f"{c} (GFLOP)" for c in disp.columns[2:]]]
            section.blocks.append(
                ctx.table("flops_per_module", raw, "FLOPs per module and scene", flops_mod["file"], display=disp)
            )

    memory = generic_frame(results, "memory", ["model", "mode"])
    if len(memory):
        raw = memory.drop(columns=["file"])
        methods = sorted({str(m) for m in raw.get("method", pd.Series(dtype=object)).dropna()})
        disp = bytes_to_mib_columns(raw.drop(columns=[c for c in ("method",) if c in raw]))
        if "model" in disp:
            disp["model"] = disp["model"].map(model_label)
        section.blocks.append(
            ctx.table("memory", raw, "Peak memory (MiB)", memory["file"], display=display_generic(disp))
        )
        if methods:
            section.blocks.append(Paragraph("Memory measured by: " + "; ".join(methods) + "."))

    if len(throughput):
        files = list(dict.fromkeys(throughput["file"]))
        section.blocks.append(
            ctx.table(
                "throughput",
                throughput.drop(columns=["file"]),
                "Step time, throughput and MFU",
                files,
                display=_throughput_display(throughput),
            )
        )
        pairs = {}
        for name, column, base, caption, names in _PAIR_TABLES:
            pairs[column] = pair_frame(throughput, column, base)
            if len(pairs[column]):
                section.blocks.append(
                    ctx.table(
                        name,
                        pairs[column],
                        caption,
                        files,
                        display=_pair_display(pairs[column], column, str(base), names),
                    )
                )
        if not len(pairs["compiled"]) and not len(pairs["dtype"]):
            section.blocks.append(Note("No like-for-like eager/compiled or fp32/bf16 pairs among the throughput rows."))

    numerics = generic_frame(results, "numerics", ["model", "path"])
    if len(numerics):
        raw = numerics.drop(columns=["file"])
        disp = raw.copy()
        if "model" in disp:
            disp["model"] = disp["model"].map(model_label)
        section.blocks.append(
            ctx.table(
                "numerics",
                raw,
                "Numerics of the fast paths (errors against an fp64 reference)",
                numerics["file"],
                display=display_generic(disp),
            )
        )
    return section


def scaling_frame(results: ResultSet) -> pd.DataFrame:
    rows = []
    for costs in results.of_kind("costs"):
        for row in costs.doc.get("scaling") or []:
            rows.append({**row, "file": costs.path})
    frame = pd.DataFrame(rows)
    if len(frame):
        frame["step_s"] = frame["step_s"].map(as_float)
        frame["peak_memory_mib"] = frame.get("peak_memory_bytes", pd.Series(np.nan, index=frame.index)).map(F.mib)
    return frame


def _scaling_display(frame: pd.DataFrame, axes_order: list[str]) -> pd.DataFrame:
    """One row per (axis, value), models side by side: step time in ms, peak memory in MiB."""
    wide = frame.pivot_table(
        index=["axis", "value"], columns="label", values=["step_s", "peak_memory_mib"], aggfunc="median"
    )
    wide = wide.reindex(sorted(wide.index, key=lambda k: (axes_order.index(k[0]), k[1])))
    out = pd.DataFrame({"axis": [a for a, _ in wide.index], "value": [F.fmt_int(v) for _, v in wide.index]})
    for metric, unit, fmt in (("step_s", "step (ms)", F.fmt_ms), ("peak_memory_mib", "peak memory (MiB)", F.fmt_float)):
        if metric not in wide.columns.get_level_values(0):
            continue
        for label in wide[metric].columns:
            out[f"{label}: {unit}"] = [fmt(v) for v in wide[metric][label]]
    return out


def build_scaling(results: ResultSet, ctx: ReportContext) -> Section:
    from gqnbench.report.plotting import palette_for, plt, sns

    section = Section("Scaling", "scaling")
    frame = scaling_frame(results)
    if frame.empty:
        section.blocks.append(Note("No scaling rows in costs.json: this section is omitted."))
        return section
    frame["label"] = frame["model"].map(model_label)
    axes_order = [a for a in ("L", "image_size", "batch", "M") if a in set(frame["axis"])]
    axes_order += [a for a in dict.fromkeys(frame["axis"]) if a not in axes_order]
    names = {
        "L": "generation steps L",
        "image_size": "image size (pixels)",
        "batch": "batch (scenes)",
        "M": "context views M",
    }
    metrics = [("step_s", "step time (s)"), ("peak_memory_mib", "peak memory (MiB)")]
    metrics = [(c, n) for c, n in metrics if frame[c].notna().any()]
    fig, grid = plt.subplots(
        len(metrics), len(axes_order), figsize=(3.3 * len(axes_order), 2.9 * len(metrics)), squeeze=False
    )
    palette = palette_for(list(dict.fromkeys(frame["label"])))
    for r, (col, ylabel) in enumerate(metrics):
        for c, axis in enumerate(axes_order):
            ax = grid[r][c]
            sub = frame[frame["axis"] == axis]
            sns.lineplot(
                data=sub, x="value", y=col, hue="label", palette=palette, marker="o", ax=ax, legend=(r == 0 and c == 0)
            )
            ax.set_xlabel(names.get(axis, axis))
            ax.set_ylabel(ylabel if c == 0 else "")
            if r == 0 and c == 0:
                ax.legend(title=None, fontsize=8)
    fig.tight_layout()
    files = list(dict.fromkeys(frame["file"]))
    section.blocks.append(
        ctx.figure(
            "scaling",
            fig,
            "Cost as work grows: training-step time and peak memory against L, image size, batch and M.",
            files,
        )
    )
    raw = frame.drop(columns=["file", "label"])
    section.blocks.append(
        ctx.table(
            "scaling",
            raw,
            "Scaling data",
            files,
            display=_scaling_display(frame, axes_order),
        )
    )
    return section
