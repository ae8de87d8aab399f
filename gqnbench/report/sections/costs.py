"""Costs: parameters per module, FLOPs, memory, step time, images/s, MFU, eager vs compiled, fp32 vs bf16.

Reads the harness's ``costs`` files and pytest-benchmark JSON (whose ``extra_info`` carries the
same fields as a harness throughput row). Units: GFLOP = 1e9 floating-point operations counted
as 2 FLOP per multiply-add (``torch.utils.flop_counter.FlopCounterMode``); fvcore's count is in
multiply-adds (GMAC); memory in MiB (2**20 bytes); time in milliseconds unless marked.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd

from gqnbench.report import formatting as F
from gqnbench.report.context import ReportContext
from gqnbench.report.document import Note, Paragraph, Section
from gqnbench.report.formatting import model_label
from gqnbench.report.inputs import PYTEST_BENCHMARK, ResultFile, ResultSet
from gqnbench.report.tables import bytes_to_mib_columns, display_generic, flatten_nested
from gqnbench.results import as_float
from gqnbench.schema.costs import CostsDoc, ThroughputRow

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
    "fast_path",
    "formulation",
    "device",
    "median_s",
    "iqr_s",
    "images_per_s",
    "flop_per_s",
    "mfu",
    "mfu_peak",
    "peak_memory_bytes",
    "nvml_used_bytes",
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


def costs_docs(results: ResultSet) -> list[tuple[ResultFile, CostsDoc]]:
    """Every costs file with its typed document."""
    return [(f, f.as_(CostsDoc)) for f in results.of_kind("costs")]


def _fast_spec(record: Any) -> str:
    """A row's fast path as its spec string; rows from before the fast path ran the plain step ("off")."""
    return str(record.get("spec", "off")) if isinstance(record, dict) else "off"


def _harness_row(path: Any, doc: CostsDoc, row: ThroughputRow) -> dict[str, Any]:
    extra = row.extras()
    return {
        "source": "harness",
        "benchmark": None,
        "model": row.model,
        "preset": row.preset,
        "mode": row.mode,
        "batch": row.batch,
        "dtype": row.dtype,
        "compiled": row.compiled,
        "fast_path": _fast_spec(extra.get("fast_path")),
        "formulation": _formulation(row.fold_linear_ops),
        # A row without its own device was measured on the file's.
        "device": row.device if row.device is not None else doc.device,
        "median_s": row.median_s,
        "iqr_s": row.iqr_s,
        "images_per_s": row.images_per_s,
        "flop_per_s": row.flop_per_s,
        "mfu": row.mfu,
        # Rows from before the peak was recorded were divided by their own dtype's peak.
        "mfu_peak": extra.get("mfu_peak") or (row.dtype if row.mfu is not None else None),
        "peak_memory_bytes": row.peak_memory_bytes,
        "nvml_used_bytes": extra.get("nvml_used_bytes"),
        "compile_s": row.compile_s,
        "graph_breaks": row.graph_breaks,
        "file": path,
    }


def _benchmark_row(path: Any, bench: dict[str, Any]) -> dict[str, Any]:
    """A pytest-benchmark entry (its own JSON format; ``extra_info`` holds a harness row's fields)."""
    info = bench.get("extra_info") or {}
    median = as_float(bench["stats"]["median"])
    flop = info.get("flop_per_step")
    return {
        "source": "pytest-benchmark",
        "benchmark": bench["fullname"],
        **{k: info.get(k) for k in ("model", "preset", "mode", "batch", "dtype", "compiled")},
        "fast_path": _fast_spec(info.get("fast_path")),
        "formulation": _formulation(info.get("fold_linear_ops")),
        "device": info.get("device"),
        "median_s": median,
        "iqr_s": as_float(bench["stats"].get("iqr")),
        "images_per_s": info.get("images_per_s"),
        "flop_per_s": as_float(flop) / median if flop is not None and median > 0 else None,
        **{k: info.get(k) for k in ("mfu", "peak_memory_bytes", "compile_s", "graph_breaks", "nvml_used_bytes")},
        "mfu_peak": info.get("mfu_peak") or (norm_dtype(info.get("dtype")) if info.get("mfu") is not None else None),
        "file": path,
    }


