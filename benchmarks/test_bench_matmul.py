"""The dense matmul peak per dtype (the MFU denominator) and the timer's own overhead, as benchmarks.

Anchors (the SPEC) for a 2-core AMX CPU at 4096^2: about 390 GFLOP/s fp32 and 2,100 GFLOP/s bf16.
"""

from __future__ import annotations

import pytest
import torch

from gqnbench.harness.common import DTYPES, synchronize


@pytest.mark.parametrize("dtype", ["fp32", "bf16", "fp16"])
def test_matmul_peak(benchmark, measured, dtype, bench_settings):
    bench_settings.skip_if_unavailable()
    device = torch.device(bench_settings.device)
    if dtype == "fp16" and device.type != "cuda":
        pytest.skip("fp16 matmul peak is measured on CUDA only")
    n = bench_settings.matmul_n
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device, DTYPES[dtype])
    b = torch.randn(n, n, generator=gen).to(device, DTYPES[dtype])

    def target():
        torch.mm(a, b)
        synchronize(device)

    benchmark.group = f"matmul-peak-{device.type}"  # before pedantic: the stats copy it there
    benchmark.pedantic(target, rounds=10, warmup_rounds=2, iterations=1)
    median = measured()[0]
    benchmark.extra_info.update(
        {"mode": "matmul", "dtype": dtype, "device": str(device), "n": n, "flop_per_s": 2.0 * n**3 / median}
    )


def test_timer_overhead(benchmark, bench_settings):
    """An empty target: what pytest-benchmark's own timing adds to every measured round."""
    bench_settings.skip_if_unavailable()
    device = torch.device(bench_settings.device)
    benchmark.group = "harness-overhead"
    benchmark.pedantic(lambda: synchronize(device), rounds=1000, warmup_rounds=10, iterations=1)
    benchmark.extra_info.update({"mode": "overhead", "device": str(device)})
