"""Name the machine a run was measured on, as a file-name slug for its pinned baseline.

GPU runs are named after the GPU model (``nvidia-h100-80gb-hbm3``), CPU runs after the CPU
model (``cpu-intel-xeon-processor``). Timings only compare between identical device models,
so the baseline file is chosen by this name, never by host name or date.
"""

from __future__ import annotations

import platform
import re
from pathlib import Path


def slugify(text: str) -> str:
    """Lower-case, trademark marks and clock speeds dropped, runs of other characters -> '-'."""
    text = text.lower()
    text = re.sub(r"\((r|tm|c)\)", " ", text)
    text = re.sub(r"@.*$", " ", text)  # "@ 2.60GHz": the model already says it
    text = re.sub(r"\bcpu\b", " ", text)
    slug = re.sub(r"[^a-z0-9]+", "-", text).strip("-")
    return slug or "unknown"


def cpu_model_name() -> str:
    """The CPU model string (``/proc/cpuinfo``'s 'model name', else what platform reports)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.lower().startswith("model name") and ":" in line:
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"


def gpu_model_name(index: int = 0) -> str | None:
    """The GPU model via NVML (no CUDA context needed), else torch; None without an NVIDIA GPU."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            name = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(index))
        finally:
            pynvml.nvmlShutdown()
        return name.decode() if isinstance(name, bytes) else str(name)
    except Exception:  # NVML missing or no driver: try torch, which may still see a GPU
        pass
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(index)
    except Exception:
        pass
    return None


def device_slug(device: str, gpu_name: str | None = None, cpu_name: str | None = None) -> str:
    """Baseline name for ``device`` ('cuda', 'cuda:N' or 'cpu'), detecting models not given."""
    if device.startswith("cuda"):
        index = int(device.split(":", 1)[1]) if ":" in device else 0
        name = gpu_name or gpu_model_name(index)
        if not name:
            raise RuntimeError(f"--device {device}: no NVIDIA GPU found (NVML and torch.cuda both see none)")
        return slugify(name)
    if device != "cpu":
        raise ValueError(f"unknown device {device!r}; use cuda, cuda:N or cpu")
    return "cpu-" + slugify(cpu_name or cpu_model_name())
