"""Where the time goes: the phases of one training step, from ``profile`` results files.

Each case of a ``profile`` file (written by ``gqnbench profile`` and the main job's profile
stage, see :mod:`gqnbench.harness.profile`) is one model x precision x formulation: the
time of every labelled phase per step, its FLOPs, achieved FLOP/s and share of the matmul
peak measured in the same run, the profiler's overhead, the top operators by self time
and, on CUDA, the memory timeline's peak. This section reads only those files.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pandas as pd

from gqnbench.report import formatting as F
from gqnbench.report.context import ReportContext
from gqnbench.report.document import Note, Paragraph, Section
from gqnbench.report.formatting import model_label
from gqnbench.report.inputs import ResultFile, ResultSet
from gqnbench.schema.profile import Phase, ProfileCase, ProfileDoc

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


Case = tuple[ResultFile, ProfileCase]
_DTYPE_ORDER = {"fp32": 0, "bf16": 1, "fp16": 2}


def case_name(case: ProfileCase, with_place: bool) -> str:
    """A case's name in tables and bars: precision and formulation, plus preset and device when cases differ in them."""
    return f"{case.dtype} {case.formulation}" + (f" ({case.preset}, {case.device})" if with_place else "")


def _key(case: ProfileCase) -> tuple:
    return (case.model, case.preset, case.mode, case.batch, case.dtype, case.formulation, case.device)


def collect_cases(files: list[ResultFile]) -> tuple[list[Case], int]:
    """Every case, the newest file winning when one case was profiled more than once; and how many were superseded."""
    latest: dict[tuple, Case] = {}
    total = 0
    for f in sorted(files, key=lambda f: (str(f.as_(ProfileDoc).created), str(f.path))):
        for case in f.as_(ProfileDoc).cases:
            latest[_key(case)] = (f, case)
            total += 1
    cases = sorted(
        latest.values(),
        key=lambda fc: (fc[1].model, fc[1].formulation != "folded", _DTYPE_ORDER.get(fc[1].dtype, 9)),
    )
    return cases, total - len(cases)


# The harness's rule (gqnbench.harness.profile.noisy), restated here: the report never imports torch.
NOISY_NOTE = (
    "profiled and plain steps differ by more than half, or a plain step's spread is above 25%: "
    "the host was not quiet during this measurement; re-run it before trusting the phase times"
)


def noisy(case: ProfileCase) -> bool:
    ratio = case.overhead.profiled_over_plain
    spread = case.timing.plain.rel_iqr
    return not 0.5 <= ratio <= 1.5 or (spread is not None and spread > 0.25)


def variant(case: ProfileCase) -> str:
    return f"{case.dtype} {case.formulation}"


def phases_frame(cases: Iterable[Case]) -> pd.DataFrame:
    cases = list(cases)
    mixed = len({(c.preset, c.device) for _, c in cases}) > 1
    rows = [
        {
            "model": case.model,
            "case": case_name(case, mixed),
            "preset": case.preset,
            "device": case.device,
            "batch": case.batch,
            "dtype": case.dtype,
            "formulation": case.formulation,
            "phase": r.phase,
            "time_s": r.time_s,
            "busy_s": r.busy_s,
            "share": r.share,
            "flop": r.flop,
            "flop_per_s": r.flop_per_s,
            "share_of_peak": r.share_of_peak,
        }
        for _, case in cases
        for r in case.phases
    ]
    return pd.DataFrame(rows)


def furthest_below_peak(case: ProfileCase) -> Phase | None:
    """The phase with counted FLOPs that runs furthest below the peak (lowest share of peak)."""
    rated = [r for r in case.phases if r.share_of_peak is not None and r.flop]
    return min(rated, key=lambda r: r.share_of_peak) if rated else None


def _phase_order(frame: pd.DataFrame) -> list[str]:
    """Known phases in reading order, a plugin model's own phases before the loss."""
    seen = set(frame["phase"])
    known = [p for p in PHASE_NAMES if p in seen]
    extra = sorted(p for p in seen if p not in PHASE_NAMES)
    at = next((i for i, p in enumerate(known) if p in ("loss", "other")), len(known))
    return known[:at] + extra + known[at:]


