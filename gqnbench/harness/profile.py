"""Where the time goes: phase-labelled torch.profiler traces, per-phase time, FLOP/s and share of peak.

Two entry points:

- :func:`profile_step` writes a plain trace of a few steps and a top-k op table (any step,
  compiled ones included).
- :func:`profile_phases` labels the phases of one eager training step with
  ``torch.profiler.record_function`` (``gqnbench::representation``, ``::inference_core``,
  ``::generation_core``, ``::heads``, ``::loss``, ``::backward``, ``::optimizer``), profiles
  several steps after warm-up, and returns one *case* of a ``profile`` results file: the
  time of each phase per step, its share of the step, its FLOPs (from
  :mod:`gqnbench.harness.flops`, the same module groups), achieved FLOP/s and share of the
  measured matmul peak, the top operators by self time, the profiler's overhead (plain,
  labelled and profiled step times measured in the same run) and, on CUDA, the memory
  timeline's peak by category. :func:`write_profile` writes cases as a ``profile`` results file.

Labels come from the model interface, not from the model code: forward pre/post hooks on
every submodule of ``model.module_groups()`` switch the open label when execution enters
or leaves a group (so a plugin model is labelled too). At any moment exactly one phase
label is open, so the phases never nest or overlap and their times add up to the step
(minus the small gaps between them); the L-step cores open one range per step and the
phase time is their sum. Forward work outside every group (sampling, the KL, the NLL,
the model's own glue code) is the ``loss`` phase. Groups ending in ``_head`` are the
``heads`` phase; other group names (a plugin's) become phases of their own.

Phase time: on CPU the label's wall time; on CUDA the kernel time of the operators
launched while the label was open (from any thread: backward runs on the autograd
device threads). The trace is written by ``torch.profiler.tensorboard_trace_handler`` as
``<out>/<worker>.<timestamp>.pt.trace.json``: it opens in TensorBoard's profiler plugin
(``pip install torch-tb-profiler``, then ``tensorboard --logdir <out>``; the plugin is no
longer maintained upstream but still reads it) and in Perfetto (ui.perfetto.dev) or
chrome://tracing. On CUDA, a memory snapshot (``torch.cuda.memory._record_memory_history``
/ ``_dump_snapshot``) is written as ``<out>/memory_snapshot.pickle``; drop it on
https://pytorch.org/memory_viz to see every allocation over time.

``profile`` results file::

    {"kind": "profile", "preset", "device", "matmul_peak": {...} | null,
     "cases": [{"label", "model", "preset", "mode", "batch", "dtype", "formulation": folded|authors,
                "fold_linear_ops", "overrides", "warmup", "steps", "trace_file", "fast_path": {...} (the step's),
                "phases": [{"phase", "label", "time_s" (median step), "mean_time_s", "share" (of the profiled step),
                            "busy_s" (CUDA: kernel time alone; null on CPU),
                            "calls_per_step" (label ranges opened), "flop" (per step, whole batch; null if not counted),
                            "flop_per_s", "share_of_peak"}],
                "phase_sum_s", "coverage" (phase_sum_s / profiled_step_s), "profiled_step_s" (the trace's
                ProfilerStep range of the median profiled step: the phase times are that step's;
                "mean_time_s" per phase averages all),
                "profiled_step_times_s", "unlabelled_s",
                "phase_time": "cpu wall" | "cuda timeline", "peak_flop_per_s", "peak_name" (fp32, tf32, bf16...),
                "timing": {"plain" | "labelled" | "profiled": {median_s, q1_s, q3_s, min_s, max_s, times_s}},
                "overhead": {"profiled_over_plain", "labelled_over_plain"},
                "top_operators": [{"name", "self_s" (per step), "calls_per_step", "share"}],
                "memory": null | {"peak_allocated_bytes", "timeline_peak_bytes", "at_peak": {category: bytes},
                                  (CUDA: "peak_memory_bytes", "allocator_reserved_peak_bytes", "nvml_used_bytes", ...)}}]}
"""

from __future__ import annotations

import bisect
import contextlib
import json
import os
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile, record_function, schedule, tensorboard_trace_handler

from gqnbench.harness.common import (
    PreparedStep,
    StepSpec,
    Timing,
    UnsupportedCase,
    cuda_step_memory,
    make_episode,
    model_config,
    prepare_step,
    synchronize,
)
from gqnbench.harness.throughput import matmul_peak, mfu_peak

