"""Memory: NVML is null without a driver; CPU peak RSS of one step comes from a fresh process."""

from __future__ import annotations

import pytest
import torch

from gqnbench.harness.common import StepSpec
from gqnbench.harness.memory import measure_memory, nvml_snapshot


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU driver")
def test_nvml_is_null_without_a_driver():
    assert nvml_snapshot() is None


def test_nvml_library_not_found_gives_null(monkeypatch):
    pynvml = pytest.importorskip("pynvml")

    def missing():
        raise pynvml.NVMLError_LibraryNotFound()

    monkeypatch.setattr(pynvml, "nvmlInit", missing)
    assert nvml_snapshot() is None


def test_cpu_peak_rss_of_a_step_in_a_fresh_process():
    # cpu-preset gqn at batch 16: activations of tens of MiB, clearly above the sampler's resolution.
    row = measure_memory(StepSpec("gqn", "cpu", mode="train", batch=8))
    assert row["device"] == "cpu"
    assert row["nvml"] is None or {"memory_used_bytes", "memory_total_bytes"} <= set(row["nvml"])
    assert row["peak_rss_bytes"] > 0
    assert row["peak_rss_bytes"] >= row["baseline_rss_bytes"] > row["runtime_rss_bytes"] > 0
    assert row["step_rss_increase_bytes"] == row["peak_rss_bytes"] - row["baseline_rss_bytes"]
    assert row["step_rss_increase_bytes"] > 1 << 20  # a training step allocates activations and gradients


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_peak_allocated():
    row = measure_memory(StepSpec("gqn", "tiny", mode="train", device="cuda"))
    assert row["peak_allocated_bytes"] > 0 and row["peak_reserved_bytes"] >= row["peak_allocated_bytes"]
