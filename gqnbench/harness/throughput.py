"""Step time, images/s, achieved FLOP/s and model FLOP utilisation (MFU) against a measured matmul peak.

One row per model x preset x mode x batch x dtype x eager/compiled (x channels_last).
Warm-up calls run first (for a compiled step the first call compiles; its time, minus
the steady median, is ``compile_s``, and the graph breaks dynamo counted are
``graph_breaks``, both kept apart from the step time). Every clock read is preceded by
a device synchronisation. MFU = model FLOP per step (FlopCounterMode, 2 per multiply-add,
the same count whether the step is compiled or not) / median step time / the dense
matmul peak of the arithmetic the step used, measured on the same device in the same run
(:func:`matmul_peak`), so the ratio does not depend on a datasheet. An fp32 step on CUDA whose
convolutions or matmuls ran as TF32 (cuDNN's default for convolutions; the fast path's ``tf32``
switch) is divided by the TF32 matmul peak, not the plain fp32 one (which would give more than
100%); ``mfu_peak`` names the peak used.

On CUDA every row has the step's GPU memory (:func:`~gqnbench.harness.common.cuda_step_memory`:
its own peak, the allocator's peaks and NVML's device-used bytes); on the CPU ``measure_memory``
adds the fresh-process peak RSS.

``costs.json`` fields::

    matmul_peak = {"fp32_flop_per_s", "bf16_flop_per_s", ("fp16_flop_per_s", "tf32_flop_per_s" on CUDA), "n",
                   "device", "<dtype>_flop_per_s_median", "<dtype>_rel_iqr"}   # peak = fastest call
    throughput  = [{"model", "preset", "mode", "batch", "dtype", "compiled", "channels_last", "fold_linear_ops", "device",
                    "fast_path": {"spec", <switch>: bool, "tf32_in_use": {"cudnn", "matmul"}, "notes"},
                    "median_s", "iqr_s", "q1_s", "q3_s", "rel_iqr", "rounds", "warmup",
                    "images_per_s", "flop_per_step", "flop_per_s", "mfu", "mfu_peak", "authors_flop_per_step",
                    "authors_flop_rate_of_peak", "peak_memory_bytes",
                    ("graph_pool_bytes", "allocator_peak_bytes", "allocator_reserved_peak_bytes", "nvml_used_bytes" on CUDA),
                    "compile_s", "graph_breaks", "recompiles", "load_avg_1m", "timer_overhead_s",
                    "timer_overhead_fraction"}]

``images_per_s`` = query images per step (batch x K) / median seconds.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Iterable, Sequence

import torch

from gqnbench.harness.common import (
    DTYPES,
    StepSpec,
    Timing,
    UnsupportedCase,
    cuda_step_memory,
    prepare_step,
    resolve_device,
    synchronize,
    time_calls,
    timer_overhead_s,
)
from gqnbench.harness.flops import step_flops
from gqnbench.step import tf32_flags, torch_flags


def peak_dtypes(dtypes: Sequence[str], device: torch.device) -> list[str]:
    """The matmul peaks to measure for steps in ``dtypes``: fp16 only on CUDA, and tf32 beside fp32 on CUDA."""
    cuda = device.type == "cuda"
    names = [d for d in dtypes if cuda or d not in ("fp16", "tf32")]
    if cuda and "fp32" in names and "tf32" not in names:
        names.append("tf32")
    return names


def _matmul(name: str, n: int, device: torch.device, gen: torch.Generator) -> Callable[[], object]:
    """A timed ``n x n`` product in ``name``'s arithmetic (fp32 on CUDA explicitly without TF32, tf32 with it)."""
    a = torch.randn(n, n, generator=gen).to(device, DTYPES[name])
    b = torch.randn(n, n, generator=gen).to(device, DTYPES[name])
    flags = tf32_flags(name == "tf32") if device.type == "cuda" and name in ("fp32", "tf32") else {}

    def product() -> object:
        with torch_flags(flags):
            return torch.mm(a, b)

    return product