LABEL_PREFIX = "gqnbench::"
# How a phase's time is measured on the CPU and on CUDA (see phases_by_step).
PHASE_TIME = {False: "cpu wall", True: "cuda timeline"}
# The share of a profiled step the phases must cover for the attribution to be trusted.
MIN_COVERAGE = 0.95
# Reading order of the phases of one training step; plugin groups go before "loss".
PHASES = ("representation", "inference_core", "generation_core", "heads", "loss", "backward", "optimizer")
FORWARD_BASE = {"train": "loss", "infer": "other"}


@dataclass
class ProfileResult:
    trace_path: Path
    table: str
    memory_snapshot: Path | None
    out_dir: Path


TRACE_GLOB = "*.pt.trace.json*"  # .pt.trace.json or, gzipped, .pt.trace.json.gz


def _new_traces(out_dir: Path, before: set[Path]) -> list[Path]:
    new = sorted(set(out_dir.glob(TRACE_GLOB)) - before, key=lambda p: p.stat().st_mtime)
    if not new:
        raise RuntimeError(f"torch.profiler wrote no trace file into {out_dir}")
    return new


def profile_step(
    spec: StepSpec,
    out_dir: str | Path,
    warmup: int = 1,
    active: int = 2,
    top_k: int = 20,
    record_shapes: bool = True,
    memory_snapshot: bool = True,
) -> ProfileResult:
    """Profile ``active`` steps of ``spec`` after ``warmup`` unprofiled ones; write the trace under ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    step = prepare_step(spec)
    device = step.device
    before = set(out_dir.glob(TRACE_GLOB))
    snapshot_path = out_dir / "memory_snapshot.pickle" if memory_snapshot and device.type == "cuda" else None
    with _memory_history(snapshot_path):
        prof = _trace_steps(step, out_dir, warmup, active, record_shapes)
    new = _new_traces(out_dir, before)
    sort_by = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    table = prof.key_averages().table(sort_by=sort_by, row_limit=top_k, max_name_column_width=48)
    return ProfileResult(trace_path=new[-1], table=table, memory_snapshot=snapshot_path, out_dir=out_dir)


def _trace_steps(step: PreparedStep, out_dir: Path, warmup: int, active: int, record_shapes: bool) -> profile:
    """Run ``warmup + active`` steps under the profiler; the last ``active`` are written as a trace."""
    activities = [ProfilerActivity.CPU]
    if step.device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    worker = step.spec.label().replace("/", "_")
    with profile(
        activities=activities,
        schedule=schedule(wait=0, warmup=warmup, active=active, repeat=1),
        on_trace_ready=tensorboard_trace_handler(str(out_dir), worker_name=worker),
        record_shapes=record_shapes,
        profile_memory=True,
    ) as prof:
        for _ in range(warmup + active):
            step.run()
            synchronize(step.device)
            prof.step()
    return prof


@contextlib.contextmanager
def _memory_history(snapshot: Path | None) -> Iterator[None]:
    """Record every CUDA allocation while the body runs and dump them to ``snapshot`` (None: record nothing)."""
    if snapshot is None:
        yield
        return
    torch.cuda.memory._record_memory_history(max_entries=200_000)
    try:
        yield
        # Only a completed run is dumped; a failed one raises past it.
        torch.cuda.memory._dump_snapshot(str(snapshot))
    finally:
        torch.cuda.memory._record_memory_history(enabled=None)


# --- phase labels --------------------------------------------------------------------------------------------


def phase_of_group(group: str, base: str = "loss") -> str:
    """The phase a module group's time goes to: ``*_head`` groups are ``heads``; ``other`` is the base phase."""
    if group == "other":
        return base
    if group == "heads" or group.endswith("_head"):
        return "heads"
    return group


def phase_label(phase: str) -> str:
    return LABEL_PREFIX + phase


def ordered_phases(phases: list[str] | set[str]) -> list[str]:
    """Known phases in reading order, a plugin's own groups before ``loss``."""
    known = [p for p in PHASES if p in phases]
    extra = sorted(p for p in phases if p not in PHASES)
    at = known.index("loss") if "loss" in known else len(known)
    return known[:at] + extra + known[at:]


