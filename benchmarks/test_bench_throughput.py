"""The throughput matrix under pytest-benchmark: one benchmark per model x mode x dtype x eager/compiled.

Each step runs in ``benchmark.pedantic(rounds, warmup_rounds, iterations=1)`` (a paper-size
step takes seconds; pytest-benchmark's automatic calibration would run it dozens of times).
On CUDA the target synchronises before it returns, so the timer sees the GPU work, not
the launch. A compiled case runs its first (compiling) call before the timed rounds and
records it as ``compile_s``, apart from the step time. ``group`` is
``<mode>-<model>-<preset>-b<batch>`` so eager/compiled and fp32/bf16 of one step sit side
by side in the table; ``extra_info`` carries the costs (keys below) and the ratio to the
reference matmul of the step's dtype timed before each round (``benchmarks/conftest.py``),
with ``mfu_vs_ref``: the step's FLOP rate as a share of that reference's. The full matrix also
times the training step in the authors' formulation (``fold_linear_ops=False``, labelled
``unfolded``) next to the folded default, the benchmark behind the speed-up it claims.

``peak_memory_bytes`` is the allocator's peak of tensor bytes during the case, a property of
the code and its shapes (:mod:`gqnbench.harness.memory`): on CUDA ``max_memory_allocated``
over the measured rounds less what was alive before the case; on CPU the peak of one eager
step in a fresh process (compiled steps would compile again there: not measured), with that
process's peak RSS beside it as ``peak_rss_bytes`` (display only: mostly the runtime).
"""

from __future__ import annotations

import time

import pytest
import torch

from gqnbench.harness.common import StepSpec, UnsupportedCase, prepare_step, synchronize
from gqnbench.harness.flops import step_flops
from gqnbench.harness.memory import CudaCasePeak
from gqnbench.harness.throughput import peak_for
from gqnbench.step import check_precision

_memory_cache: dict[tuple, dict] = {}


def _cpu_peaks(spec: StepSpec) -> dict:
    """Fresh-process allocator peak and RSS of one eager step, once per case shape."""
    if spec.compiled:
        return {}
    key = (spec.model, spec.preset, spec.mode, spec.batch, spec.dtype, spec.overrides)
    if key not in _memory_cache:
        from gqnbench.harness.memory import measure_cpu_step_fresh_process

        _memory_cache[key] = measure_cpu_step_fresh_process(spec)
    return _memory_cache[key]


def test_step(benchmark, measured, request, reference, step_case: StepSpec, bench_settings):
    spec = step_case
    bench_settings.skip_if_unavailable()
    try:
        check_precision(spec.dtype, torch.device(spec.device))
        # Made before the step, so neither the reference's buffers nor earlier cases count in its peak.
        ref = reference(spec.device, spec.dtype, bench_settings.reference_n)
        cuda_peak = CudaCasePeak(torch.device(spec.device)) if spec.device == "cuda" else None
        step = prepare_step(spec)
    except UnsupportedCase as exc:
        pytest.skip(str(exc))
    # Requested only now, so a skipped case never waits for the session's peak matmul.
    matmul_peaks = request.getfixturevalue("matmul_peaks")
    device = step.device
    batch = spec.resolved_batch()
    flop = step_flops(spec.model, spec.resolved_preset(), spec.mode, batch, spec.num_context, spec.num_queries)

    compile_s = graph_breaks = None
    if spec.compiled:
        from torch._dynamo.utils import counters

        counters.clear()
        start = time.perf_counter()
        step.run()
        synchronize(device)
        compile_s = time.perf_counter() - start  # first call: trace + codegen + one step
        graph_breaks = int(sum(counters["graph_break"].values()))

    if cuda_peak is not None:

        def target():
            step.run()
            torch.cuda.synchronize(device)

        cuda_peak.reset()
    else:
        target = step.run

    # pytest-benchmark copies the group when the stats are made (inside pedantic): set it first.
    benchmark.group = f"{spec.mode}-{spec.model}-{spec.preset}-b{batch}"
    benchmark.pedantic(
        target, setup=ref.setup, rounds=bench_settings.rounds, warmup_rounds=bench_settings.warmup, iterations=1
    )
    median, iqr = measured()
    ref.record(benchmark)
    if cuda_peak is not None:
        memory = {"peak_memory_bytes": cuda_peak.peak(), "peak_memory_method": "cuda allocator, less earlier cases"}
    else:
        cpu = _cpu_peaks(spec)
        memory = {
            "peak_memory_bytes": cpu.get("peak_allocated_bytes"),
            "peak_memory_method": "cpu allocator (torch.profiler), fresh process" if cpu else None,
            "peak_rss_bytes": cpu.get("peak_rss_bytes"),
        }
    if compile_s is not None:
        compile_s = max(0.0, compile_s - median)
    peak = peak_for(spec.dtype, matmul_peaks)
    benchmark.extra_info.update(
        {
            "model": spec.model,
            "preset": spec.preset,
            "mode": spec.mode,
            "batch": batch,
            "num_queries": spec.num_queries,
            "dtype": spec.dtype,
            "compiled": spec.compiled,
            "channels_last": spec.channels_last,
            "flush_denormal": spec.flush_denormal,
            "fold_linear_ops": step.model.config.fold_linear_ops,
            "overrides": dict(spec.overrides),
            "device": str(device),
            "params": sum(p.numel() for p in step.model.parameters()),
            "flop_per_step": flop,
            "images_per_s": step.images_per_step / median,
            "flop_per_s": flop / median,
            "mfu": flop / median / peak if peak else None,
            "matmul_peak_flop_per_s": peak,
            "mfu_vs_ref": flop / (benchmark.extra_info["ratio"] * benchmark.extra_info["ref_flop_per_s"]),
            **memory,
            "compile_s": compile_s,
            "graph_breaks": graph_breaks,
            "rel_iqr": iqr / median if median else None,
        }
    )
