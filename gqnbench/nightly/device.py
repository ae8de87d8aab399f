"""Name and describe the machine a run was measured on: its baseline's file name and its host record.

GPU runs are named after the GPU model (``nvidia-h100-80gb-hbm3``), CPU runs after the CPU
model (``cpu-intel-xeon-processor``); the baseline file is chosen by this name, never by host
name or date. One name covers machines of different speed (a CPU model string says nothing
of the clock or the hypervisor), so a run also records its host (:func:`host_info`): the
CPU model string and signature, cores and CPUs, the instruction-set features the kernels
choose between, and on CUDA the GPU's name, memory, driver and clocks (NVML). The gate
compares the two hosts' classes (:data:`CLASS_FIELDS`) and says in the verdict when they
differ (:func:`compare_hosts`).
"""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path
from typing import Any

# The instruction-set features that decide which matmul/convolution kernels torch's CPU
# libraries run (and so a step's speed relative to another host's).
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16",
             "amx_int8", "asimd", "sve", "sve2")  # fmt: skip
# What makes two hosts the same class: same kernels, same parallelism, same GPU.
CLASS_FIELDS = ("cpu_model", "cpu_signature", "physical_cores", "usable_cpus", "isa", "gpu_name", "gpu_memory_bytes")
# Said when they differ, but hosts of one class may differ in them (and ratios absorb them).
NOTED_FIELDS = ("logical_cpus", "gpu_driver", "gpu_max_sm_clock_mhz", "gpu_max_memory_clock_mhz", "gpu_app_sm_clock_mhz",
                "gpu_power_limit_w")  # fmt: skip