class PhaseLabels:
    """Keeps exactly one ``record_function`` phase label open while a step runs.

    :meth:`forward` registers pre/post hooks on every submodule of ``model.module_groups()``
    (a submodule shared by two groups belongs to the first, as in the FLOP attribution);
    entering a group's module switches the open label to the group's phase, leaving it
    switches back. :meth:`phase` labels code the step itself runs (backward, optimizer).
    """

    def __init__(self, model: nn.Module, base: str = "loss") -> None:
        self.model = model
        self.base = base
        self.phase_of: dict[int, str] = {}
        self.modules: list[nn.Module] = []
        for group, modules in model.module_groups().items():
            for module in modules:
                for sub in module.modules():
                    if id(sub) not in self.phase_of:
                        self.phase_of[id(sub)] = phase_of_group(group, base)
                        self.modules.append(sub)
        step_phases = {"backward", "optimizer"} if base == FORWARD_BASE["train"] else set()
        self.phases = ordered_phases({*self.phase_of.values(), base, *step_phases})
        self.stack: list[str] = []
        self.current: str | None = None
        self._open: Any = None

    def _switch(self, phase: str | None) -> None:
        if phase == self.current:
            return
        if self._open is not None:
            self._open.__exit__(None, None, None)
            self._open = None
        self.current = phase
        if phase is not None:
            self._open = record_function(phase_label(phase))
            self._open.__enter__()

    def _pre(self, module: nn.Module, args: object) -> None:
        self.stack.append(self.phase_of[id(module)])
        self._switch(self.stack[-1])

    def _post(self, module: nn.Module, args: object, output: object) -> None:
        self.stack.pop()
        self._switch(self.stack[-1] if self.stack else None)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self._switch(name)
        try:
            yield
        finally:
            self._switch(None)

    @contextlib.contextmanager
    def forward(self) -> Iterator[None]:
        """Label a forward pass: module groups by their phase, everything else by the base phase."""
        # The base label is open while the hooks are added and removed, so that work is in a phase too.
        self.stack = [self.base]
        self._switch(self.base)
        handles = []
        try:
            for module in self.modules:
                handles.append(module.register_forward_pre_hook(self._pre))
                handles.append(module.register_forward_hook(self._post))
            yield
        finally:
            for handle in handles:
                handle.remove()
            self.stack = []
            self._switch(None)


def labelled_step(step, labels: PhaseLabels) -> Callable[[], object]:
    """The same work as ``step.run`` (a prepared eager step: the same step object) with every phase labelled."""
    trainer, episode = step.trainer, step.episode

    def label(phase: str) -> contextlib.AbstractContextManager:
        return labels.forward() if phase == "forward" else labels.phase(phase)

    if step.spec.mode == "infer":
        return lambda: trainer.predict(episode, label=label)
    return lambda: trainer.train_step(episode, label=label).loss


# --- measuring -----------------------------------------------------------------------------------------------


def _timed(fn: Callable[[], object], device: torch.device) -> float:
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def _timing_dict(times: list[float]) -> dict[str, Any]:
    return Timing.from_times(times).fields("median_s", "q1_s", "q3_s", "min_s", "max_s", "rel_iqr", "times_s")


def phase_flops(spec: StepSpec) -> dict[str, float] | None:
    """FLOP of each phase of one training step of ``spec`` (whole batch), from the FLOP harness's module groups.

    Forward FLOPs per group (mapped to phases), all backward FLOPs to ``backward``; the
    optimizer's elementwise work is not counted (0). None for inference steps.
    """
    if spec.mode != "train":
        return None
    from gqnbench.harness.flops import OTHER, count_flops
    from gqnbench.models import build_model

    cfg = model_config(spec.model, spec.resolved_preset())
    with torch.device("meta"):
        net = build_model(spec.model, cfg)
    episode = make_episode(cfg, spec.resolved_batch(), spec.num_context, spec.num_queries, device="meta")
    counts = count_flops(net, episode)
    out: dict[str, float] = defaultdict(float)
    for group, v in counts["per_module"].items():
        out[phase_of_group(group if group != OTHER else "other", FORWARD_BASE["train"])] += v["forward"]
    out["backward"] = float(counts["train"] - counts["forward"])
    out["optimizer"] = 0.0
    return dict(out)


@dataclass
class StepPhases:
    """One profiled step: its duration (the trace's ProfilerStep range) and each phase's time and label ranges.

    ``busy_s`` (CUDA): the device's kernel time per phase, without the idle time before each kernel.
    """

    duration_s: float
    time_s: dict[str, float]
    ranges: dict[str, int]
    busy_s: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Span:
    """One profiler event on the profiler's clock (microseconds): a CPU op or label range, or a device activity.

    ``correlation``: a CPU op's id; ``launched_by``: a device activity's link to the CPU op that launched it.
    """

    name: str
    start: float
    end: float
    on_device: bool = False
    correlation: int = 0
    launched_by: int = 0