def throughput_frame(results: ResultSet) -> pd.DataFrame:
    """Step-time rows from costs files (source 'harness') and pytest-benchmark JSON (source 'pytest-benchmark')."""
    rows = [_harness_row(f.path, doc, row) for f, doc in costs_docs(results) for row in doc.throughput or []]
    rows += [_benchmark_row(f.path, b) for f in results.of_kind(PYTEST_BENCHMARK) for b in f.doc["benchmarks"]]
    frame = pd.DataFrame(rows, columns=THROUGHPUT_COLUMNS)
    if len(frame):
        frame["dtype"] = frame["dtype"].map(norm_dtype)
        frame["compiled"] = frame["compiled"].map(lambda v: bool(v) if v is not None else False)
        numbers = ("median_s", "iqr_s", "images_per_s", "flop_per_s", "mfu", "peak_memory_bytes", "nvml_used_bytes")
        for col in (*numbers, "compile_s"):
            frame[col] = frame[col].map(as_float)
    return frame


# What must match for two throughput rows to be a like-for-like pair.
_PAIR_KEYS = ("source", "model", "preset", "mode", "batch", "dtype", "compiled", "fast_path", "formulation", "device")


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
        "fast_vs_plain",
        "fast_path",
        "off",
        "The step's fast path (gqnbench.step.FastPath) vs the plain step (median step)",
        {"off": "plain step"},
    ),
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
    for f, doc in costs_docs(results):
        for model, entry in (doc.flops or {}).items():
            fwd = as_float(entry.forward_per_scene)
            macs = as_float(entry.fvcore_forward_macs_per_scene)
            rows.append(
                {
                    "model": model,
                    "preset": doc.preset,
                    "forward_gflop_per_scene": fwd / 1e9,
                    "train_gflop_per_scene": as_float(entry.train_per_scene) / 1e9,
                    "infer_gflop_per_scene": as_float(entry.infer_per_scene) / 1e9,
                    # Older costs files lack the authors' formulation: NaN, shown as a dash.
                    "authors_train_gflop_per_scene": as_float(entry.authors_train_per_scene) / 1e9,
                    "fvcore_forward_gmac_per_scene": macs / 1e9,
                    "flopcounter_over_2x_fvcore": fwd / (2 * macs) if macs else math.nan,
                    "file": f.path,
                }
            )
    return pd.DataFrame(rows)


def per_module_frame(results: ResultSet, section: str, value_name: str) -> pd.DataFrame:
    """``costs[section][model].per_module`` (``section`` is ``params`` or ``flops``) as rows (model, module, ...)."""
    frames = []
    for f, doc in costs_docs(results):
        entries = doc.params if section == "params" else doc.flops
        per_model = {m: e.per_module for m, e in (entries or {}).items() if e.per_module}
        if not per_model:
            continue
        frame = flatten_nested(
            {
                m: {mod: (v if isinstance(v, dict) else {value_name: v}) for mod, v in pm.items()}
                for m, pm in per_model.items()
            },
            ["model", "module"],
        )
        frame["file"] = f.path
        frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def generic_frame(results: ResultSet, section: str, levels: list[str]) -> pd.DataFrame:
    """An open-ended costs section (``memory``, ``numerics``) flattened to rows along ``levels``."""
    frames = []
    for f, doc in costs_docs(results):
        data = getattr(doc, section)
        if not data:
            continue
        frame = flatten_nested(data, levels)
        if len(frame):
            frame["file"] = f.path
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
            "fast path": frame["fast_path"].fillna("off").astype(str),
            "median step (ms)": frame["median_s"].map(F.fmt_ms),
            "IQR / median": spread.map(F.fmt_pct),
            "images/s": frame["images_per_s"].map(F.fmt_float),
            "GFLOP/s": (frame["flop_per_s"] / 1e9).map(F.fmt_float),
            "MFU": frame["mfu"].map(F.fmt_pct),
            "MFU against": frame["mfu_peak"].map(lambda v: F.MISSING if v is None or pd.isna(v) else f"{v} peak"),
            "peak memory (MiB)": frame["peak_memory_bytes"].map(lambda b: F.fmt_float(F.mib(b), 0)),
            "GPU in use, NVML (MiB)": frame["nvml_used_bytes"].map(lambda b: F.fmt_float(F.mib(b), 0)),
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