def matmul_peak(
    device: str | torch.device = "cpu",
    dtypes: Sequence[str] = ("fp32", "bf16"),
    n: int | None = None,
    rounds: int = 5,
) -> dict:
    """Dense ``n x n`` matmul FLOP/s (2 n^3 per product) per dtype: the MFU denominator.

    ``n`` defaults to 4096 (the SPEC section 7 anchor: about 390 GFLOP/s fp32 and 2,100
    GFLOP/s bf16 on a 2-core AMX CPU); pass 2048 for a quick run on a CPU.
    """
    dev = resolve_device(device)
    n = n or 4096
    result: dict = {"n": n, "device": str(dev), "unit": "FLOP/s"}
    for name in peak_dtypes(dtypes, dev):
        timing = time_calls(_matmul(name, n, dev, torch.Generator().manual_seed(0)), dev, rounds=rounds, warmup=2)
        result.update(_peak_fields(name, n, timing))
    return result


def _peak_fields(name: str, n: int, timing: Timing) -> dict:
    # The peak is the best rate the device showed (fastest call), not the median: on a noisy
    # host the median understates the peak and pushes MFU above what the hardware allows.
    # Steps are still judged on their median, so MFU errs low.
    return {
        f"{name}_flop_per_s": 2.0 * n**3 / timing.min_s,
        f"{name}_flop_per_s_median": 2.0 * n**3 / timing.median_s,
        f"{name}_rel_iqr": timing.rel_iqr,
    }


def peak_for(dtype: str, peaks: dict | None, tf32: bool = False) -> float | None:
    """The matmul peak (FLOP/s) an MFU of a ``dtype`` step is measured against; see :func:`mfu_peak`."""
    return mfu_peak(dtype, peaks, tf32)[1]


def mfu_peak(dtype: str, peaks: dict | None, tf32: bool = False) -> tuple[str | None, float | None]:
    """The matmul peak an MFU of a ``dtype`` step is measured against, and its name.

    ``tf32``: the step's fp32 convolutions or matmuls ran as TF32, so the TF32 peak (where
    measured). fp16 falls back to bf16 where unmeasured.
    """
    if not peaks:
        return None, None
    name = "tf32" if dtype == "fp32" and tf32 and peaks.get("tf32_flop_per_s") else dtype
    if name == "fp16" and peaks.get("fp16_flop_per_s") is None:
        name = "bf16"
    value = peaks.get(f"{name}_flop_per_s")
    return (name, value) if value is not None else (None, None)


def _dynamo_counts() -> tuple[int, int]:
    from torch._dynamo.utils import counters

    breaks = int(sum(counters["graph_break"].values()))
    graphs = int(counters["stats"].get("unique_graphs", 0))
    return breaks, graphs


