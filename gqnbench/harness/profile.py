"""Where the time goes: a torch.profiler trace of a few steps, a top-k op table, and a CUDA memory snapshot.

The trace is written by ``torch.profiler.tensorboard_trace_handler`` as
``<out>/<worker>.<timestamp>.pt.trace.json``: it opens in TensorBoard's profiler plugin
(``tensorboard --logdir <out>``; the torch-tb-profiler plugin is no longer maintained
upstream but still reads it) and in Perfetto (ui.perfetto.dev) or chrome://tracing.
The table ranks ops by self time (CPU, and CUDA on a GPU). On CUDA, a memory snapshot
(``torch.cuda.memory._record_memory_history`` / ``_dump_snapshot``) is written as
``<out>/memory_snapshot.pickle``; drop it on https://pytorch.org/memory_viz to see
every allocation over time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, schedule, tensorboard_trace_handler

from gqnbench.harness.common import StepSpec, prepare_step, synchronize


@dataclass
class ProfileResult:
    trace_path: Path
    table: str
    memory_snapshot: Path | None
    out_dir: Path


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
    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    before = set(out_dir.glob("*.pt.trace.json"))
    worker = spec.label().replace("/", "_")
    snapshot_path = None
    record_memory = memory_snapshot and device.type == "cuda"
    if record_memory:
        torch.cuda.memory._record_memory_history(max_entries=200_000)
    try:
        with profile(
            activities=activities,
            schedule=schedule(wait=0, warmup=warmup, active=active, repeat=1),
            on_trace_ready=tensorboard_trace_handler(str(out_dir), worker_name=worker),
            record_shapes=record_shapes,
            profile_memory=True,
        ) as prof:
            for _ in range(warmup + active):
                step.run()
                synchronize(device)
                prof.step()
        if record_memory:
            snapshot_path = out_dir / "memory_snapshot.pickle"
            torch.cuda.memory._dump_snapshot(str(snapshot_path))
    finally:
        if record_memory:
            torch.cuda.memory._record_memory_history(enabled=None)
    new = sorted(set(out_dir.glob("*.pt.trace.json")) - before, key=lambda p: p.stat().st_mtime)
    if not new:
        raise RuntimeError(f"torch.profiler wrote no trace file into {out_dir}")
    sort_by = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    table = prof.key_averages().table(sort_by=sort_by, row_limit=top_k, max_name_column_width=48)
    return ProfileResult(trace_path=new[-1], table=table, memory_snapshot=snapshot_path, out_dir=out_dir)