UNITS = (
    "Units: GFLOP = 10⁹ floating-point operations, counted as **2 FLOP per multiply-add** by "
    "`torch.utils.flop_counter.FlopCounterMode` (convolutions and matmuls, backward included for training); "
    "fvcore counts multiply-adds (GMAC, forward only). Times are medians after warm-up with the device "
    "synchronised; spread = IQR / median. Memory in MiB (2²⁰ bytes). MFU = achieved FLOP/s ÷ the dense "
    "matmul peak of the arithmetic the step used, measured on the same device in the same run: an fp32 step "
    "on a GPU whose convolutions ran as TF32 (cuDNN's default) is divided by the TF32 matmul peak "
    '(column "MFU against"). Peak memory on a GPU is the step\'s own: what it holds between steps '
    "(weights, gradients, optimizer state, batch), the most it allocates beyond that, and its CUDA graphs' "
    "memory pools; NVML's figure is all the device memory in use after the step. The fast path is the "
    'step\'s `train.fast_path` (gqnbench.step.FastPath); "off" is the plain step.'
)


def _peak_paragraphs(results: ResultSet, ctx: ReportContext) -> list[Paragraph]:
    out = []
    for f, doc in costs_docs(results):
        peak = doc.matmul_peak
        if peak is None or not peak.model_fields_set:
            continue
        parts = [f"{dtype} {F.fmt_float(rate / 1e9)} GFLOP/s" for dtype, rate in peak.rates().items()]
        if peak.n:
            parts.append(f"{peak.n}² matrices")
        device = doc.device if doc.device is not None else "?"
        out.append(Paragraph(f"Dense matmul peak on `{device}`: {', '.join(parts)} ({ctx.rel(f.path)})."))
    return out


def _params_blocks(results: ResultSet, ctx: ReportContext) -> list:
    per_module = per_module_frame(results, "params", "total")
    if not len(per_module):
        return []
    disp = per_module.drop(columns=["file"]).copy()
    disp["model"] = disp["model"].map(model_label)
    caption = "Parameters per module (all / used by the objective)"
    raw = per_module.drop(columns=["file"])
    return [ctx.table("params_per_module", raw, caption, per_module["file"], display=display_generic(disp))]


def _flops_display(flops: pd.DataFrame) -> pd.DataFrame:
    def fmt(column: str, digits: int) -> pd.Series:
        return flops[column].map(lambda v: F.fmt_float(v, digits))

    return pd.DataFrame(
        {
            "model": flops["model"].map(model_label),
            "preset": flops["preset"].astype(str),
            "forward (GFLOP/scene)": fmt("forward_gflop_per_scene", 2),
            "forward + backward (GFLOP/scene)": fmt("train_gflop_per_scene", 2),
            "inference (GFLOP/scene)": fmt("infer_gflop_per_scene", 2),
            "forward + backward, authors' formulation (GFLOP/scene)": fmt("authors_train_gflop_per_scene", 2),
            "fvcore forward (GMAC/scene)": fmt("fvcore_forward_gmac_per_scene", 3),
            "FlopCounter ÷ (2 × fvcore)": fmt("flopcounter_over_2x_fvcore", 4),
        }
    )


def _flops_per_module_block(results: ResultSet, ctx: ReportContext) -> list:
    flops_mod = per_module_frame(results, "flops", "forward")
    if not len(flops_mod):
        return []
    raw = flops_mod.drop(columns=["file"])
    disp = raw.copy()
    disp["model"] = disp["model"].map(model_label)
    for col in disp.columns[2:]:
        disp[col] = disp[col].map(lambda v: F.fmt_float(as_float(v) / 1e9, 3))
    disp.columns = [*disp.columns[:2], *[f"{c} (GFLOP)" for c in disp.columns[2:]]]
    return [ctx.table("flops_per_module", raw, "FLOPs per module and scene", flops_mod["file"], display=disp)]


def _flops_blocks(results: ResultSet, ctx: ReportContext) -> list:
    flops = flops_frame(results)
    if not len(flops):
        return []
    caption = "FLOPs per scene (GFLOP, 2 FLOP per multiply-add; fvcore in GMAC)"
    table = ctx.table("flops", flops.drop(columns=["file"]), caption, flops["file"], display=_flops_display(flops))
    return [table, *_flops_per_module_block(results, ctx)]


