"""Peak memory of one training step and of inference, on CUDA and on CPU, plus NVML device readings.

CUDA: ``torch.cuda.reset_peak_memory_stats`` after a warm-up step (so the optimizer state
already exists, as in every later step), then one measured step;
``max_memory_allocated`` (tensors, less what an earlier case left alive: :class:`CudaCasePeak`)
and ``max_memory_reserved`` (the caching allocator's pool) are read after it. NVML (``nvidia-ml-py``, module ``pynvml``) adds what the driver
sees: device memory used, power draw and utilisation. Without an NVIDIA driver NVML
raises ``NVMLError_LibraryNotFound``; that is recorded as null, never an error.

CPU: measured in a FRESH Python process (``python -m gqnbench.harness.memory_worker``), so
nothing the calling process did before (other models, larger batches, a compile) can change
the figure. The worker builds the model and runs the warm-up step under ``torch.profiler``
with ``profile_memory=True``, then the measured step. ``peak_allocated_bytes`` is the CPU
counterpart of CUDA's ``max_memory_allocated``: the most bytes of tensors alive at once
during the measured step (the model, its optimizer state and the batch included), replayed
from the allocation and free events the CPU allocator reports to the profiler. It depends on
the code, the shapes and (by a few per-thread buffers) the thread count, not on the host, its
libraries or the allocator's caching.
The resident set size (RSS) is kept beside it for display: ``getrusage``'s ``ru_maxrss``
(the exact high-water mark, when the step raises it) and a 1 ms psutil sampler of the current
RSS. The RSS is mostly the runtime (the interpreter, torch's libraries and the code pages and
thread arenas their kernels touch), which differs between hosts and library builds; it is
not a measure of the code.

``costs.json`` field::

    memory[model] = {"train": row, "infer": row}   (quick costs runs: "train" only)
    row = {"device", "mode", "batch", "dtype", "peak_allocated_bytes", "allocated_before_step_bytes",
           "peak_reserved_bytes" (CUDA),
           "peak_rss_bytes", "step_rss_increase_bytes", "baseline_rss_bytes", "runtime_rss_bytes" (CPU),
           "nvml": {"memory_used_bytes", "memory_total_bytes", "power_w", "gpu_util_percent",
                    "memory_util_percent", "name"} or null}
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import resource
import subprocess
import sys
import threading
import time

import torch

from gqnbench.harness.common import StepSpec, prepare_step, resolve_device, synchronize, time_calls


def nvml_snapshot(index: int = 0) -> dict | None:
    """NVML readings for GPU ``index``; None when NVML, its library or the driver is missing."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:  # NVMLError_LibraryNotFound, _DriverNotLoaded, ...: no NVIDIA driver here
        return None
    try:
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)

        def read(fn, *args):
            try:
                return fn(handle, *args)
            except pynvml.NVMLError:  # e.g. NotSupported on some boards/virtual GPUs
                return None

        mem = read(pynvml.nvmlDeviceGetMemoryInfo)
        power_mw = read(pynvml.nvmlDeviceGetPowerUsage)
        util = read(pynvml.nvmlDeviceGetUtilizationRates)
        name = read(pynvml.nvmlDeviceGetName)
        return {
            "name": name.decode() if isinstance(name, bytes) else name,
            "memory_used_bytes": int(mem.used) if mem is not None else None,
            "memory_total_bytes": int(mem.total) if mem is not None else None,
            "power_w": power_mw / 1000.0 if power_mw is not None else None,
            "gpu_util_percent": int(util.gpu) if util is not None else None,
            "memory_util_percent": int(util.memory) if util is not None else None,
        }
    except pynvml.NVMLError:
        return None
    finally:
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError:
            pass


def _maxrss_bytes() -> int:
    # Linux reports kilobytes, macOS bytes.
    scale = 1 if sys.platform == "darwin" else 1024
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * scale


class _RssSampler:
    """Sample this process's RSS every ``interval_s`` on a thread; ``peak`` is the largest seen."""

    def __init__(self, interval_s: float = 0.001) -> None:
        import psutil

        self._proc = psutil.Process()
        self.interval_s = interval_s
        self.peak = self._proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            time.sleep(self.interval_s)

    def __enter__(self) -> _RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)


def _current_rss() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def _allocator_peak(events: list, start_ns: int, end_ns: int) -> tuple[int, int]:
    """(bytes alive when ``[start_ns, end_ns]`` opens, most bytes alive inside it) from profiler memory events.

    Each ``[memory]`` event is one allocation (positive bytes) or free (negative) the CPU
    allocator reported; their running sum is the bytes of tensors alive since profiling began.
    """
    live = before = peak = 0
    opened = False
    for e in sorted((e for e in events if e.name() == "[memory]"), key=lambda e: e.start_ns()):
        if not opened and e.start_ns() >= start_ns:
            opened, before, peak = True, live, live
        live += e.nbytes()
        if opened and e.start_ns() <= end_ns:
            peak = max(peak, live)
    return before, (peak if opened else live)