class _Case:
    """A prepared step plus what its row needs besides the timings (used by both measuring loops)."""

    def __init__(self, spec: StepSpec) -> None:
        self.spec = spec
        self.device = resolve_device(spec.device)
        self.batch = spec.resolved_batch()
        shape = (spec.model, spec.resolved_preset(), spec.mode, self.batch, spec.num_context, spec.num_queries)
        self.flop = step_flops(*shape)
        self.authors_flop = step_flops(*shape, authors_formulation=True)
        if spec.compiled:
            from torch._dynamo.utils import counters

            counters.clear()
        self.step = prepare_step(spec)
        self.first_s: float | None = None
        self.graph_breaks: int | None = None
        self.recompiles: int | None = None

    def first_call(self) -> None:
        """Time the first call alone: for a compiled step it includes tracing and code generation."""
        synchronize(self.device)
        start = time.perf_counter()
        self.step.run()
        synchronize(self.device)
        self.first_s = time.perf_counter() - start
        if self.spec.compiled:
            # Read now: a later case's torch._dynamo.reset() and counters.clear() would wipe them.
            self.graph_breaks, graphs = _dynamo_counts()
            self.recompiles = max(0, graphs - 1)

    def memory(self) -> dict:
        """The step's GPU memory (one more call; see ``cuda_step_memory``); empty on the CPU."""
        return cuda_step_memory(self.step) if self.device.type == "cuda" else {}

    def row(self, timing: Timing, warmup: int, peaks: dict | None, memory: dict, load_avg) -> dict:
        """The throughput row (see the module docstring) for ``timing``, this case's measured rounds."""
        compiled = self._compile_fields(timing.median_s)  # read the dynamo counters before anything else runs
        overhead = timer_overhead_s(self.device, rounds=200)
        fast = self.step.trainer.fast_path_record()
        peak_name, peak = mfu_peak(self.spec.dtype, peaks, any(fast["tf32_in_use"].values()))
        return {
            **self._spec_fields(),
            "fast_path": fast,
            **_timing_fields(timing),
            "warmup": warmup,
            "first_call_s": self.first_s,
            **self._rate_fields(timing.median_s, peak),
            "mfu_peak": peak_name,
            "peak_memory_bytes": memory.get("peak_memory_bytes"),
            **{k: v for k, v in memory.items() if k != "peak_memory_bytes"},
            **compiled,
            "load_avg_1m": load_avg,
            "timer_overhead_s": overhead,
            "timer_overhead_fraction": overhead / timing.median_s,
        }

    def _spec_fields(self) -> dict:
        spec = self.spec
        return {
            "model": spec.model,
            "preset": spec.preset,
            "mode": spec.mode,
            "batch": self.batch,
            "num_context": spec.num_context,
            "num_queries": spec.num_queries,
            "dtype": spec.dtype,
            "compiled": spec.compiled,
            "compile_backend": spec.compile_backend if spec.compiled else None,
            "channels_last": spec.channels_last,
            "flush_denormal": spec.flush_denormal,
            "fold_linear_ops": self.step.model.config.fold_linear_ops,
            "device": str(self.device),
        }

    def _rate_fields(self, median_s: float, peak: float | None) -> dict:
        flop_per_s = self.flop / median_s
        return {
            "images_per_s": self.step.images_per_step / median_s,
            "flop_per_step": self.flop,
            "flop_per_s": flop_per_s,
            "mfu": flop_per_s / peak if peak else None,
            # The same time against the FLOPs of the authors' formulation (SPEC section 7's
            # convention): a speed comparable with their "48% of peak", not a utilisation.
            "authors_flop_per_step": self.authors_flop,
            "authors_flop_rate_of_peak": self.authors_flop / median_s / peak if peak else None,
        }

    def _compile_fields(self, median_s: float) -> dict:
        if self.spec.compiled and self.graph_breaks is not None:
            # Count recompiles that happened during the timed rounds too.
            breaks, graphs = _dynamo_counts()
            self.graph_breaks, self.recompiles = max(self.graph_breaks, breaks), max(self.recompiles, graphs - 1)
        compile_s = None
        if self.spec.compiled and self.first_s is not None:
            compile_s = max(0.0, self.first_s - median_s)
        return {"compile_s": compile_s, "graph_breaks": self.graph_breaks, "recompiles": self.recompiles}


def _timing_fields(timing: Timing) -> dict:
    return timing.fields("median_s", "iqr_s", "q1_s", "q3_s", "rel_iqr", "min_s", "times_s", "rounds")


def _load_avg() -> float | None:
    # Other processes on the machine inflate and spread step times; rows keep the evidence.
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def measure_throughput(
    spec: StepSpec,
    rounds: int = 5,
    warmup: int = 2,
    peaks: dict | None = None,
    measure_memory: bool = False,
    on_round: Callable[[int, float], None] | None = None,
) -> dict:
    """One throughput row (see the module docstring) for ``spec``.

    On CUDA the row always has the step's GPU memory (one more call after the rounds);
    ``measure_memory`` adds ``peak_memory_bytes`` on the CPU: the allocator's peak of tensor bytes
    during one step in a fresh process (a process start more), with that process's peak RSS beside
    it as ``peak_rss_bytes`` (mostly the runtime, for display).
    """
    case = _Case(spec)
    if warmup > 0:
        case.first_call()
    load_avg = _load_avg()
    timing = time_calls(case.step.run, case.device, rounds=rounds, warmup=max(0, warmup - 1), on_round=on_round)
    memory = case.memory()
    if case.device.type != "cuda" and measure_memory:
        from gqnbench.harness.memory import measure_cpu_step_fresh_process

        fresh = measure_cpu_step_fresh_process(spec)
        memory = {"peak_memory_bytes": fresh["peak_allocated_bytes"], "peak_rss_bytes": fresh["peak_rss_bytes"]}
    return case.row(timing, warmup, peaks, memory, load_avg)