def _memory_blocks(results: ResultSet, ctx: ReportContext) -> list:
    memory = generic_frame(results, "memory", ["model", "mode"])
    if not len(memory):
        return []
    raw = memory.drop(columns=["file"])
    methods = sorted({str(m) for m in raw.get("method", pd.Series(dtype=object)).dropna()})
    disp = bytes_to_mib_columns(raw.drop(columns=[c for c in ("method",) if c in raw]))
    if "model" in disp:
        disp["model"] = disp["model"].map(model_label)
    blocks: list = [ctx.table("memory", raw, "Peak memory (MiB)", memory["file"], display=display_generic(disp))]
    if methods:
        blocks.append(Paragraph("Memory measured by: " + "; ".join(methods) + "."))
    return blocks


def _throughput_blocks(throughput: pd.DataFrame, ctx: ReportContext) -> list:
    if not len(throughput):
        return []
    files = list(dict.fromkeys(throughput["file"]))
    raw = throughput.drop(columns=["file"])
    blocks: list = [
        ctx.table("throughput", raw, "Step time, throughput and MFU", files, display=_throughput_display(throughput))
    ]
    pairs = {}
    for name, column, base, caption, names in _PAIR_TABLES:
        pairs[column] = pair_frame(throughput, column, base)
        if len(pairs[column]):
            display = _pair_display(pairs[column], column, str(base), names)
            blocks.append(ctx.table(name, pairs[column], caption, files, display=display))
    if not len(pairs["compiled"]) and not len(pairs["dtype"]):
        blocks.append(Note("No like-for-like eager/compiled or fp32/bf16 pairs among the throughput rows."))
    return blocks


def precision_frame(results: ResultSet) -> pd.DataFrame:
    """What ``train.amp = auto`` chose, per measurement: the main job's, else each run's own (one row per model)."""
    measured: dict[str, tuple[dict[str, Any], Any]] = {}
    sources = results.of_kind("main_job") or results.of_kind("training_run")
    for f in sources:
        choice = f.doc.get("precision") if f.kind == "main_job" else f.doc.get("precision_choice")
        if isinstance(choice, dict) and choice.get("source") != "checkpoint":
            measured.setdefault(json.dumps(choice, sort_keys=True), (choice, f.path))
    rows = []
    for choice, path in measured.values():
        for model, times in (choice.get("step_s") or {}).items():
            rows.append(
                {
                    "model": model,
                    "fp32_step_s": as_float(times.get("fp32")),
                    "bf16_step_s": as_float(times.get("bf16")),
                    "bf16_numerics_passed": (choice.get("numerics_passed") or {}).get(model),
                    "chosen": choice.get("chosen"),
                    "reason": choice.get("reason"),
                    "device": choice.get("device"),
                    "threads": choice.get("threads"),
                    "batch": choice.get("batch"),
                    "measured_by": choice.get("source"),
                    "file": path,
                }
            )
    return pd.DataFrame(rows)


def _precision_blocks(results: ResultSet, ctx: ReportContext) -> list:
    frame = precision_frame(results)
    if not len(frame):
        return []
    disp = pd.DataFrame(
        {
            "model": frame["model"].map(model_label),
            "fp32 step (ms)": frame["fp32_step_s"].map(F.fmt_ms),
            "bf16 step (ms)": frame["bf16_step_s"].map(F.fmt_ms),
            "bf16 vs fp64 check": frame["bf16_numerics_passed"].map(lambda v: "passed" if v else "failed"),
            "trains in": frame["chosen"],
            "measured": [f"{d}, {t} thread(s), batch {b}, by {m}" for d, t, b, m in
                         zip(frame["device"], frame["threads"], frame["batch"], frame["measured_by"])],
        }
    )  # fmt: skip
    caption = "Training precision chosen by measurement (train.amp = auto; median step, interleaved rounds)"
    raw = frame.drop(columns=["file"])
    reasons = "; ".join(dict.fromkeys(str(r) for r in frame["reason"]))
    note = Paragraph(
        f"`train.amp = auto` times the training step in fp32 and bf16 side by side on the host that trains and "
        f"chooses bf16 only where it is faster for every model and passes its fp64 check: {reasons}."
    )
    return [ctx.table("precision_choice", raw, caption, frame["file"], display=disp), note]