def profiler_spans(prof: profile, device: torch.device) -> list[Span]:
    """The events of a finished profile as :class:`Span`; on CUDA from the raw kineto events, which keep the
    device activities' start times and their links to the launching op."""
    if device.type != "cuda":
        return [Span(ev.name, ev.time_range.start, ev.time_range.end) for ev in prof.events()]
    from torch.autograd import DeviceType

    spans = []
    for ev in prof.profiler.kineto_results.events():
        on_device = ev.device_type() == DeviceType.CUDA
        spans.append(
            Span(ev.name(), ev.start_ns() / 1e3, ev.end_ns() / 1e3, on_device, ev.correlation_id(),
                 ev.linked_correlation_id() if on_device else 0)
        )  # fmt: skip
    return spans


def phases_by_step(spans: list[Span], phases: list[str], device: torch.device) -> list[StepPhases]:
    """Split the profiled spans by ProfilerStep and give each phase its time within each step.

    CPU: the labels' wall time. CUDA: the device timeline of the step, from its start to its
    last kernel's end, each stretch given to the phase whose label was open when the work running
    then was launched (whichever thread launched it: backward runs on the autograd device
    threads); the idle time before a kernel goes to that kernel's phase (the device waited for
    that phase's launch). Either way the phases add up to the step but for unlabelled work.
    """
    names = {phase_label(p): p for p in phases}
    cpu = [sp for sp in spans if not sp.on_device]
    steps = sorted((sp.start, sp.end) for sp in cpu if sp.name.startswith("ProfilerStep"))
    if not steps:
        steps = [(min(sp.start for sp in spans), max(sp.end for sp in spans))]
    step_starts = [start for start, _ in steps]
    out = [
        StepPhases((end - start) / 1e6, defaultdict(float), defaultdict(int), defaultdict(float))
        for start, end in steps
    ]

    def step_index(t: float) -> int | None:
        i = bisect.bisect_right(step_starts, t) - 1
        return i if i >= 0 and t < steps[i][1] else None

    windows = []  # (start_us, end_us, phase): the label ranges, which never overlap
    for sp in cpu:
        phase = names.get(sp.name)
        i = step_index(sp.start) if phase is not None else None
        if i is None:
            continue
        out[i].ranges[phase] += 1
        if device.type != "cuda":
            out[i].time_s[phase] += (sp.end - sp.start) / 1e6
        windows.append((sp.start, sp.end, phase))
    if device.type == "cuda":
        _device_timeline(spans, sorted(windows), steps, out, step_index)
    return out


def _device_timeline(spans: list[Span], windows: list, steps: list, out: list[StepPhases], step_index) -> None:
    """Give each step's device time (kernels and the idle time before them) to the phases that launched it."""
    starts = [w[0] for w in windows]
    launched = {sp.correlation: sp.start for sp in spans if not sp.on_device and sp.correlation}
    per_step: dict[int, list[tuple[float, float, str | None]]] = defaultdict(list)
    for sp in spans:
        t = launched.get(sp.launched_by) if sp.on_device else None
        i = step_index(t) if t is not None else None
        if i is None:
            continue
        w = bisect.bisect_right(starts, t) - 1
        phase = windows[w][2] if w >= 0 and t < windows[w][1] else None
        per_step[i].append((sp.start, sp.end, phase))
    for i, activities in per_step.items():
        cursor = steps[i][0]  # the step starts when the host starts it; the device idles until its first kernel
        for start, end, phase in sorted(activities):
            idle = max(0.0, start - cursor)
            busy = max(0.0, end - max(start, cursor))  # kernels overlapping on several streams count once
            cursor = max(cursor, end)
            if phase is not None:
                out[i].time_s[phase] += (idle + busy) / 1e6
                out[i].busy_s[phase] += busy / 1e6


def _top_operators(prof, device: torch.device, steps: int, step_s: float, top_k: int) -> list[dict[str, Any]]:
    cuda = device.type == "cuda"
    rows = []
    for avg in prof.key_averages():
        if avg.key.startswith(LABEL_PREFIX) or avg.key.startswith("ProfilerStep"):
            continue
        self_us = (getattr(avg, "self_device_time_total", 0) or 0) if cuda else avg.self_cpu_time_total
        rows.append({"name": avg.key, "self_s": self_us / 1e6 / steps, "calls_per_step": avg.count / steps})
    rows.sort(key=lambda r: -r["self_s"])
    for r in rows:
        r["share"] = r["self_s"] / step_s if step_s > 0 else None
    return rows[:top_k]


MEMORY_CATEGORIES = (
    "parameter", "optimizer_state", "input", "temporary", "activation", "gradient", "autograd_detail", "unknown",
)  # fmt: skip


