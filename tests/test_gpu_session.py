"""ci/gpu_session.sh end to end on the CPU at tiny sizes: every stage runs, writes results files the schema
accepts, and the report built from them has the paper-scale section with the runs' numbers.

Several minutes on 2 cores (each stage starts its own Python), so it runs on request:
``GQNBENCH_GPU_SESSION_E2E=1 python -m pytest tests/test_gpu_session.py``.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from gqnbench.report.build import build_report
from gqnbench.report.inputs import load_results
from gqnbench.results import read_result

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(
    os.environ.get("GQNBENCH_GPU_SESSION_E2E") != "1", reason="minutes: set GQNBENCH_GPU_SESSION_E2E=1"
)


def test_the_device_session_runs_every_stage_at_tiny_sizes(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    env = {
        **os.environ,
        "GPU_SESSION_DEVICE": "cpu",
        "GPU_SESSION_SIZE": "tiny",
        "GPU_SESSION_ROOT": str(tmp_path / "example"),
        "GQNBENCH_CACHE": str(tmp_path / "cache"),
        "PYTHON": sys.executable,
        "OUT": str(out),
    }
    proc = subprocess.run(
        ["bash", "ci/gpu_session.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    stages = {row["stage"]: row for row in csv.DictReader((out / "session_stages.tsv").open(), delimiter="\t")}
    expected = {"install", "data", "cuda_tests", "perf", "learn", "profile", "small_batch", "ablation", "nightly",
                "report"}  # fmt: skip
    assert set(stages) == expected and all(row["exit"] == "0" for row in stages.values()), stages
    results = tmp_path / "example" / "results" / "gpu"
    for model in ("gqn", "metagqn"):
        run = read_result(results / "train" / "runs" / f"{model}-gpu-seed0.json", "training_run")
        assert run["status"] == "completed" and run["preset"] == "paper-short"
        targets = read_result(results / f"perf_targets_{model}_b4.json", "costs")["perf_targets"]
        assert targets["checks"] and targets["fp32"]["fast_path"]["spec"] == "off"
        ablation = read_result(results / f"ablation_{model}_b4.json", "costs")["throughput"]
        # The CUDA-only switch is left out on the CPU; the rest are one case each.
        assert {r["fast_path"]["spec"] for r in ablation} >= {"off"}
        assert read_result(results / "profile" / f"profile_{model}.json", "profile")["cases"]
    assert read_result(results / "samples.json", "samples")["preset"] == "paper-short"
    with tarfile.open(out / "gpu_session.tar.gz") as tar:
        names = tar.getnames()
    assert "results/gpu/samples.json" in names and "gpu-session/session.log" in names
    assert not any(n.endswith((".pt", ".ckpt")) for n in names)  # no weights or checkpoints come back
    report = build_report(load_results([tmp_path / "example" / "results"]), tmp_path / "report", strict=True)
    md = report.markdown.read_text()
    section = md[md.index("## The study's configuration on one GPU") :]
    assert "No GPU run" not in section and "paper_scale_curves.png" in section
    rows = list(csv.DictReader((tmp_path / "report" / "tables" / "paper_scale_runs.csv").open()))
    assert {r["model"] for r in rows} == {"gqn", "metagqn"} and all(r["steps"] for r in rows)
    stage_log = (tmp_path / "example" / "gpu-session" / "session.log").read_text()
    assert "fast path for the rest of the session" in stage_log
    assert json.loads((results / "samples.json").read_text())["scenes"]
