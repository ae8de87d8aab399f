"""Where the time goes: the phases of one training step, from ``profile`` results files.

Each case of a ``profile`` file (written by ``gqnbench profile`` and the main job's profile
stage, see :mod:`gqnbench.harness.profile`) is one model x precision x formulation: the
time of every labelled phase per step, its FLOPs, achieved FLOP/s and share of the matmul
peak measured in the same run, the profiler's overhead, the top operators by self time
and, on CUDA, the memory timeline's peak. This section reads only those files.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from gqnbench.report import formatting as F
from gqnbench.report.context import ReportContext
from gqnbench.report.document import Note, Paragraph, Section
from gqnbench.report.inputs import ResultFile, ResultSet
from gqnbench.report.study import model_label

# Reading order and display names; a plugin model's own phases keep their names.
PHASE_NAMES = {
    "representation": "representation",
    "inference_core": "inference core",
    "generation_core": "generation core",
    "heads": "heads",
    "loss": "loss (outside modules)",
    "other": "outside modules",
    "backward": "backward",
    "optimizer": "optimizer",
}
TOP_OPERATORS = 5


def _key(case: dict[str, Any]) -> tuple:
    return (
        case.get("model"),
        case.get("preset"),
        case.get("mode"),
        case.get("batch"),
        case.get("dtype"),
        case.get("formulation"),
        case.get("device"),
    )


def collect_cases(files: list[ResultFile]) -> tuple[list[tuple[ResultFile, dict[str, Any]]], int]:
    """Every case, the newest file winning when one case was profiled more than once; and how many were superseded."""
    latest: dict[tuple, tuple[ResultFile, dict[str, Any]]] = {}
    total = 0
    for f in sorted(files, key=lambda f: (str(f.doc.get("created")), str(f.path))):
        for case in f.doc.get("cases") or []:
            if isinstance(case, dict):
                latest[_key(case)] = (f, case)
                total += 1
    order = {"fp32": 0, "bf16": 1, "fp16": 2}
    cases = sorted(
        latest.values(),
        key=lambda fc: (
            str(fc[1].get("model")),
            fc[1].get("formulation") != "folded",
            order.get(str(fc[1].get("dtype")), 9),
        ),
    )
    return cases, total - len(cases)


# The harness's rule (gqnbench.harness.profile.noisy), restated here: the report never imports torch.
NOISY_NOTE = (
    "profiled and plain steps differ by more than half, or a plain step's spread is above 25%: "
    "the host was not quiet during this measurement; re-run it before trusting the phase times"
)


def noisy(case: dict[str, Any]) -> bool:
    ratio = (case.get("overhead") or {}).get("profiled_over_plain")
    spread = ((case.get("timing") or {}).get("plain") or {}).get("rel_iqr")
    return (ratio is not None and not 0.5 <= ratio <= 1.5) or (spread is not None and spread > 0.25)


def variant(case: dict[str, Any]) -> str:
    return f"{case.get('dtype')} {case.get('formulation', 'folded')}"


def phases_frame(cases: list[tuple[ResultFile, dict[str, Any]]]) -> pd.DataFrame:
    rows = []
    for _, case in cases:
        for r in case.get("phases") or []:
            rows.append(
                {
                    "model": case.get("model"),
                    "preset": case.get("preset"),
                    "batch": case.get("batch"),
                    "dtype": case.get("dtype"),
                    "formulation": case.get("formulation"),
                    "phase": r.get("phase"),
                    "time_s": r.get("time_s"),
                    "share": r.get("share"),
                    "flop": r.get("flop"),
                    "flop_per_s": r.get("flop_per_s"),
                    "share_of_peak": r.get("share_of_peak"),
                }
            )
    return pd.DataFrame(rows)


def furthest_below_peak(case: dict[str, Any]) -> dict[str, Any] | None:
    """The phase with counted FLOPs that runs furthest below the peak (lowest share of peak)."""
    rated = [r for r in case.get("phases") or [] if r.get("share_of_peak") is not None and r.get("flop")]
    return min(rated, key=lambda r: r["share_of_peak"]) if rated else None


def _phase_order(frame: pd.DataFrame) -> list[str]:
    """Known phases in reading order, a plugin model's own phases before the loss."""
    seen = set(frame["phase"])
    known = [p for p in PHASE_NAMES if p in seen]
    extra = sorted(p for p in seen if p not in PHASE_NAMES)
    at = next((i for i, p in enumerate(known) if p in ("loss", "other")), len(known))
    return known[:at] + extra + known[at:]