def memory_at_peak(run: Callable[[], object], device: torch.device, out_dir: Path) -> dict[str, Any] | None:
    """One extra profiled step with the memory timeline: its peak and what holds it (bytes by category).

    Uses ``export_memory_timeline`` (deprecated in torch, kept for its categories); None if it fails.
    """
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    try:
        with profile(activities=activities, record_shapes=True, profile_memory=True, with_stack=True) as prof:
            run()
            synchronize(device)
        path = out_dir / "memory_timeline.json"
        dev = f"{device.type}:{device.index or 0}" if device.type == "cuda" else "cpu"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # deprecated in favour of the CUDA-only snapshot
            prof.export_memory_timeline(str(path), dev)
        times, sizes = json.loads(path.read_text())
    except Exception as exc:  # noqa: BLE001 - a private, deprecated API: record why, never fail the profile
        return {"error": f"{type(exc).__name__}: {exc}"}
    if not sizes:
        return None
    totals = [sum(row) for row in sizes]
    i = max(range(len(totals)), key=totals.__getitem__)
    at_peak = {name: int(sizes[i][k + 1]) for k, name in enumerate(MEMORY_CATEGORIES) if k + 1 < len(sizes[i])}
    return {"timeline_peak_bytes": int(totals[i]), "at_peak": at_peak, "timeline_file": path.name}