def _stack_bars(ax: Any, sub: pd.DataFrame, phases: list[str], colours: dict[str, str]) -> None:
    """One horizontal bar per case (precision, formulation, and device when they differ) of one model, a segment per phase."""
    labels = list(dict.fromkeys(sub["case"]))
    left = [0.0] * len(labels)
    for phase in phases:
        widths = []
        for label in labels:
            hit = sub[(sub["case"] == label) & (sub["phase"] == phase)]
            widths.append(float(hit["time_s"].sum()) * 1e3)
        ax.barh(labels, widths, left=left, color=colours[phase], label=PHASE_NAMES.get(phase, phase))
        left = [a + b for a, b in zip(left, widths)]


def _figure(frame: pd.DataFrame, ctx: ReportContext, sources: list) -> Any:
    from gqnbench.report.plotting import plt, sns

    models = list(dict.fromkeys(frame["model"]))
    phases = _phase_order(frame)
    colours = dict(zip(phases, sns.color_palette("tab10", len(phases)).as_hex()))
    bars = max(frame[frame["model"] == m]["case"].nunique() for m in models)
    fig, axes = plt.subplots(len(models), 1, figsize=(8, 1.2 + 0.55 * bars * len(models)), squeeze=False)
    for ax, model in zip(axes[:, 0], models):
        _stack_bars(ax, frame[frame["model"] == model], phases, colours)
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


def _intro(cases: list[Case], superseded: int) -> Paragraph:
    devices = sorted({c.device for _, c in cases})
    steps = sorted({c.steps for _, c in cases})
    return Paragraph(
        "One training step split into phases by `torch.profiler.record_function` labels: forward hooks on each "
        "model's module groups switch the open label as execution enters or leaves the representation, the "
        "cores (their L steps summed) and the heads; the rest of the forward (sampling, KL, NLL) is the loss "
        "phase, and the step code labels backward and the optimizer. Exactly one label is open at a time, so "
        f"the phases add up to the step. Measured on {', '.join(devices)} over {'/'.join(map(str, steps))} "
        "profiled steps after warm-up. Phase time is wall time on CPU; on CUDA it is the step's device "
        "timeline, each kernel and the idle time before it given to the phase whose label was open when it "
        "was launched (the device waited for that phase's launch), so on a GPU too the phases add up to the "
        "step; 'device busy' is the kernels' time alone. FLOPs are the "
        "FLOP harness's counts of the same module groups (2 per multiply-add, conv and matmul only: the loss "
        "and optimizer are elementwise and have no rate); share of peak divides the achieved FLOP/s by the "
        "dense matmul peak measured in the same run."
        + (f" {superseded} older profile(s) of the same cases were superseded by newer files." if superseded else "")
    )


def _case_columns(frame: pd.DataFrame) -> dict[str, pd.Series]:
    """The model and variant columns every per-case table opens with."""
    return {"model": frame["model"].map(model_label), "variant": frame["case"]}


def _phase_table(name: str, model: str, sub: pd.DataFrame, ctx: ReportContext, sources: list) -> Any:
    busy = {"device busy (ms)": sub["busy_s"].map(lambda v: F.fmt_ms(v, 1))} if sub["busy_s"].notna().any() else {}
    return ctx.table(
        name,
        sub,
        f"{model_label(model)}: phases of one training step (`{sub['preset'].iloc[0]}` preset, batch "
        f"{sub['batch'].iloc[0]}, {sub['device'].iloc[0]})",
        sources,
        display=pd.DataFrame(
            {
                "precision": sub["dtype"],
                "formulation": sub["formulation"],
                "phase": sub["phase"].map(lambda p: PHASE_NAMES.get(p, p)),
                "ms/step": sub["time_s"].map(lambda v: F.fmt_ms(v, 1)),
                **busy,
                "share of step": sub["share"].map(F.fmt_pct),
                "GFLOP": sub["flop"].map(lambda v: F.fmt_float(None if v is None else v / 1e9, 3)),
                "GFLOP/s": sub["flop_per_s"].map(lambda v: F.fmt_float(None if v is None else v / 1e9, 1)),
                "share of peak": sub["share_of_peak"].map(F.fmt_pct),
            }
        ),
    )


def _furthest_below_peak_line(model: str, cases: list[Case]) -> Paragraph | None:
    lows = []
    for _, case in cases:
        low = furthest_below_peak(case) if case.model == model else None
        if low is not None:
            lows.append(
                f"{variant(case)} ({case.device}): **{PHASE_NAMES.get(low.phase, low.phase)}** "
                f"({F.fmt_pct(low.share_of_peak)} of the {case.peak_name or case.dtype} peak)"
            )
    if not lows:
        return None
    return Paragraph(f"{model_label(model)}, the phase furthest below the matmul peak: " + "; ".join(lows) + ".")


