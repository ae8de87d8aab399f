"""Memory: NVML is null without a driver; the CPU peak of one step is the allocator's, from a fresh process."""

from __future__ import annotations

import pytest
import torch

from gqnbench.harness.common import StepSpec
from gqnbench.harness.memory import measure_cpu_step_in_process, measure_memory, nvml_snapshot
from gqnbench.models import build_model
from gqnbench.presets import get_preset


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU driver")
def test_nvml_is_null_without_a_driver():
    assert nvml_snapshot() is None


def test_nvml_library_not_found_gives_null(monkeypatch):
    pynvml = pytest.importorskip("pynvml")

    def missing():
        raise pynvml.NVMLError_LibraryNotFound()

    monkeypatch.setattr(pynvml, "nvmlInit", missing)
    assert nvml_snapshot() is None


def test_cpu_peak_of_a_step_in_a_fresh_process():
    # cpu-preset gqn at batch 8: activations of several MiB, far above the per-thread buffers.
    row = measure_memory(StepSpec("gqn", "cpu", mode="train", batch=8))
    assert row["device"] == "cpu"
    assert row["nvml"] is None or {"memory_used_bytes", "memory_total_bytes"} <= set(row["nvml"])
    # The allocator's figure: the model, Adam state and batch alive before the step, activations on top.
    params = 4 * sum(p.numel() for p in build_model("gqn", get_preset("cpu").models["gqn"]).parameters())
    assert row["allocated_before_step_bytes"] >= 4 * params  # weights, gradients and two Adam moments (fp32)
    assert row["peak_allocated_bytes"] > row["allocated_before_step_bytes"] + (1 << 20)
    # The RSS beside it is mostly the runtime, far above the tensors.
    assert row["peak_rss_bytes"] >= row["baseline_rss_bytes"] > row["runtime_rss_bytes"] > row["peak_allocated_bytes"]
    assert row["step_rss_increase_bytes"] == row["peak_rss_bytes"] - row["baseline_rss_bytes"]


def test_cpu_peak_does_not_depend_on_what_the_process_ran_before():
    """The old RSS figure moved between hosts; the allocator's peak is the same in a warm process as in a fresh one."""
    spec = StepSpec("gqn", "tiny", mode="infer")
    fresh = measure_memory(spec)["peak_allocated_bytes"]
    measure_cpu_step_in_process(StepSpec("gqn", "cpu", mode="train", batch=8))  # a bigger case first, here
    again = measure_cpu_step_in_process(spec)
    assert again["peak_allocated_bytes"] == fresh
    assert 0 < fresh < 16 << 20  # a tiny model's tensors, not the runtime's hundreds of MiB


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_peak_allocated():
    row = measure_memory(StepSpec("gqn", "tiny", mode="train", device="cuda"))
    assert row["peak_allocated_bytes"] > 0 and row["peak_reserved_bytes"] >= row["peak_allocated_bytes"]