def _figure(frame: pd.DataFrame, ctx: ReportContext, sources: list) -> Any:
    from gqnbench.report.plotting import plt, sns

    models = list(dict.fromkeys(frame["model"]))
    phases = _phase_order(frame)
    colours = dict(zip(phases, sns.color_palette("tab10", len(phases)).as_hex()))
    bars = max(len(frame[frame["model"] == m][["dtype", "formulation"]].drop_duplicates()) for m in models)
    fig, axes = plt.subplots(len(models), 1, figsize=(8, 1.2 + 0.55 * bars * len(models)), squeeze=False)
    for ax, model in zip(axes[:, 0], models):
        sub = frame[frame["model"] == model]
        labels = list(dict.fromkeys(sub["dtype"] + " " + sub["formulation"]))
        left = [0.0] * len(labels)
        for phase in phases:
            widths = []
            for label in labels:
                d, form = label.split(" ", 1)
                hit = sub[(sub["dtype"] == d) & (sub["formulation"] == form) & (sub["phase"] == phase)]
                widths.append(float(hit["time_s"].sum()) * 1e3)
            ax.barh(labels, widths, left=left, color=colours[phase], label=PHASE_NAMES.get(phase, phase))
            left = [a + b for a, b in zip(left, widths)]
        ax.set_title(model_label(model))
        ax.set_xlabel("ms per training step (profiled)")
        ax.invert_yaxis()
    handles, names = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, names, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=4, frameon=False)
    fig.tight_layout()
    return ctx.figure(
        "profile_phases",
        fig,
        "Time per phase of one training step, per model (one bar per precision/formulation)",
        sources,
    )