def measure_interleaved(
    specs: Sequence[StepSpec],
    rounds: int = 5,
    warmup: int = 2,
    peaks: dict | None = None,
    matmul_n: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> tuple[list[dict], dict | None]:
    """Rows for ``specs`` measured round-robin: round r times every case once before round r+1.

    For A/B comparisons on a machine that other work shares: a burst of background load
    then slows every case of a round alike instead of whichever case happened to run
    during it. With ``matmul_n`` the fp32/bf16 matmul peak joins the rotation too (its
    per-dtype medians are returned as the peaks the rows' MFU uses).
    """
    if sum(spec.compiled for spec in specs) > 1:
        # prepare_step resets dynamo per compiled case, which would force the earlier ones to recompile.
        raise ValueError("measure_interleaved takes at most one compiled case")
    cases = [_warm_case(spec, warmup, progress) for spec in specs]
    device = cases[0].device if cases else resolve_device("cpu")
    matmuls = _MatmulRotation(matmul_n, device) if matmul_n else None
    times: list[list[float]] = [[] for _ in cases]
    load_avg = _load_avg()
    for r in range(rounds):
        if progress is not None:
            progress(f"round {r + 1}/{rounds}")
        if matmuls is not None:
            matmuls.time_round()
        for case, bucket in zip(cases, times):
            bucket.extend(time_calls(case.step.run, case.device, rounds=1, warmup=0).times_s)
    if matmuls is not None:
        peaks = matmuls.peaks()
    rows = [case.row(Timing.from_times(ts), warmup, peaks, case.memory(), load_avg) for case, ts in zip(cases, times)]
    return rows, peaks


def _warm_case(spec: StepSpec, warmup: int, progress: Callable[[str], None] | None) -> _Case:
    """A prepared case after ``warmup`` calls, the first of them timed alone (a compiled step compiles in it)."""
    if progress is not None:
        progress(f"preparing {spec.label()}")
    case = _Case(spec)
    for i in range(warmup):
        if i == 0:
            case.first_call()
        else:
            case.step.run()
    return case


class _MatmulRotation:
    """The fp32 and bf16 (and on CUDA tf32) ``n x n`` matmuls that join the round-robin: three calls each per round."""

    def __init__(self, n: int, device: torch.device) -> None:
        self.n = n
        self.device = device
        self.fns: dict[str, Callable[[], object]] = {}
        self.times: dict[str, list[float]] = {}
        gen = torch.Generator().manual_seed(0)
        for name in peak_dtypes(("fp32", "bf16"), device):
            self.fns[name] = _matmul(name, n, device, gen)
            time_calls(self.fns[name], device, rounds=1, warmup=2)
            self.times[name] = []

    def time_round(self) -> None:
        for name, fn in self.fns.items():
            self.times[name].extend(time_calls(fn, self.device, rounds=3, warmup=0).times_s)

    def peaks(self) -> dict:
        """The peaks the rows' MFU uses, from every round's calls (see :func:`_peak_fields`)."""
        peaks: dict = {"n": self.n, "device": str(self.device), "unit": "FLOP/s"}
        for name, ts in self.times.items():
            peaks.update(_peak_fields(name, self.n, Timing.from_times(ts)))
        return peaks


def matrix_specs(
    models: Iterable[str],
    preset: str,
    modes: Iterable[str] = ("train", "infer"),
    batches: Iterable[int | None] = (None,),
    dtypes: Iterable[str] = ("fp32", "bf16"),
    compiled: Iterable[bool] = (False, True),
    channels_last: Iterable[bool] = (False,),
    fast_paths: Iterable[str] = ("off",),
    device: str = "cpu",
    **spec_kwargs,
) -> list[StepSpec]:
    """Every combination as a :class:`StepSpec`, leaving out what ``device`` cannot run (fp16 on the CPU, a
    CUDA-only fast path switch)."""
    dev = resolve_device(device)
    specs = []
    for m, mode, b, d, c, cl, f in itertools.product(
        models, modes, batches, dtypes, compiled, channels_last, fast_paths
    ):
        spec = StepSpec(
            m, preset, mode=mode, batch=b, dtype=d, compiled=c, channels_last=cl, device=str(dev), fast_path=f,
            **spec_kwargs,
        )  # fmt: skip
        if d == "fp16" and dev.type != "cuda":
            continue
        try:
            spec.fast()
        except UnsupportedCase:
            continue
        specs.append(spec)
    return specs


def throughput_matrix(
    models: Iterable[str],
    preset: str,
    rounds: int = 5,
    warmup: int = 2,
    peaks: dict | None = None,
    measure_memory: bool = False,
    progress: Callable[[str], None] | None = None,
    **matrix,
) -> list[dict]:
    """Every combination (``matrix``: the keywords of :func:`matrix_specs`) measured one after the other, as rows."""
    rows = []
    for spec in matrix_specs(models, preset, **matrix):
        try:
            if progress is not None:
                progress(spec.label())
            rows.append(measure_throughput(spec, rounds, warmup, peaks, measure_memory))
        except UnsupportedCase:
            continue
    return rows