def profile_phases(
    spec: StepSpec,
    out_dir: str | Path,
    warmup: int = 2,
    active: int = 3,
    plain_rounds: int = 3,
    top_k: int = 15,
    peaks: dict | None = None,
    count_flops: bool = True,
    memory: bool | None = None,
    record_shapes: bool = True,
    gzip: bool = False,
) -> dict[str, Any]:
    """Profile ``active`` labelled steps of ``spec`` (eager) and return one case of a ``profile`` results file.

    In one run: ``warmup`` plain steps; ``plain_rounds`` rounds of one plain and one labelled
    step (no profiler), timed; under the profiler one warm-up and ``active`` labelled steps
    (timed, and written as the trace); then ``plain_rounds`` plain/labelled rounds again.
    The times before and after are pooled, so drift shows as spread, not as overhead.
    ``gzip`` writes ``.pt.trace.json.gz`` (about a tenth of the size; TensorBoard's plugin
    and Perfetto read it as it is).
    ``peaks``: :func:`gqnbench.harness.throughput.matmul_peak` output for the share of peak.
    ``memory`` (default: on CUDA): one extra step with the memory timeline.
    """
    fast = spec.fast()
    if spec.compiled or fast.fused_cell or fast.cuda_graph:
        raise UnsupportedCase(
            "phase labels need an eager step (module hooks): no compile, fused_cell or cuda_graph; "
            "profile_step traces those"
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    step = prepare_step(spec)
    labels = PhaseLabels(step.model, FORWARD_BASE[spec.mode])
    run_labelled = labelled_step(step, labels)
    runs = _profiled_run(step, run_labelled, out_dir, warmup, active, plain_rounds, record_shapes, gzip)
    flops = phase_flops(spec) if count_flops else None
    phases = PhaseTimes(
        phases_by_step(profiler_spans(runs.prof, step.device), labels.phases, step.device), labels.phases
    )
    mem = None
    if memory if memory is not None else step.device.type == "cuda":
        mem = _memory_fields(run_labelled, step, out_dir, runs.peak_allocated)
    elif step.device.type == "cuda":  # without the timeline, still the step's own GPU memory
        mem = {"peak_allocated_bytes": runs.peak_allocated, **cuda_step_memory(step)}
    fast_record = step.trainer.fast_path_record()
    peak_name, peak = mfu_peak(spec.dtype, peaks, any(fast_record["tf32_in_use"].values()))
    return {
        **_case_header(spec, step.device, warmup, active, runs.trace),
        "fast_path": fast_record,
        "peak_name": peak_name,
        **phases.fields(flops, peak),
        **runs.timing_fields(),
        # Operators: self time averaged over the profiled steps, as a share of the mean step.
        "top_operators": _top_operators(runs.prof, step.device, active, phases.mean_step_s, top_k),
        "memory": mem,
    }


@dataclass
class ProfiledRun:
    """The step times of one :func:`profile_phases` run and its profiler (events, trace file, CUDA peak)."""

    plain: list[float]
    labelled: list[float]
    profiled: list[float]
    prof: profile
    trace: Path
    peak_allocated: int | None

    def timing_fields(self) -> dict[str, Any]:
        plain_t, labelled_t, profiled_t = (_timing_dict(x) for x in (self.plain, self.labelled, self.profiled))
        return {
            "timing": {"plain": plain_t, "labelled": labelled_t, "profiled": profiled_t},
            "overhead": {
                "profiled_over_plain": profiled_t["median_s"] / plain_t["median_s"],
                "labelled_over_plain": labelled_t["median_s"] / plain_t["median_s"],
            },
        }


def _profiled_run(
    step: PreparedStep,
    run_labelled: Callable[[], object],
    out_dir: Path,
    warmup: int,
    active: int,
    plain_rounds: int,
    record_shapes: bool,
    gzip: bool,
) -> ProfiledRun:
    """Warm-up, side-by-side plain/labelled rounds, the profiled labelled steps, side-by-side rounds again."""
    device = step.device
    for _ in range(max(warmup, 1)):
        step.run()
    synchronize(device)
    plain, labelled = _side_by_side(step.run, run_labelled, device, plain_rounds)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    before = set(out_dir.glob(TRACE_GLOB))
    worker = step.spec.label().replace("/", "_")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    profiled = []
    with profile(
        activities=activities,
        schedule=schedule(wait=0, warmup=1, active=active, repeat=1),
        on_trace_ready=tensorboard_trace_handler(str(out_dir), worker_name=worker, use_gzip=gzip),
        record_shapes=record_shapes,
        profile_memory=True,
    ) as prof:
        for i in range(1 + active):
            t = _timed(run_labelled, device)
            if i >= 1:
                profiled.append(t)
            prof.step()
    peak_allocated = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    trace = _new_traces(out_dir, before)[-1]
    # The times before and after the profiler are pooled, so drift shows as spread, not as overhead.
    plain_after, labelled_after = _side_by_side(step.run, run_labelled, device, plain_rounds)
    return ProfiledRun(plain + plain_after, labelled + labelled_after, profiled, prof, trace, peak_allocated)


def _side_by_side(
    run_plain: Callable[[], object], run_labelled: Callable[[], object], device: torch.device, rounds: int
) -> tuple[list[float], list[float]]:
    # Plain and labelled steps alternate, so a change in the machine's load hits both alike.
    plain, labelled = [], []
    for _ in range(rounds):
        plain.append(_timed(run_plain, device))
        labelled.append(_timed(run_labelled, device))
    return plain, labelled


class PhaseTimes:
    """The phase rows of a case from its profiled steps: the median step's times, FLOP/s and share of peak."""

    def __init__(self, per_step: list[StepPhases], phases: list[str]) -> None:
        self.per_step = per_step
        self.phases = phases
        # The phases of the median profiled step (by duration): one step slowed by a busy host moves
        # the mean of every phase, not the median step. Means over all profiled steps are kept beside.
        self.median = sorted(per_step, key=lambda st: st.duration_s)[(len(per_step) - 1) // 2]
        self.mean_step_s = sum(st.duration_s for st in per_step) / len(per_step)

    def rows(self, flops: dict[str, float] | None, peak: float | None) -> list[dict[str, Any]]:
        step_s = self.median.duration_s
        rows = []
        for phase in self.phases:
            t = self.median.time_s.get(phase, 0.0)
            flop = None if flops is None else flops.get(phase, 0.0)
            # No counted FLOPs (elementwise work only: loss, optimizer): no rate rather than a misleading 0.
            rate = flop / t if flop and t > 0 else None
            rows.append(
                {
                    "phase": phase,
                    "label": phase_label(phase),
                    "time_s": t,
                    "share": t / step_s if step_s > 0 else None,
                    "busy_s": self.median.busy_s.get(phase, 0.0) if self.median.busy_s else None,
                    "calls_per_step": self.median.ranges.get(phase, 0),
                    "mean_time_s": sum(st.time_s.get(phase, 0.0) for st in self.per_step) / len(self.per_step),
                    "flop": flop,
                    "flop_per_s": rate,
                    "share_of_peak": rate / peak if rate is not None and peak else None,
                }
            )
        return rows

    def fields(self, flops: dict[str, float] | None, peak: float | None) -> dict[str, Any]:
        """The case's fields from ``phases`` to ``peak_flop_per_s`` (see the module docstring)."""
        rows = self.rows(flops, peak)
        phase_sum = sum(r["time_s"] for r in rows)
        step_s = self.median.duration_s
        return {
            "phases": rows,
            "phase_sum_s": phase_sum,
            "coverage": phase_sum / step_s if step_s > 0 else None,
            "min_coverage": MIN_COVERAGE,
            "profiled_step_s": self.median.duration_s,
            "profiled_step_times_s": [st.duration_s for st in self.per_step],
            "unlabelled_s": self.median.duration_s - phase_sum,
            "step_flop": None if flops is None else sum(flops.values()),
            "peak_flop_per_s": peak,
        }


def _case_header(spec: StepSpec, device: torch.device, warmup: int, active: int, trace: Path) -> dict[str, Any]:
    cfg = model_config(spec.model, spec.resolved_preset())
    return {
        "label": spec.label(),
        "model": spec.model,
        "preset": spec.preset,
        "mode": spec.mode,
        "batch": spec.resolved_batch(),
        "dtype": spec.dtype,
        "device": str(device),
        "fold_linear_ops": cfg.fold_linear_ops,
        "formulation": "folded" if cfg.fold_linear_ops else "authors",
        "overrides": {k: v for k, v in spec.overrides},
        "warmup": warmup,
        "steps": active,
        "trace_file": str(trace),
        "phase_time": PHASE_TIME[device.type == "cuda"],
    }


def _memory_fields(
    run: Callable[[], object], step: PreparedStep, out_dir: Path, peak_allocated: int | None
) -> dict[str, Any]:
    mem = memory_at_peak(run, step.device, out_dir) or {}
    mem["peak_allocated_bytes"] = peak_allocated
    if step.device.type == "cuda":
        mem.update(cuda_step_memory(step))
    mem["snapshot_hint"] = "gqnbench profile --device cuda writes memory_snapshot.pickle (pytorch.org/memory_viz)"
    return mem


def check_coverage(case: dict[str, Any], minimum: float = MIN_COVERAGE) -> str | None:
    """None when the phases of ``case`` cover at least ``minimum`` of its profiled step, else why not."""
    coverage = case.get("coverage")
    if coverage is None:
        coverage = case["phase_sum_s"] / case["profiled_step_s"] if case["profiled_step_s"] > 0 else 0.0
    if coverage >= minimum:
        return None
    return (
        f"{case['label']}: the phases cover {coverage:.1%} of the profiled step ({case['phase_time']}), "
        f"below {minimum:.0%}: {case['unlabelled_s'] * 1e3:.2f} ms of the step is in no phase"
    )


def apply_peak(case: dict[str, Any], peaks: dict | None) -> dict[str, Any]:
    """Recompute a case's share of peak against ``peaks`` (e.g. the best of several peak measurements)."""
    tf32 = any(((case.get("fast_path") or {}).get("tf32_in_use") or {}).values())
    name, peak = mfu_peak(case["dtype"], peaks, tf32)
    case["peak_flop_per_s"] = peak
    case["peak_name"] = name
    for r in case["phases"]:
        r["share_of_peak"] = r["flop_per_s"] / peak if r.get("flop_per_s") is not None and peak else None
    return case


def best_peaks(*measurements: dict) -> dict:
    """Per dtype the fastest of several matmul-peak measurements; each kept under ``measurements``.

    On a shared host a peak measured while another job holds the cores understates the
    machine and pushes phases above 100% of "peak"; measuring before and after the cases and
    keeping the best makes that less likely.
    """
    best = dict(measurements[0])
    for m in measurements[1:]:
        for key, value in m.items():
            if key.endswith("_flop_per_s") and isinstance(value, (int, float)):
                if value > best.get(key, 0):
                    best[key] = value
                    best[key.replace("_flop_per_s", "_rel_iqr")] = m.get(key.replace("_flop_per_s", "_rel_iqr"))
    best["measurements"] = list(measurements)
    return best


def write_profile(
    path: str | Path,
    cases: list[dict[str, Any]],
    preset: str,
    device: str = "cpu",
    peaks: dict | None = None,
) -> Path:
    """Write ``cases`` as a ``profile`` results file; trace paths are stored relative to its folder when inside it."""
    from gqnbench.environment import capture_environment
    from gqnbench.results import write_result

    path = Path(path)
    stored = []
    for case in cases:
        case = dict(case)
        trace = Path(case["trace_file"]).resolve()
        case["trace_file"] = Path(os.path.relpath(trace, path.resolve().parent)).as_posix()
        stored.append(case)
    return write_result(
        path, "profile", {"preset": preset, "device": device, "matmul_peak": peaks, "cases": stored},
        capture_environment(device),
    )  # fmt: skip


NOISY_NOTE = (
    "profiled and plain steps differ by more than half, or a plain step's spread is above 25%: "
    "the host was not quiet during this measurement; re-run it before trusting the phase times"
)


def noisy(case: dict[str, Any]) -> bool:
    """True when the side-by-side timings show a busy host rather than the profiler's cost."""
    ratio = (case.get("overhead") or {}).get("profiled_over_plain")
    spread = ((case.get("timing") or {}).get("plain") or {}).get("rel_iqr")
    return (ratio is not None and not 0.5 <= ratio <= 1.5) or (spread is not None and spread > 0.25)


def format_phase_table(case: dict[str, Any]) -> str:
    """The phase table ``gqnbench profile`` prints."""
    lines = [
        f"{case['label']}: the median of {case['steps']} profiled steps, phase time = {case['phase_time']}",
        f"  {'phase':<18} {'ms/step':>9} {'share':>7} {'ranges':>6} {'GFLOP':>8} {'GFLOP/s':>8} {'of peak':>8}",
    ]

    def num(v, fmt):
        return "-" if v is None else format(v, fmt)

    for r in case["phases"]:
        lines.append(
            f"  {r['phase']:<18} {r['time_s'] * 1e3:>9.2f} {num(r['share'], '>7.1%')} {r['calls_per_step']:>6.0f} "
            f"{num(None if r['flop'] is None else r['flop'] / 1e9, '>8.3f')} "
            f"{num(None if r['flop_per_s'] is None else r['flop_per_s'] / 1e9, '>8.1f')} {num(r['share_of_peak'], '>8.1%')}"
        )
    t = case["timing"]
    lines += [
        f"  {'sum of phases':<18} {case['phase_sum_s'] * 1e3:>9.2f} {case['phase_sum_s'] / case['profiled_step_s']:>7.1%}",
        f"  {'profiled step':<18} {case['profiled_step_s'] * 1e3:>9.2f}  (trace; unlabelled gaps {case['unlabelled_s'] * 1e3:.2f} ms)",
        f"  step time, median: plain {t['plain']['median_s'] * 1e3:.1f} ms, labelled {t['labelled']['median_s'] * 1e3:.1f} ms, "
        f"profiled {t['profiled']['median_s'] * 1e3:.1f} ms (profiler overhead "
        f"{case['overhead']['profiled_over_plain'] - 1:+.1%}, labels alone {case['overhead']['labelled_over_plain'] - 1:+.1%})",
    ]
    if noisy(case):
        lines.append(f"  NOTE: {NOISY_NOTE}")
    if case.get("peak_flop_per_s"):
        lines.append(f"  matmul peak ({case['dtype']}): {case['peak_flop_per_s'] / 1e9:.0f} GFLOP/s")
    mem = case.get("memory")
    if mem and mem.get("at_peak"):
        held = ", ".join(f"{k} {v / 2**20:.0f}" for k, v in sorted(mem["at_peak"].items(), key=lambda kv: -kv[1]) if v)
        lines.append(f"  memory timeline peak {mem['timeline_peak_bytes'] / 2**20:.0f} MiB: {held} (MiB)")
    return "\n".join(lines)


def profile_suite(
    preset: str,
    models: tuple[str, ...] | list[str],
    out_path: str | Path,
    quick: bool = False,
    dtypes: tuple[str, ...] = ("fp32", "bf16"),
    device: str = "cpu",
    overrides: dict[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
    fast_path: str = "off",
) -> Path:
    """The main job's profile stage: every model x dtype at ``preset``, folded, a few steps each; one results file.

    ``fast_path``: the switches the profiled steps run with (only those a labelled eager step can
    have: channels_last, cudnn_benchmark, tf32, fused_adam).

    The matmul peak is measured before and after the cases, the faster one kept per dtype.
    Traces go gzipped to ``<out_path folder>/profile/``. At the cpu preset on 2 cores this takes
    about half a minute (``quick``: one profiled step per case, a smaller peak matmul).
    """
    out_path = Path(out_path)
    trace_dir = out_path.parent / "profile"
    model_overrides = tuple((k, v) for k, v in (overrides or {}).items() if k.startswith("model."))
    n, rounds = (1024, 3) if quick else (None, 5)
    before = matmul_peak(device, dtypes, n=n, rounds=rounds)
    steps = {"warmup": 1, "active": 1, "plain_rounds": 1} if quick else {"warmup": 2, "active": 3, "plain_rounds": 2}
    cases = []
    for model in models:
        for dtype in dtypes:
            spec = StepSpec(model, preset, dtype=dtype, device=device, overrides=model_overrides, fast_path=fast_path)
            if progress is not None:
                progress(spec.label())
            cases.append(profile_phases(spec, trace_dir, peaks=before, gzip=True, top_k=10 if quick else 15, **steps))
    peaks = best_peaks(before, matmul_peak(device, dtypes, n=n, rounds=rounds))
    return write_profile(out_path, [apply_peak(c, peaks) for c in cases], preset, device, peaks)


__all__ = [
    "LABEL_PREFIX",
    "PHASES",
    "PhaseLabels",
    "ProfileResult",
    "format_phase_table",
    "phase_flops",
    "profile_phases",
    "profile_step",
    "profile_suite",
    "write_profile",
]