def _per_model_blocks(frame: pd.DataFrame, cases: list[Case], ctx: ReportContext, sources: list) -> list:
    """A phase table per model and place (preset, device): the first keeps the plain name ``profile_phases_<model>``."""
    blocks: list = []
    for model in dict.fromkeys(frame["model"]):
        sub = frame[frame["model"] == model]
        places = list(dict.fromkeys(zip(sub["preset"], sub["device"])))
        for i, (preset, device) in enumerate(places):
            name = f"profile_phases_{model}" + ("" if i == 0 else f"_{preset}_{device.replace(':', '')}")
            part = sub[(sub["preset"] == preset) & (sub["device"] == device)].reset_index(drop=True)
            blocks.append(_phase_table(name, model, part, ctx, sources))
        line = _furthest_below_peak_line(model, cases)
        if line is not None:
            blocks.append(line)
    return blocks


def _warnings(frame: pd.DataFrame, cases: list[Case]) -> list[Note]:
    """Phases above the peak and cases measured on a busy host."""
    notes = []
    above = frame[frame["share_of_peak"].fillna(0) > 1.0]
    if len(above):
        notes.append(
            Note(
                f"{len(above)} phase(s) above 100% of the matmul peak: the dense matmul is not this machine's fastest "
                "kernel (on an AMD EPYC host torch.mm's fp32 GEMM ran at about half the rate of the oneDNN "
                "convolutions, 200 vs 400 GFLOP/s), or the peak was measured while the host was busier than "
                "during those steps. Shares of peak compare phases with each other here, not with the hardware."
            )
        )
    loud = [f"{model_label(c.model)} {variant(c)}" for _, c in cases if noisy(c)]
    if loud:
        notes.append(Note(f"{', '.join(loud)}: {NOISY_NOTE}."))
    short = [
        f"{model_label(c.model)} {variant(c)} on {c.device} ({F.fmt_pct(c.phase_sum_s / c.profiled_step_s)})"
        for _, c in cases
        if c.min_coverage is not None and c.profiled_step_s > 0 and c.phase_sum_s / c.profiled_step_s < c.min_coverage
    ]
    if short:
        notes.append(
            Note(
                f"The phases cover less of the profiled step than the {F.fmt_pct(cases[0][1].min_coverage)} the "
                f"attribution needs: {', '.join(short)}; the rest of the step ran outside every label."
            )
        )
    return notes


def _overhead_frame(cases: list[Case]) -> pd.DataFrame:
    mixed = len({(c.preset, c.device) for _, c in cases}) > 1
    return pd.DataFrame(
        [
            {
                "model": c.model,
                "case": case_name(c, mixed),
                "dtype": c.dtype,
                "formulation": c.formulation,
                "plain_s": c.timing.plain.median_s,
                "labelled_s": c.timing.labelled.median_s,
                "profiled_s": c.timing.profiled.median_s,
                "plain_rel_iqr": c.timing.plain.rel_iqr,
                "profiled_over_plain": c.overhead.profiled_over_plain,
                "labelled_over_plain": c.overhead.labelled_over_plain,
                "phase_sum_s": c.phase_sum_s,
                "profiled_step_s": c.profiled_step_s,
                "trace_file": c.trace_file,
            }
            for _, c in cases
        ]
    )