def build(results: ResultSet, ctx: ReportContext) -> Section:
    section = Section("Where the time goes", "profile")
    files = results.of_kind("profile")
    cases, superseded = collect_cases(files)
    if not cases:
        section.blocks.append(
            Note(
                "No profile results among the inputs. `gqnbench profile --model gqn --preset cpu` writes one "
                "(phase table, trace and `profile.json`); the main job's profile stage profiles both models."
            )
        )
        return section
    sources = [f.path for f in files]
    frame = phases_frame(cases)
    devices = sorted({str(c.get("device")) for _, c in cases})
    steps = sorted({int(c.get("steps", 0)) for _, c in cases})
    section.blocks.append(
        Paragraph(
            "One training step split into phases by `torch.profiler.record_function` labels: forward hooks on each "
            "model's module groups switch the open label as execution enters or leaves the representation, the "
            "cores (their L steps summed) and the heads; the rest of the forward (sampling, KL, NLL) is the loss "
            "phase, and the step code labels backward and the optimizer. Exactly one label is open at a time, so "
            f"the phases add up to the step. Measured on {', '.join(devices)} over {'/'.join(map(str, steps))} "
            "profiled steps after warm-up; phase time is wall time on CPU and kernel time on CUDA. FLOPs are the "
            "FLOP harness's counts of the same module groups (2 per multiply-add, conv and matmul only: the loss "
            "and optimizer are elementwise and have no rate); share of peak divides the achieved FLOP/s by the "
            "dense matmul peak measured in the same run."
            + (
                f" {superseded} older profile(s) of the same cases were superseded by newer files."
                if superseded
                else ""
            )
        )
    )
    section.blocks.append(_figure(frame, ctx, sources))

    for model in dict.fromkeys(frame["model"]):
        sub = frame[frame["model"] == model].reset_index(drop=True)
        section.blocks.append(
            ctx.table(
                f"profile_phases_{model}",
                sub,
                f"{model_label(model)}: phases of one training step (`{sub['preset'].iloc[0]}` preset, batch "
                f"{sub['batch'].iloc[0]})",
                sources,
                display=pd.DataFrame(
                    {
                        "precision": sub["dtype"],
                        "formulation": sub["formulation"],
                        "phase": sub["phase"].map(lambda p: PHASE_NAMES.get(p, p)),
                        "ms/step": sub["time_s"].map(lambda v: F.fmt_ms(v, 1)),
                        "share of step": sub["share"].map(F.fmt_pct),
                        "GFLOP": sub["flop"].map(lambda v: F.fmt_float(None if v is None else v / 1e9, 3)),
                        "GFLOP/s": sub["flop_per_s"].map(lambda v: F.fmt_float(None if v is None else v / 1e9, 1)),
                        "share of peak": sub["share_of_peak"].map(F.fmt_pct),
                    }
                ),
            )
        )
        lows = []
        for _, case in cases:
            if case.get("model") != model:
                continue
            low = furthest_below_peak(case)
            if low is not None:
                lows.append(
                    f"{variant(case)}: **{PHASE_NAMES.get(low['phase'], low['phase'])}** "
                    f"({F.fmt_pct(low['share_of_peak'])} of the {case.get('dtype')} peak)"
                )
        if lows:
            section.blocks.append(
                Paragraph(f"{model_label(model)}, the phase furthest below the matmul peak: " + "; ".join(lows) + ".")
            )

    above = frame[frame["share_of_peak"].fillna(0) > 1.0]
    if len(above):
        section.blocks.append(
            Note(
                f"{len(above)} phase(s) above 100% of the matmul peak: the dense matmul is not this machine's fastest "
                "kernel (on an AMD EPYC host torch.mm's fp32 GEMM ran at about half the rate of the oneDNN "
                "convolutions, 200 vs 400 GFLOP/s), or the peak was measured while the host was busier than "
                "during those steps. Shares of peak compare phases with each other here, not with the hardware."
            )
        )

    loud = [f"{model_label(str(c.get('model')))} {variant(c)}" for _, c in cases if noisy(c)]
    if loud:
        section.blocks.append(Note(f"{', '.join(loud)}: {NOISY_NOTE}."))

    over = pd.DataFrame(
        [
            {
                "model": c.get("model"),
                "dtype": c.get("dtype"),
                "formulation": c.get("formulation"),
                "plain_s": ((c.get("timing") or {}).get("plain") or {}).get("median_s"),
                "labelled_s": ((c.get("timing") or {}).get("labelled") or {}).get("median_s"),
                "profiled_s": ((c.get("timing") or {}).get("profiled") or {}).get("median_s"),
                "plain_rel_iqr": ((c.get("timing") or {}).get("plain") or {}).get("rel_iqr"),
                "profiled_over_plain": (c.get("overhead") or {}).get("profiled_over_plain"),
                "labelled_over_plain": (c.get("overhead") or {}).get("labelled_over_plain"),
                "phase_sum_s": c.get("phase_sum_s"),
                "profiled_step_s": c.get("profiled_step_s"),
                "trace_file": c.get("trace_file"),
            }
            for _, c in cases
        ]
    )
    section.blocks.append(
        ctx.table(
            "profile_overhead",
            over,
            "The profiler's cost: plain, labelled (no profiler) and profiled step times measured in the same run "
            "(medians), and how much of the profiled step the phases cover",
            sources,
            display=pd.DataFrame(
                {
                    "model": over["model"].map(model_label),
                    "variant": over["dtype"] + " " + over["formulation"],
                    "plain (ms)": over["plain_s"].map(F.fmt_ms),
                    "labels only (ms)": over["labelled_s"].map(F.fmt_ms),
                    "profiled (ms)": over["profiled_s"].map(F.fmt_ms),
                    "profiler overhead": over["profiled_over_plain"].map(
                        lambda v: F.fmt_pct(None if v is None else v - 1, signed=True)
                    ),
                    "plain spread (IQR/median)": over["plain_rel_iqr"].map(F.fmt_pct),
                    "phases / profiled step": [
                        F.fmt_pct(a / b if a is not None and b else None)
                        for a, b in zip(over["phase_sum_s"], over["profiled_step_s"])
                    ],
                    "trace": over["trace_file"].map(lambda t: f"`{t}`" if t else F.MISSING),
                }
            ),
        )
    )

    ops = pd.DataFrame(
        [
            {
                "model": c.get("model"),
                "dtype": c.get("dtype"),
                "formulation": c.get("formulation"),
                "rank": i + 1,
                "operator": op.get("name"),
                "self_s": op.get("self_s"),
                "calls_per_step": op.get("calls_per_step"),
                "share": op.get("share"),
            }
            for _, c in cases
            for i, op in enumerate(c.get("top_operators") or [])
        ]
    )
    if len(ops):
        shown = ops[ops["rank"] <= TOP_OPERATORS].reset_index(drop=True)
        section.blocks.append(
            ctx.table(
                "profile_top_operators",
                ops,
                f"Top {TOP_OPERATORS} operators by self time per case (all recorded ones in the CSV)",
                sources,
                display=pd.DataFrame(
                    {
                        "model": shown["model"].map(model_label),
                        "variant": shown["dtype"] + " " + shown["formulation"],
                        "operator": shown["operator"].map(lambda n: f"`{n}`"),
                        "self ms/step": shown["self_s"].map(F.fmt_ms),
                        "calls/step": shown["calls_per_step"].map(lambda v: F.fmt_float(v, 0)),
                        "share of step": shown["share"].map(F.fmt_pct),
                    }
                ),
            )
        )

    mem_rows = []
    for _, c in cases:
        mem = c.get("memory")
        if not isinstance(mem, dict):
            continue
        held = sorted((mem.get("at_peak") or {}).items(), key=lambda kv: -(kv[1] or 0))
        mem_rows.append(
            {
                "model": c.get("model"),
                "dtype": c.get("dtype"),
                "formulation": c.get("formulation"),
                "device": c.get("device"),
                "peak_allocated_bytes": mem.get("peak_allocated_bytes"),
                "timeline_peak_bytes": mem.get("timeline_peak_bytes"),
                "held_at_peak": ", ".join(f"{k} {F.fmt_float(F.mib(v), 1)} MiB" for k, v in held[:4] if v)
                or mem.get("error")
                or F.MISSING,
            }
        )
    if mem_rows:
        mem = pd.DataFrame(mem_rows)
        section.blocks.append(
            ctx.table(
                "profile_memory",
                mem,
                "Memory: the allocator's peak over the profiled steps (CUDA) and the memory timeline's peak with "
                "what holds it (torch.profiler's categories)",
                sources,
                display=pd.DataFrame(
                    {
                        "model": mem["model"].map(model_label),
                        "variant": mem["dtype"] + " " + mem["formulation"],
                        "device": mem["device"],
                        "peak allocated (MiB)": mem["peak_allocated_bytes"].map(lambda v: F.fmt_float(F.mib(v), 1)),
                        "timeline peak (MiB)": mem["timeline_peak_bytes"].map(lambda v: F.fmt_float(F.mib(v), 1)),
                        "held at the peak": mem["held_at_peak"],
                    }
                ),
            )
        )
    elif all(str(c.get("device", "cpu")).startswith("cpu") for _, c in cases):
        section.blocks.append(Note("Measured on CPU: the CUDA memory timeline is recorded on CUDA runs only."))
    section.blocks.append(
        Note(
            "Open a trace in TensorBoard (`pip install -e '.[profile]'`, then `tensorboard --logdir <trace folder>`, "
            "PyTorch Profiler tab; the phase labels show in its Trace view) or drop the file on https://ui.perfetto.dev."
        )
    )
    return section