def measure_cpu_step_in_process(spec: StepSpec, warmup: int = 1, timing_rounds: int = 0) -> dict:
    """Allocator peak and RSS of one step in THIS process (the worker side; call :func:`measure_memory` instead).

    With ``timing_rounds`` > 0 the same process then times that many further steps (median
    seconds in ``step_s``), so a scaling point costs one process start, not two.
    """
    from torch.profiler import ProfilerActivity, profile, record_function

    runtime_rss = _current_rss()
    # Profiled from before the model exists, so the running sum of allocations is every tensor alive.
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step = prepare_step(spec)
        for _ in range(warmup):
            step.run()
        baseline = _current_rss()
        maxrss_before = _maxrss_bytes()
        with _RssSampler() as sampler, record_function("gqnbench.measured_step"):
            step.run()
        maxrss_after = _maxrss_bytes()
    events = prof.profiler.kineto_results.events()
    window = next(e for e in events if e.name() == "gqnbench.measured_step")
    before_step, peak_allocated = _allocator_peak(events, window.start_ns(), window.end_ns())
    # ru_maxrss is exact but only moves when the step beats the older high-water mark.
    peak = max(sampler.peak, maxrss_after if maxrss_after > maxrss_before else 0)
    timing = {}
    if timing_rounds > 0:
        t = time_calls(step.run, step.device, rounds=timing_rounds, warmup=0)
        timing = {"step_s": t.median_s, "step_iqr_s": t.iqr_s, "rounds": timing_rounds}
    return {
        **timing,
        "peak_allocated_bytes": int(peak_allocated),
        "allocated_before_step_bytes": int(before_step),
        "peak_rss_bytes": int(peak),
        "step_rss_increase_bytes": int(max(0, peak - baseline)),
        "baseline_rss_bytes": int(baseline),
        "runtime_rss_bytes": int(runtime_rss),
        "method": "fresh process; peak_allocated: CPU allocator events (torch.profiler); "
        "peak_rss: max(ru_maxrss if raised, 1 ms psutil RSS samples)",
    }


def _spec_to_json(spec: StepSpec) -> str:
    return json.dumps(dataclasses.asdict(spec))


def _spec_from_json(text: str) -> StepSpec:
    data = json.loads(text)
    data["overrides"] = tuple(tuple(kv) for kv in data.get("overrides", ()))
    return StepSpec(**data)


def measure_cpu_step_fresh_process(
    spec: StepSpec, warmup: int = 1, timing_rounds: int = 0, timeout_s: float = 1800
) -> dict:
    """Run :func:`measure_cpu_step_in_process` in a new interpreter and return its result."""
    cmd = [
        sys.executable,
        "-m",
        "gqnbench.harness.memory_worker",
        "--spec",
        _spec_to_json(spec),
        "--warmup",
        str(warmup),
        "--timing-rounds",
        str(timing_rounds),
        "--threads",
        str(torch.get_num_threads()),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False, env=dict(os.environ))
    if proc.returncode != 0:
        raise RuntimeError(
            f"memory worker for {spec.label()} failed (exit {proc.returncode}):\n{proc.stderr.strip()[-2000:]}"
        )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"memory worker for {spec.label()} printed no result; stderr:\n{proc.stderr[-2000:]}")
    return json.loads(lines[-1])


class CudaCasePeak:
    """One case's own peak of CUDA tensor bytes, whatever ran earlier in the process.

    Made before the case builds anything: it collects garbage and notes the bytes still alive
    (an earlier case's leftovers), which :meth:`peak` leaves out of the allocator's peak
    since :meth:`reset`, so the figure is what a fresh process would show.
    """

    def __init__(self, device: torch.device) -> None:
        gc.collect()
        self.device = device
        self.resident = int(torch.cuda.memory_allocated(device))

    def reset(self) -> None:
        synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)

    def peak(self) -> int:
        synchronize(self.device)
        return int(torch.cuda.max_memory_allocated(self.device)) - self.resident


def measure_cuda_step(spec: StepSpec, warmup: int = 1) -> dict:
    """Peak CUDA allocated/reserved bytes of one step after ``warmup`` steps, plus an NVML snapshot.

    ``peak_allocated_bytes`` leaves out what was alive before the case (see :class:`CudaCasePeak`).
    """
    device = resolve_device(spec.device)
    case = CudaCasePeak(device)
    step = prepare_step(spec)
    for _ in range(warmup):
        step.run()
    case.reset()
    before = torch.cuda.memory_allocated(device)
    step.run()
    peak = case.peak()
    return {
        "peak_allocated_bytes": peak,
        "allocated_before_step_bytes": int(before) - case.resident,
        "peak_reserved_bytes": int(torch.cuda.max_memory_reserved(device)),
        "step_allocated_increase_bytes": peak + case.resident - int(before),
        "nvml": nvml_snapshot(device.index or 0),
    }


def measure_memory(spec: StepSpec, warmup: int = 1) -> dict:
    """Peak memory of one ``spec`` step: the allocator's peak tensor bytes (CUDA in process, CPU in a fresh one)."""
    device = resolve_device(spec.device)
    row = {"device": str(device), "mode": spec.mode, "batch": spec.resolved_batch(), "dtype": spec.dtype}
    row["compiled"] = spec.compiled
    if device.type == "cuda":
        row.update(measure_cuda_step(spec, warmup))
    else:
        row.update(measure_cpu_step_fresh_process(spec, warmup))
        row["nvml"] = nvml_snapshot()
    return row


def memory_report(
    model: str,
    preset: str,
    device: str = "cpu",
    batch: int | None = None,
    dtype: str = "fp32",
    modes: tuple[str, ...] = ("train", "infer"),
    overrides: tuple[tuple[str, object], ...] = (),
) -> dict:
    """``memory[model]`` of costs.json: the train step and/or inference at one batch and dtype."""
    return {
        mode: measure_memory(
            StepSpec(model, preset, mode=mode, batch=batch, dtype=dtype, device=device, overrides=overrides)
        )
        for mode in modes
    }


def _worker_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="gqnbench memory worker: peak RSS of one step in a fresh process")
    parser.add_argument("--spec", required=True, help="StepSpec as JSON")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--timing-rounds", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    result = measure_cpu_step_in_process(
        _spec_from_json(args.spec), warmup=args.warmup, timing_rounds=args.timing_rounds
    )
    print(json.dumps(result))
    return 0
