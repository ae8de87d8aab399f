"""``ci/nightly.py run`` end to end on CPU with a self-contained fake benchmark folder (real
pytest-benchmark output), plus the device naming and the GitHub workflow file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from gqnbench.nightly.device import device_slug, slugify
from gqnbench.nightly.runner import bench_command, make_plan, merge_bench_files, train_command

REPO = Path(__file__).resolve().parents[1]
CI_DIR = REPO / "ci"

FAKE_CONFTEST = """
def pytest_addoption(parser):
    parser.addoption("--device", default="cpu")
    parser.addoption("--preset", default="tiny")
    parser.addoption("--quick", action="store_true")
    parser.addoption("--models", default="gqn,metagqn")
"""
FAKE_BENCH = """
import pytest

@pytest.mark.parametrize("model", ["gqn", "metagqn"])
def test_step(benchmark, request, model):
    preset = request.config.getoption("--preset")
    benchmark.group = f"train-{model}-{preset}-b4"
    benchmark.extra_info.update(model=model, preset=preset, mode="train", batch=4, dtype="fp32", compiled=False,
                                device=request.config.getoption("--device"), peak_memory_bytes=100_000_000)
    benchmark.pedantic(lambda: sum(range(20_000)), rounds=5, warmup_rounds=1, iterations=1)