def _numerics_blocks(results: ResultSet, ctx: ReportContext) -> list:
    numerics = generic_frame(results, "numerics", ["model", "path"])
    if not len(numerics):
        return []
    raw = numerics.drop(columns=["file"])
    disp = raw.copy()
    if "model" in disp:
        disp["model"] = disp["model"].map(model_label)
    caption = "Numerics of the fast paths (errors against an fp64 reference)"
    return [ctx.table("numerics", raw, caption, numerics["file"], display=display_generic(disp))]


def build(results: ResultSet, ctx: ReportContext) -> Section:
    section = Section("Costs", "costs")
    throughput = throughput_frame(results)
    if not results.of_kind("costs") and throughput.empty:
        section.blocks.append(Note("No costs.json and no pytest-benchmark JSON: this section is omitted."))
        section.blocks += _precision_blocks(results, ctx)
        return section
    section.blocks.append(Paragraph(UNITS))
    section.blocks += _peak_paragraphs(results, ctx)
    section.blocks += _params_blocks(results, ctx)
    section.blocks += _flops_blocks(results, ctx)
    section.blocks += _memory_blocks(results, ctx)
    section.blocks += _throughput_blocks(throughput, ctx)
    section.blocks += _precision_blocks(results, ctx)
    section.blocks += _numerics_blocks(results, ctx)
    return section


def scaling_frame(results: ResultSet) -> pd.DataFrame:
    # Rows keep every field the harness wrote (the timing statistics are open-ended).
    rows = [{**row.model_dump(), "file": f.path} for f, doc in costs_docs(results) for row in doc.scaling or []]
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


_AXIS_NAMES = {
    "L": "generation steps L",
    "image_size": "image size (pixels)",
    "batch": "batch (scenes)",
    "M": "context views M",
}


def _scaling_figure(frame: pd.DataFrame, axes_order: list[str]) -> Any:
    """Step time and peak memory (rows) against each scaled axis (columns), one line per model."""
    from gqnbench.report.plotting import palette_for, plt, sns

    metrics = [("step_s", "step time (s)"), ("peak_memory_mib", "peak memory (MiB)")]
    metrics = [(c, n) for c, n in metrics if frame[c].notna().any()]
    fig, grid = plt.subplots(
        len(metrics), len(axes_order), figsize=(3.3 * len(axes_order), 2.9 * len(metrics)), squeeze=False
    )
    palette = palette_for(list(dict.fromkeys(frame["label"])))
    for r, (col, ylabel) in enumerate(metrics):
        for c, axis in enumerate(axes_order):
            ax = grid[r][c]
            first = r == 0 and c == 0
            sub = frame[frame["axis"] == axis]
            sns.lineplot(data=sub, x="value", y=col, hue="label", palette=palette, marker="o", ax=ax, legend=first)
            ax.set_xlabel(_AXIS_NAMES.get(axis, axis))
            ax.set_ylabel(ylabel if c == 0 else "")
            if first:
                ax.legend(title=None, fontsize=8)
    fig.tight_layout()
    return fig


def build_scaling(results: ResultSet, ctx: ReportContext) -> Section:
    section = Section("Scaling", "scaling")
    frame = scaling_frame(results)
    if frame.empty:
        section.blocks.append(Note("No scaling rows in costs.json: this section is omitted."))
        return section
    frame["label"] = frame["model"].map(model_label)
    axes_order = [a for a in ("L", "image_size", "batch", "M") if a in set(frame["axis"])]
    axes_order += [a for a in dict.fromkeys(frame["axis"]) if a not in axes_order]
    files = list(dict.fromkeys(frame["file"]))
    caption = "Cost as work grows: training-step time and peak memory against L, image size, batch and M."
    section.blocks.append(ctx.figure("scaling", _scaling_figure(frame, axes_order), caption, files))
    raw = frame.drop(columns=["file", "label"])
    display = _scaling_display(frame, axes_order)
    section.blocks.append(ctx.table("scaling", raw, "Scaling data", files, display=display))
    return section