def _overhead_table(cases: list[Case], ctx: ReportContext, sources: list) -> Any:
    over = _overhead_frame(cases)
    return ctx.table(
        "profile_overhead",
        over,
        "The profiler's cost: plain, labelled (no profiler) and profiled step times measured in the same run "
        "(medians), and how much of the profiled step the phases cover",
        sources,
        display=pd.DataFrame(
            {
                **_case_columns(over),
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


def _operators_table(cases: list[Case], ctx: ReportContext, sources: list) -> Any | None:
    mixed = len({(c.preset, c.device) for _, c in cases}) > 1
    ops = pd.DataFrame(
        [
            {
                "model": c.model,
                "case": case_name(c, mixed),
                "dtype": c.dtype,
                "formulation": c.formulation,
                "rank": i + 1,
                "operator": op.name,
                "self_s": op.self_s,
                "calls_per_step": op.calls_per_step,
                "share": op.share,
            }
            for _, c in cases
            for i, op in enumerate(c.top_operators)
        ]
    )
    if not len(ops):
        return None
    shown = ops[ops["rank"] <= TOP_OPERATORS].reset_index(drop=True)
    return ctx.table(
        "profile_top_operators",
        ops,
        f"Top {TOP_OPERATORS} operators by self time per case (all recorded ones in the CSV)",
        sources,
        display=pd.DataFrame(
            {
                **_case_columns(shown),
                "operator": shown["operator"].map(lambda n: f"`{n}`"),
                "self ms/step": shown["self_s"].map(F.fmt_ms),
                "calls/step": shown["calls_per_step"].map(lambda v: F.fmt_float(v, 0)),
                "share of step": shown["share"].map(F.fmt_pct),
            }
        ),
    )


def _memory_row(c: ProfileCase, mem: dict[str, Any]) -> dict[str, Any]:
    """One case's CUDA memory record; ``memory`` is the harness's open-ended timeline breakdown."""
    held = sorted((mem.get("at_peak") or {}).items(), key=lambda kv: -(kv[1] or 0))
    return {
        "model": c.model,
        "case": case_name(c, False),
        "dtype": c.dtype,
        "formulation": c.formulation,
        "device": c.device,
        "peak_allocated_bytes": mem.get("peak_allocated_bytes"),
        "step_peak_bytes": mem.get("peak_memory_bytes"),
        "nvml_used_bytes": mem.get("nvml_used_bytes"),
        "timeline_peak_bytes": mem.get("timeline_peak_bytes"),
        "held_at_peak": ", ".join(f"{k} {F.fmt_float(F.mib(v), 1)} MiB" for k, v in held[:4] if v)
        or mem.get("error")
        or F.MISSING,
    }


def _memory_block(cases: list[Case], ctx: ReportContext, sources: list) -> Any | None:
    rows = [_memory_row(c, c.memory) for _, c in cases if c.memory is not None]
    if not rows:
        if all(c.device.startswith("cpu") for _, c in cases):
            return Note("Measured on CPU: the CUDA memory timeline is recorded on CUDA runs only.")
        return None
    mem = pd.DataFrame(rows)
    return ctx.table(
        "profile_memory",
        mem,
        "Memory: the allocator's peak over the profiled steps (CUDA) and the memory timeline's peak with "
        "what holds it (torch.profiler's categories)",
        sources,
        display=pd.DataFrame(
            {
                **_case_columns(mem),
                "device": mem["device"],
                "peak allocated (MiB)": mem["peak_allocated_bytes"].map(lambda v: F.fmt_float(F.mib(v), 1)),
                "step's own peak (MiB)": mem["step_peak_bytes"].map(lambda v: F.fmt_float(F.mib(v), 1)),
                "GPU in use, NVML (MiB)": mem["nvml_used_bytes"].map(lambda v: F.fmt_float(F.mib(v), 1)),
                "timeline peak (MiB)": mem["timeline_peak_bytes"].map(lambda v: F.fmt_float(F.mib(v), 1)),
                "held at the peak": mem["held_at_peak"],
            }
        ),
    )


NO_PROFILE = (
    "No profile results among the inputs. `gqnbench profile --model gqn --preset cpu` writes one "
    "(phase table, trace and `profile.json`); the main job's profile stage profiles both models."
)
TRACE_HINT = (
    "Open a trace in TensorBoard (`pip install -e '.[profile]'`, then `tensorboard --logdir <trace folder>`, "
    "PyTorch Profiler tab; the phase labels show in its Trace view) or drop the file on https://ui.perfetto.dev."
)


def build(results: ResultSet, ctx: ReportContext) -> Section:
    section = Section("Where the time goes", "profile")
    files = results.of_kind("profile")
    cases, superseded = collect_cases(files)
    if not cases:
        section.blocks.append(Note(NO_PROFILE))
        return section
    sources = [f.path for f in files]
    frame = phases_frame(cases)
    section.blocks += [_intro(cases, superseded), _figure(frame, ctx, sources)]
    section.blocks += _per_model_blocks(frame, cases, ctx, sources)
    section.blocks += _warnings(frame, cases)
    section.blocks.append(_overhead_table(cases, ctx, sources))
    optional = [_operators_table(cases, ctx, sources), _memory_block(cases, ctx, sources)]
    section.blocks += [b for b in optional if b is not None]
    section.blocks.append(Note(TRACE_HINT))
    return section