def slugify(text: str) -> str:
    """Lower-case, trademark marks and clock speeds dropped, runs of other characters -> '-'."""
    text = text.lower()
    text = re.sub(r"\((r|tm|c)\)", " ", text)
    text = re.sub(r"@.*$", " ", text)  # "@ 2.60GHz": the model already says it
    text = re.sub(r"\bcpu\b", " ", text)
    slug = re.sub(r"[^a-z0-9]+", "-", text).strip("-")
    return slug or "unknown"


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of ``/proc/cpuinfo`` (lower-case keys); empty off Linux."""
    path = Path("/proc/cpuinfo")
    fields: dict[str, str] = {}
    if path.is_file():
        for line in path.read_text(errors="replace").splitlines():
            if not line.strip():
                break
            if ":" in line:
                key, value = line.split(":", 1)
                fields[key.strip().lower()] = value.strip()
    return fields


def cpu_model_name() -> str:
    """The CPU model string (``/proc/cpuinfo``'s 'model name', else what platform reports)."""
    return _cpuinfo().get("model name") or platform.processor() or platform.machine() or "unknown"


def host_info(device: str = "cpu") -> dict[str, Any]:
    """The host record of a run on ``device`` (keys: :class:`gqnbench.nightly.schema.HostRecord`)."""
    info = _cpuinfo()
    flags = set((info.get("flags") or info.get("features") or "").split())
    signature = None
    if "cpu family" in info:
        signature = f"family {info['cpu family']} model {info.get('model', '?')} stepping {info.get('stepping', '?')}"
    try:
        import psutil

        physical, memory = psutil.cpu_count(logical=False), int(psutil.virtual_memory().total)
    except ImportError:
        physical = memory = None
    host: dict[str, Any] = {
        "cpu_model": cpu_model_name(),
        "cpu_signature": signature,
        "physical_cores": physical,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "isa": sorted(flags & set(ISA_FLAGS)) if flags else None,
        "memory_bytes": memory,
    }
    if device.startswith("cuda"):
        host.update(gpu_info(int(device.split(":", 1)[1]) if ":" in device else 0))
    return host


def host_from_machine_info(machine_info: dict[str, Any]) -> dict[str, Any]:
    """A partial host record from pytest-benchmark's ``machine_info`` (a benchmark file checked on its own)."""
    cpu = machine_info.get("cpu") or {}
    flags = set(cpu.get("flags") or [])
    signature = None
    if cpu.get("family") is not None:
        signature = f"family {cpu['family']} model {cpu.get('model', '?')} stepping {cpu.get('stepping', '?')}"
    return {
        "cpu_model": cpu.get("brand_raw"),
        "cpu_signature": signature,
        "logical_cpus": cpu.get("count"),
        "isa": sorted(flags & set(ISA_FLAGS)) if flags else None,
    }


def gpu_info(index: int = 0) -> dict[str, Any]:
    """GPU ``index``'s name, memory, driver and clocks from NVML (empty without NVML or a driver)."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # the module, its library or the driver is missing
        return {}
    try:
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)

        def read(fn, *args):  # noqa: ANN001, ANN202
            try:
                value = fn(*args)
            except pynvml.NVMLError:  # NotSupported on some boards and virtual GPUs
                return None
            return value.decode() if isinstance(value, bytes) else value

        memory = read(pynvml.nvmlDeviceGetMemoryInfo, handle)
        power_mw = read(pynvml.nvmlDeviceGetPowerManagementLimit, handle)
        return {
            "gpu_name": read(pynvml.nvmlDeviceGetName, handle),
            "gpu_memory_bytes": int(memory.total) if memory is not None else None,
            "gpu_driver": read(pynvml.nvmlSystemGetDriverVersion),
            "gpu_max_sm_clock_mhz": read(pynvml.nvmlDeviceGetMaxClockInfo, handle, pynvml.NVML_CLOCK_SM),
            "gpu_max_memory_clock_mhz": read(pynvml.nvmlDeviceGetMaxClockInfo, handle, pynvml.NVML_CLOCK_MEM),
            "gpu_app_sm_clock_mhz": read(pynvml.nvmlDeviceGetApplicationsClock, handle, pynvml.NVML_CLOCK_SM),
            "gpu_power_limit_w": power_mw / 1000.0 if power_mw is not None else None,
        }
    except pynvml.NVMLError:
        return {}
    finally:
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError:
            pass


def describe_host(host: dict[str, Any] | None) -> str:
    """One line: model, signature, cores, CPUs, ISA features, GPU."""
    if not host:
        return "unknown host (not recorded)"
    parts = [host.get("cpu_model") or "unknown CPU"]
    if host.get("cpu_signature"):
        parts[0] += f" ({host['cpu_signature']})"
    cores, cpus = host.get("physical_cores"), host.get("usable_cpus") or host.get("logical_cpus")
    if cores or cpus:
        parts.append(" / ".join(x for x in (f"{cores} cores" if cores else "", f"{cpus} CPUs" if cpus else "") if x))
    if host.get("isa") is not None:
        parts.append(" ".join(host["isa"]) or "no AVX2/AVX-512/AMX")
    if host.get("gpu_name"):
        gpu = host["gpu_name"]
        if host.get("gpu_memory_bytes"):
            gpu += f" {host['gpu_memory_bytes'] / 2**30:.0f} GiB"
        extra = [f"driver {host['gpu_driver']}" if host.get("gpu_driver") else "",
                 f"max SM clock {host['gpu_max_sm_clock_mhz']} MHz" if host.get("gpu_max_sm_clock_mhz") else ""]  # fmt: skip
        parts.append(", ".join([gpu, *(e for e in extra if e)]))
    return ", ".join(parts)


def compare_hosts(current: dict[str, Any], baseline: dict[str, Any]) -> tuple[bool, list[str]]:
    """(same class, the fields that differ): :data:`CLASS_FIELDS` decide, :data:`NOTED_FIELDS` are listed too.

    A field recorded on one side only is not a difference. Call it with both hosts recorded.
    """
    differ = [k for k in (*CLASS_FIELDS, *NOTED_FIELDS)
              if current.get(k) is not None and baseline.get(k) is not None and current[k] != baseline[k]]  # fmt: skip
    return not any(k in CLASS_FIELDS for k in differ), differ


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
