"""Profiling writes a Chrome/Perfetto trace (valid JSON with traceEvents) and a top-k table."""

from __future__ import annotations

import json

from gqnbench.harness.common import StepSpec
from gqnbench.harness.profile import profile_step


def test_profile_writes_a_trace(tmp_path):
    result = profile_step(StepSpec("gqn", "tiny", batch=2), tmp_path / "trace", warmup=1, active=1, top_k=5)
    assert result.trace_path.name.endswith(".pt.trace.json")
    doc = json.loads(result.trace_path.read_text())
    events = doc["traceEvents"]
    assert any(e.get("name", "").startswith("aten::convolution") for e in events)
    assert "Self CPU" in result.table and "aten::" in result.table
    assert result.memory_snapshot is None  # CUDA only