"""


def _nightly(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    # Own session, so a timeout stops nightly.py's pytest/train children too, not only nightly.py.
    proc = subprocess.Popen(
        [sys.executable, str(CI_DIR / "nightly.py"), *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_run_then_pin_then_pass(tmp_path):
    bench_dir = tmp_path / "fakebench"
    bench_dir.mkdir()
    (bench_dir / "conftest.py").write_text(FAKE_CONFTEST)
    (bench_dir / "test_fake_bench.py").write_text(FAKE_BENCH)
    baseline = tmp_path / "baseline.json"
    common = ["--device", "cpu", "--quick", "--bench-dir", str(bench_dir), "--skip", "train", "--skip", "report"]

    first = _nightly("run", *common, "--out", str(tmp_path / "run1"), "--baseline", str(baseline))
    assert first.returncode == 3, first.stdout + first.stderr
    assert f"expected file {baseline}" in first.stderr and "python ci/nightly.py baseline --from" in first.stderr
    manifest = json.loads((tmp_path / "run1" / "nightly.json").read_text())
    assert manifest["kind"] == "nightly_run" and manifest["device"] == "cpu" and manifest["quick"] is True
    assert manifest["device_name"].startswith("cpu-")
    host = manifest["host"]  # the machine, named precisely enough to tell two of one device name apart
    assert host["cpu_model"] and host["usable_cpus"] >= 1 and host["logical_cpus"] >= host["usable_cpus"]
    (step,) = manifest["steps"]
    assert step["name"] == "bench-cpu" and step["rc"] == 0 and "--quick" in step["command"]
    bench = json.loads((tmp_path / "run1" / "bench.json").read_text())
    assert sorted(b["extra_info"]["model"] for b in bench["benchmarks"]) == ["gqn", "metagqn"]
    assert (tmp_path / "run1" / "logs" / "bench-cpu.log").read_text().count("passed") >= 1

    pin = _nightly("baseline", "--from", str(tmp_path / "run1"), "--out", str(baseline))
    assert pin.returncode == 0, pin.stderr
    assert "2 benchmark(s) (0 with a ratio to the reference), 0 training run(s)" in pin.stdout

    # These benchmarks time no reference: their absolute times are shown, never judged, and the verdict says so.
    second = _nightly("run", *common, "--out", str(tmp_path / "run2"), "--baseline", str(baseline))
    assert second.returncode == 0, second.stdout + second.stderr
    verdict = json.loads((tmp_path / "run2" / "verdict.json").read_text())
    assert verdict["passed"] and verdict["regressions"] == []
    assert verdict["counts"] == {"ok": 2, "shown": 2}  # the identical memory rows, the two times
    assert any(w.startswith("no timing is judged: this run timed no reference") for w in verdict["warnings"])
    assert verdict["host"].startswith("host: same class as the baseline's")


def test_failing_benchmark_step_fails_the_run(tmp_path):
    bench_dir = tmp_path / "broken"
    bench_dir.mkdir()
    (bench_dir / "conftest.py").write_text(FAKE_CONFTEST)
    (bench_dir / "test_broken.py").write_text("def test_x(benchmark):\n    raise RuntimeError('boom')\n")
    res = _nightly(
        "run", "--device", "cpu", "--quick", "--bench-dir", str(bench_dir), "--skip", "train", "--skip", "report",
        "--skip", "check", "--out", str(tmp_path / "run"),
    )  # fmt: skip
    assert res.returncode == 1
    assert "step bench-cpu: exit 1" in res.stdout


def test_merge_keeps_each_benchmark_once(tmp_path):
    def doc(*names: str) -> dict:
        return {
            "machine_info": {"cpu": {"brand_raw": "X"}},
            "benchmarks": [{"fullname": n, "stats": {}} for n in names],
        }

    (tmp_path / "bench-paper.json").write_text(json.dumps(doc("data::render", "step[paper]")))
    (tmp_path / "bench-cpu.json").write_text(json.dumps(doc("data::render", "step[cpu]")))
    out = merge_bench_files([tmp_path / "bench-paper.json", tmp_path / "bench-cpu.json", tmp_path / "none.json"],
                            tmp_path / "bench.json")  # fmt: skip
    names = [b["fullname"] for b in json.loads(out.read_text())["benchmarks"]]
    assert names == ["data::render", "step[paper]", "step[cpu]"]
    assert merge_bench_files([tmp_path / "none.json"], tmp_path / "x.json") is None


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("GQNBENCH_NIGHTLY_E2E") != "1",
    reason="the real quick matrix takes ~2 min on 2 cores; set GQNBENCH_NIGHTLY_E2E=1 to run it",
)
def test_real_quick_run_on_cpu(tmp_path):
    """The real benchmarks/ suite (--quick, cpu preset) and real tiny training runs, then a self-check."""
    out = tmp_path / "run"
    res = _nightly(
        "run", "--device", "cpu", "--quick", "--out", str(out), "--baseline", str(tmp_path / "none.json"), timeout=900
    )
    assert res.returncode == 3, res.stdout[-3000:] + res.stderr[-3000:]
    steps = {s["name"]: s["rc"] for s in json.loads((out / "nightly.json").read_text())["steps"]}
    assert steps["bench-cpu"] == 0 and steps["train-gqn"] == 0 and steps["train-metagqn"] == 0
    run = _nightly("check", "--current", str(out), "--baseline", str(out))
    assert run.returncode == 0, run.stdout
    verdict = json.loads((out / "verdict.json").read_text())
    nll = [r for r in verdict["rows"] if r["metric"] == "nll"]
    assert {r["key"] for r in nll} == {"val_nll/gqn/tiny", "val_nll/metagqn/tiny"}
    assert all(700 < r["current"] < 1000 for r in nll)  # nats per 16x16x3 image; the constant is 705.7
    assert any(r["metric"] == "memory" for r in verdict["rows"])
    ratios = [r for r in verdict["rows"] if r["metric"] == "ratio"]
    assert len(ratios) == 11 and all(r["current"] > 0 for r in ratios)  # 6 steps, 5 data benchmarks


def test_plan_defaults_and_commands(tmp_path):
    plan = make_plan("cuda", tmp_path, quick=False)
    assert plan.bench_presets == ("paper", "cpu") and plan.train_steps == 300
    # The GPU nightly: the paper preset's training steps of both models, then the cpu preset's quick matrix.
    paper, cpu = bench_command(plan, "paper"), bench_command(plan, "cpu")
    assert paper[paper.index("--modes") + 1] == "train" and paper[paper.index("-k") + 1] == "test_step"
    assert "--quick" in paper and "--models" not in paper  # every model, eager fp32/bf16
    assert "--quick" in cpu and "--modes" not in cpu
    # Presets named explicitly get their plain matrix.
    assert make_plan("cuda", tmp_path, quick=False, bench_presets=("paper",)).preset_args == {}
    quick = make_plan("cpu", tmp_path, quick=True, train_steps=7, models=("gqn",))
    assert quick.bench_presets == ("cpu",) and quick.train_steps == 7 and quick.models == ("gqn",)
    cmd = bench_command(quick, "cpu")
    assert cmd[1:4] == ["-m", "pytest", "benchmarks"] and f"--benchmark-json={tmp_path / 'bench-cpu.json'}" in cmd
    assert cmd[cmd.index("--device") + 1] == "cpu" and cmd[cmd.index("--preset") + 1] == "cpu" and "--quick" in cmd
    train = train_command(quick, "gqn")
    assert train[1:4] == ["-m", "gqnbench", "train"]
    assert train[train.index("--steps") + 1] == "7" and train[train.index("--seed") + 1] == "0"
    assert train[train.index("--out") + 1] == str(tmp_path / "train")


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("NVIDIA H100 80GB HBM3", "nvidia-h100-80gb-hbm3"),
        ("NVIDIA GeForce RTX 4090", "nvidia-geforce-rtx-4090"),
        ("Intel(R) Xeon(R) Platinum 8480+ @ 2.00GHz", "intel-xeon-platinum-8480"),
        ("Intel(R) Core(TM) i7-9700K CPU @ 3.60GHz", "intel-core-i7-9700k"),
        ("AMD EPYC 7763 64-Core Processor", "amd-epyc-7763-64-core-processor"),
    ],
)
def test_device_slugs(name, slug):
    assert slugify(name) == slug


def test_device_slug_for_this_cpu_and_given_gpu():
    assert device_slug("cpu", cpu_name="Intel(R) Xeon(R) Processor") == "cpu-intel-xeon-processor"
    assert device_slug("cuda", gpu_name="NVIDIA H200") == "nvidia-h200"
    assert device_slug("cpu").startswith("cpu-")
    with pytest.raises(ValueError, match="unknown device"):
        device_slug("tpu")


def test_workflow_file():
    yaml = pytest.importorskip("yaml")
    doc = yaml.safe_load((REPO / ".github" / "workflows" / "nightly-gpu.yml").read_text())
    triggers = doc.get("on", doc.get(True))  # YAML 1.1 reads a bare `on` as True
    assert triggers["schedule"][0]["cron"] and "workflow_dispatch" in triggers
    job = doc["jobs"]["nightly"]
    assert job["runs-on"] == ["self-hosted", "gpu"]
    steps = job["steps"]
    scripts = "\n".join(s.get("run", "") for s in steps)
    assert "ci/nightly_gpu.sh" in scripts and 'pip install -e ".[dev,gpu]"' in scripts
    uploads = [s for s in steps if str(s.get("uses", "")).startswith("actions/upload-artifact")]
    main = [u for u in uploads if u.get("if") == "always()"]
    assert main and "bench*.json" in main[0]["with"]["path"] and "report/" in main[0]["with"]["path"]
    assert (CI_DIR / "nightly_gpu.sh").stat().st_mode & 0o111  # executable
