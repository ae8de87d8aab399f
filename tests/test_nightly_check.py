"""The nightly gate's check/baseline commands (:mod:`gqnbench.nightly.cli`, what ``ci/nightly.py`` runs) on
synthetic runs in the exact file formats (pytest-benchmark JSON, gqnbench ``training_run`` and
``nightly_run`` results files): pass/fail, names and numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gqnbench.nightly import cli as nightly
from gqnbench.nightly.collect import collect_run, read_baseline
from gqnbench.results import write_result

CI_DIR = Path(__file__).resolve().parents[1] / "ci"

DEVICE_NAME = "cpu-test-processor"  # matches the "cpu-*" override in ci/thresholds.json (ratio limit +25%)
ENV = {"torch": "2.13.0", "cpu_count": 2, "torch_threads": 2, "python": "3.11.7"}
HOST = {"cpu_model": "Test(R) Processor", "cpu_signature": "family 25 model 17 stepping 1", "physical_cores": 2,
        "logical_cpus": 2, "usable_cpus": 2, "isa": ["avx2", "avx512_bf16", "avx512f", "fma"]}  # fmt: skip
REF = "torch.mm fp32 512x512 on cpu"
REF_S = 0.002  # the reference matmul's median: a 12 ms step is 6x ref
NLL_CONSTANT = 768 * 0.5 * 1.8378770664093453  # 16x16x3 values, nats per image
BENCHES = {
    # fullname: (median seconds, peak bytes)
    "benchmarks/test_step.py::test_train_step[gqn-tiny-b4-fp32-eager]": (0.012, 300e6),
    "benchmarks/test_step.py::test_train_step[metagqn-tiny-b4-fp32-eager]": (0.009, 280e6),
    "benchmarks/test_step.py::test_infer_step[gqn-tiny-b4-fp32-eager]": (0.004, 250e6),
}
TRAIN_KEY = "val_nll/gqn/tiny"  # the shared metric key (gqnbench.report.metrics)


def _bench_entry(
    fullname: str, median: float, peak: float | None, spread: float = 0.02, rounds: int = 10, load: float = 0.5
) -> dict:
    """One benchmark as pytest-benchmark writes it, with the reference fields of benchmarks/conftest.py."""
    name = fullname.split("::", 1)[1]
    ratio = median / REF_S
    model = name.split("[", 1)[1].split("-", 1)[0]
    mode = "train" if "train" in name else "infer"
    iqr = median * spread
    return {
        "group": f"{mode}-{model}-tiny-b4",
        "name": name,
        "fullname": fullname,
        "params": {},
        "param": name.split("[", 1)[1].rstrip("]"),
        "extra_info": {
            "model": model,
            "preset": "tiny",
            "mode": mode,
            "batch": 4,
            "dtype": "fp32",
            "compiled": False,
            "device": "cpu",
            "params": 12345,
            "flop_per_step": 1.0e8,
            "images_per_s": 4 / median,
            "mfu": None,
            "peak_memory_bytes": peak,
            "ref": REF,
            "ref_median_s": REF_S,
            "ref_flop_per_s": 2 * 512**3 / REF_S,
            "ratio": ratio,
            "ratio_q1": ratio * (1 - spread / 2),
            "ratio_q3": ratio * (1 + spread / 2),
            "ratio_mean": ratio,
            "ratio_stddev": ratio * spread * 0.75,
            "ratio_rounds": rounds,
            "load": load,
            "load_avg_1m": load,
            "cpu_count": 2,
        },
        "options": {"disable_gc": False, "timer": "perf_counter", "min_rounds": rounds, "warmup": False},
        "stats": {
            "min": median * (1 - spread),
            "max": median * (1 + spread),
            "mean": median,
            "stddev": median * spread * 0.75,
            "rounds": rounds,
            "median": median,
            "iqr": iqr,
            "q1": median - iqr / 2,
            "q3": median + iqr / 2,
            "iqr_outliers": 0,
            "stddev_outliers": 1,
            "outliers": "1;0",
            "ld15iqr": median * (1 - spread),
            "hd15iqr": median * (1 + spread),
            "ops": 1 / median,
            "total": median * rounds,
            "iterations": 1,
        },
    }


def make_run(
    folder: Path,
    *,
    benches: dict[str, tuple[float, float | None]] | None = None,
    noisy: tuple[str, ...] = (),
    val_nll: float = NLL_CONSTANT + 30.0,
    train_status: str = "completed",
    steps: list[dict] | None = None,
    load: float = 0.5,
    host: dict | None = None,
    quick: bool = True,
    plan: dict | None = None,
) -> Path:
    """A run folder as ``ci/nightly.py run`` leaves it: bench.json, train/runs/*.json, nightly.json."""
    benches = BENCHES if benches is None else benches
    folder.mkdir(parents=True, exist_ok=True)
    doc = {
        "machine_info": {"node": "test", "machine": "x86_64", "cpu": {"brand_raw": "Test(R) Processor", "count": 2}},
        "commit_info": {"id": "0" * 40, "dirty": False},
        "benchmarks": [
            _bench_entry(k, med, peak, spread=0.5 if k in noisy else 0.02, load=load)
            for k, (med, peak) in benches.items()
        ],
        "datetime": "2026-01-01T00:00:00",
        "version": "5.3.1",
    }
    (folder / "bench.json").write_text(json.dumps(doc))
    diverged = train_status == "diverged"
    write_result(
        folder / "train" / "runs" / "gqn-nightly-seed0.json",
        "training_run",
        {
            "model": "gqn",
            "preset": "tiny",
            "tag": "nightly",
            "seed": 0,
            "config": {"model": {}, "train": {"steps": 30, "seed": 0}, "data": {}},
            "status": train_status,
            "diverged_step": 12 if diverged else None,
            "diverged_reason": "non-finite loss" if diverged else None,
            "eval_curve": [{"step": 30, "wall_s": 1.0, "val_nll": val_nll, "val_mse": 0.08}],
            "train_curve": [],
            "final": {
                "step": 12 if diverged else 30,
                "val_nll": None if diverged else val_nll,
                "val_mse": 0.08,
                "nll_constant": NLL_CONSTANT,
            },
            "baselines": {"mean_image": {"val_nll": NLL_CONSTANT + 40.0, "val_mse": 0.1}},
            "steps_per_s": 20.0,
            "total_wall_s": 1.5,
            "eval_wall_s": 0.2,
            "device": "cpu",
            "dtype": "fp32",
        },
        environment=ENV,
    )
    write_result(
        folder / "nightly.json",
        "nightly_run",
        {
            "device": "cpu",
            "device_name": DEVICE_NAME,
            "quick": quick,
            "host": HOST if host is None else host,
            "plan": plan or {"bench_presets": ["tiny"], "train_preset": "tiny", "train_steps": 30},
            "steps": steps or [],
        },
        environment=ENV,
    )
    return folder


def run_cli(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    rc = nightly.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def pinned(tmp_path: Path, capsys: pytest.CaptureFixture) -> tuple[Path, Path]:
    run = make_run(tmp_path / "run")
    base = tmp_path / "baselines" / f"{DEVICE_NAME}.json"
    rc, out, _ = run_cli(capsys, "baseline", "--from", str(run), "--out", str(base))
    assert rc == 0 and base.is_file()
    assert "3 benchmark(s) (3 with a ratio to the reference), 1 training run(s)" in out
    return run, base


def _doctor(base: Path, edit) -> None:  # noqa: ANN001
    doc = json.loads(base.read_text())
    edit(doc)
    base.write_text(json.dumps(doc))


def test_run_compared_with_itself_passes(pinned, capsys):
    run, base = pinned
    rc, out, _ = run_cli(capsys, "check", "--current", str(run), "--baseline", str(base))
    assert rc == 0, out
    assert "verdict: PASS" in out and "REGRESS" not in out
    verdict = json.loads((run / "verdict.json").read_text())
    assert verdict["kind"] == "nightly_verdict" and verdict["passed"] is True and verdict["exit_code"] == 0
    assert verdict["counts"] == {"ok": 7, "shown": 3}  # 3 ratio + 3 memory + 1 NLL judged, 3 absolute times shown
    assert verdict["host"].startswith("host: same class as the baseline's, Test(R) Processor")
    assert (run / "verdict.txt").read_text().startswith("nightly check:")


def test_run_compared_with_itself_as_a_run_folder_passes(tmp_path, capsys):
    run = make_run(tmp_path / "a")
    rc, out, _ = run_cli(capsys, "check", "--current", str(run), "--baseline", str(run))
    assert rc == 0 and "verdict: PASS" in out


def test_thirty_percent_slower_relative_to_the_reference_fails_naming_benchmark_and_numbers(pinned, capsys):
    run, base = pinned
    key = "benchmarks/test_step.py::test_train_step[gqn-tiny-b4-fp32-eager]"
    _doctor(base, lambda d: d["metrics"][f"bench/{key}/ratio"].update(value=6.0 / 1.3))
    rc, out, _ = run_cli(capsys, "check", "--current", str(run), "--baseline", str(base))
    assert rc == 1
    line = next(ln for ln in out.splitlines() if ln.startswith("  - "))
    assert key in line and "time relative to the reference regressed" in line
    assert "baseline 4.615x ref -> current 6x ref" in line
    assert "+30.0%" in line and "limit +25%" in line
    assert "verdict: FAIL" in out
    verdict = json.loads((run / "verdict.json").read_text())
    (reg,) = verdict["regressions"]
    assert reg["key"] == f"bench/{key}/ratio" and reg["metric"] == "ratio"
    assert reg["baseline"] == pytest.approx(6.0 / 1.3) and reg["current"] == pytest.approx(6.0)
    assert reg["delta"] == pytest.approx(30.0)


def test_twice_slower_host_with_the_same_ratios_passes(tmp_path, capsys):
    """Every absolute time doubled (a host half as fast), the ratios the same: shown, not judged."""
    base = make_run(tmp_path / "base")
    slow_host = make_run(tmp_path / "cur", benches={k: (2 * med, peak) for k, (med, peak) in BENCHES.items()})
    doc = json.loads((slow_host / "bench.json").read_text())
    for bench in doc["benchmarks"]:
        info = bench["extra_info"]
        info.update({k: info[k] / 2 for k in ("ratio", "ratio_q1", "ratio_q3", "ratio_mean", "ratio_stddev")})
        info["ref_median_s"] = 2 * REF_S
    (slow_host / "bench.json").write_text(json.dumps(doc))
    rc, out, _ = run_cli(capsys, "check", "--current", str(slow_host), "--baseline", str(base))
    assert rc == 0, out
    rows = json.loads((slow_host / "verdict.json").read_text())["rows"]
    assert {r["status"] for r in rows if r["metric"] == "ratio"} == {"ok"}
    assert all(r["status"] == "shown" and r["delta"] == pytest.approx(100.0) for r in rows if r["metric"] == "time")


def test_thirty_percent_more_memory_fails(pinned, capsys):
    run, base = pinned
    key = "benchmarks/test_step.py::test_infer_step[gqn-tiny-b4-fp32-eager]"
    _doctor(base, lambda d: d["metrics"][f"bench/{key}/peak_memory"].update(value=250e6 / 1.3))
    rc, out, _ = run_cli(capsys, "check", "--current", str(run), "--baseline", str(base))
    assert rc == 1
    (line,) = [ln for ln in out.splitlines() if ln.startswith("  - ")]
    assert key in line and "peak memory regressed" in line
    assert "183.4 MiB -> current 238.4 MiB" in line and "+30.0%" in line and "limit +10%" in line


def test_nll_out_of_band_fails_both_ways(pinned, capsys):
    run, base = pinned
    # Band: baseline +- max(0.5 nats, 5% of the baseline's 27 nats above the constant) = +- 1.35 nats.
    _doctor(base, lambda d: d["metrics"][TRAIN_KEY].update(value=NLL_CONSTANT + 27.0))
    rc, out, _ = run_cli(capsys, "check", "--current", str(run), "--baseline", str(base))
    assert rc == 1
    (line,) = [ln for ln in out.splitlines() if ln.startswith("  - ")]
    assert TRAIN_KEY in line and "validation NLL regressed" in line and "above its band" in line
    assert f"{NLL_CONSTANT + 27:.3f} nats -> current {NLL_CONSTANT + 30:.3f} nats" in line
    assert "+3.000 nats" in line and f"[{NLL_CONSTANT + 25.65:.2f}, {NLL_CONSTANT + 28.35:.2f}]" in line

    _doctor(base, lambda d: d["metrics"][TRAIN_KEY].update(value=NLL_CONSTANT + 32.0))
    rc, out, _ = run_cli(capsys, "check", "--current", str(run), "--baseline", str(base))
    assert rc == 1 and "below its band" in out and "-2.000 nats" in out

    _doctor(base, lambda d: d["metrics"][TRAIN_KEY].update(value=NLL_CONSTANT + 31.0))  # within +-1.55
    rc, out, _ = run_cli(capsys, "check", "--current", str(run), "--baseline", str(base))
    assert rc == 0, out


def test_explicit_nll_band_in_thresholds(pinned, tmp_path, capsys):
    run, base = pinned
    th = json.loads((CI_DIR / "thresholds.json").read_text())
    th["nll"]["bands"] = {TRAIN_KEY: [NLL_CONSTANT + 40.0, NLL_CONSTANT + 50.0]}
    (tmp_path / "th.json").write_text(json.dumps(th))
    rc, out, _ = run_cli(
        capsys, "check", "--current", str(run), "--baseline", str(base), "--thresholds", str(tmp_path / "th.json")
    )
    assert rc == 1 and "below its band" in out


def test_missing_baseline_names_file_and_command(tmp_path, capsys):
    run = make_run(tmp_path / "run")
    rc, _, err = run_cli(capsys, "check", "--current", str(run), "--device-name", "cpu-no-such-machine")
    assert rc == 3
    assert str(CI_DIR / "baselines" / "cpu-no-such-machine.json") in err
    assert f"python ci/nightly.py baseline --from {run} --device-name cpu-no-such-machine" in err

    verdict = json.loads((run / "verdict.json").read_text())
    assert verdict["passed"] is False and verdict["exit_code"] == 3
    assert "python ci/nightly.py baseline --from" in (run / "verdict.txt").read_text()

    missing = tmp_path / "nope.json"
    rc, _, err = run_cli(capsys, "check", "--current", str(run), "--baseline", str(missing))
    assert rc == 3 and f"expected file {missing}" in err and f"--out {missing}" in err


def test_noisy_ratios_are_unstable_and_do_not_gate(tmp_path, capsys):
    key = "benchmarks/test_step.py::test_train_step[metagqn-tiny-b4-fp32-eager]"
    base = make_run(tmp_path / "base")
    slower = dict(BENCHES, **{key: (0.009 * 1.3, 280e6)})
    noisy_now = make_run(tmp_path / "noisy_now", benches=slower, noisy=(key,))
    rc, out, _ = run_cli(capsys, "check", "--current", str(noisy_now), "--baseline", str(base))
    assert rc == 0, out
    (line,) = [ln for ln in out.splitlines() if ln.startswith("UNSTABLE")]
    assert f"{key}/ratio" in line and "+30.0%" in line and "current: IQR/median 0.5 > 0.15" in line
    assert "not gated" in line

    # Noise in the baseline alone also makes the comparison untrustworthy.
    noisy_base = make_run(tmp_path / "noisy_base", noisy=(key,))
    steady_slow = make_run(tmp_path / "steady_slow", benches=slower)
    rc, out, _ = run_cli(capsys, "check", "--current", str(steady_slow), "--baseline", str(noisy_base))
    assert rc == 0 and "baseline: IQR/median 0.5 " in out

    # The same slowdown without noise gates.
    rc, out, _ = run_cli(capsys, "check", "--current", str(steady_slow), "--baseline", str(base))
    assert rc == 1 and key in out


def test_busy_host_is_said_not_judged(tmp_path, capsys):
    """Load 3.4 on 2 CPUs (limit 1.25 x 2): a 30 % slower ratio is shown with the load, not a regression."""
    key = "benchmarks/test_step.py::test_train_step[gqn-tiny-b4-fp32-eager]"
    base = make_run(tmp_path / "base")
    busy = make_run(tmp_path / "busy", benches=dict(BENCHES, **{key: (0.012 * 1.3, 300e6)}), load=3.4)
    rc, out, _ = run_cli(capsys, "check", "--current", str(busy), "--baseline", str(base))
    assert rc == 0, out
    rows = {r["key"]: r for r in json.loads((busy / "verdict.json").read_text())["rows"]}
    assert {r["status"] for r in rows.values() if r["metric"] == "ratio"} == {"busy"}
    row = rows[f"bench/{key}/ratio"]
    assert not row["gates"] and row["delta"] == pytest.approx(30.0)
    assert row["note"] == "not judged (busy host): current: load 3.40 on 2 CPUs > 1.25 x 2"
    assert "BUSY" in out and "verdict: PASS" in out
    # Memory and NLL do not depend on the load: still judged.
    assert {r["status"] for r in rows.values() if r["metric"] in ("memory", "nll")} == {"ok"}

    # A baseline measured on a busy host is refused unless forced.
    rc, _, err = run_cli(capsys, "baseline", "--from", str(busy), "--out", str(tmp_path / "b.json"))
    assert rc == 2 and "refusing to pin ratios measured on a busy host: 3 row(s)" in err
    assert "load 3.40 on 2 CPUs" in err and not (tmp_path / "b.json").exists()
    assert nightly.main(["baseline", "--from", str(busy), "--out", str(tmp_path / "b.json"), "--force"]) == 0


def test_host_differs_is_said_with_both_hosts(tmp_path, capsys):
    base = make_run(tmp_path / "base")
    other = dict(HOST, cpu_signature="family 25 model 1 stepping 1", isa=["avx2", "fma"])
    cur = make_run(tmp_path / "cur", host=other)
    rc, out, _ = run_cli(capsys, "check", "--current", str(cur), "--baseline", str(base))
    assert rc == 0, out
    host = json.loads((cur / "verdict.json").read_text())["host"]
    assert host.startswith(
        "host differs: baseline Test(R) Processor (family 25 model 17 stepping 1), 2 cores / 2 CPUs, "
        "avx2 avx512_bf16 avx512f fma; this Test(R) Processor (family 25 model 1 stepping 1), 2 cores / 2 CPUs, avx2 fma"
    )
    assert (
        "differs in cpu_signature" in host
        and "isa ['avx2', 'avx512_bf16', 'avx512f', 'fma'] -> ['avx2', 'fma']" in host
    )
    assert host.endswith(
        "timings judged as ratios to the reference matmul timed in the same rounds; absolute times shown only"
    )
    assert host in out


def test_changed_reference_is_not_comparable(pinned, capsys):
    run, base = pinned
    key = "benchmarks/test_step.py::test_infer_step[gqn-tiny-b4-fp32-eager]"
    _doctor(base, lambda d: d["metrics"][f"bench/{key}/ratio"].update(setup="torch.mm fp32 1024x1024 on cpu"))
    rc, out, _ = run_cli(capsys, "check", "--current", str(run), "--baseline", str(base))
    assert rc == 1
    assert "not comparable: reference torch.mm fp32 512x512 on cpu in this run, torch.mm fp32 1024x1024 on cpu" in out


def test_missing_and_new_benchmarks_are_listed(tmp_path, capsys):
    base = make_run(tmp_path / "base")
    gone = "benchmarks/test_step.py::test_infer_step[gqn-tiny-b4-fp32-eager]"
    added = "benchmarks/test_step.py::test_infer_step[metagqn-tiny-b4-fp32-eager]"
    benches = {k: v for k, v in BENCHES.items() if k != gone}
    benches[added] = (0.003, 200e6)
    cur = make_run(tmp_path / "cur", benches=benches)
    rc, out, _ = run_cli(capsys, "check", "--current", str(cur), "--baseline", str(base))
    assert rc == 1
    assert any(ln.startswith("MISSING") and gone in ln for ln in out.splitlines())
    assert any(ln.startswith("NEW") and added in ln for ln in out.splitlines())
    rc, out, _ = run_cli(capsys, "check", "--current", str(cur), "--baseline", str(base), "--allow-missing")
    assert rc == 0 and "MISSING" in out and "not gated" in out


def test_failed_step_and_diverged_training_fail(tmp_path, capsys):
    base = make_run(tmp_path / "base")
    steps = [{"name": "bench-tiny", "rc": 1, "log": "logs/bench-tiny.log", "gates": True}]
    broken = make_run(tmp_path / "broken", steps=steps, train_status="diverged")
    rc, out, _ = run_cli(capsys, "check", "--current", str(broken), "--baseline", str(base))
    assert rc == 1
    assert "bench-tiny: run step failed" in out and "exit 1" in out
    assert f"{TRAIN_KEY}: validation NLL failed" in out and "training diverged at step 12" in out
    # ...and such a run cannot be pinned by accident.
    rc, _, err = run_cli(capsys, "baseline", "--from", str(broken), "--out", str(tmp_path / "b.json"))
    assert rc == 2 and "refusing to pin" in err and not (tmp_path / "b.json").exists()


def test_failed_report_step_is_shown_but_does_not_gate(tmp_path, capsys):
    base = make_run(tmp_path / "base")
    steps = [{"name": "report", "rc": 1, "log": "logs/report.log", "gates": False}]
    cur = make_run(tmp_path / "cur", steps=steps)
    rc, out, _ = run_cli(capsys, "check", "--current", str(cur), "--baseline", str(base))
    assert rc == 0 and "report" in out and "does not gate" in out


def test_baseline_round_trips(pinned):
    run, base = pinned
    collected, loaded = collect_run(run), read_baseline(base)
    assert loaded.device_name == DEVICE_NAME and loaded.device == "cpu" and loaded.quick is True
    assert loaded.environment == ENV
    assert loaded.metrics == collected.metrics
    assert {k for k, m in loaded.metrics.items() if m.category == "nll"} == {TRAIN_KEY}
    assert loaded.metrics[TRAIN_KEY].value == NLL_CONSTANT + 30.0
    # Pinning a baseline file again gives the same content.
    again = base.parent / "again.json"
    assert nightly.main(["baseline", "--from", str(base), "--out", str(again)]) == 0
    assert read_baseline(again).metrics == loaded.metrics


def test_baseline_from_several_runs_takes_each_metrics_median(tmp_path, capsys):
    """Three runs of one commit, one of them lucky: the pinned ratio is the middle run's, not the lucky one's."""
    key = "benchmarks/test_step.py::test_train_step[gqn-tiny-b4-fp32-eager]"
    runs = [make_run(tmp_path / f"run{i}", benches=dict(BENCHES, **{key: (med, 300e6)}))
            for i, med in enumerate((0.012, 0.008, 0.013))]  # fmt: skip
    out = tmp_path / "base.json"
    rc, stdout, _ = run_cli(capsys, "baseline", "--from", *map(str, runs), "--out", str(out))
    assert rc == 0 and "median of 3 runs" in stdout
    pinned = read_baseline(out).metrics
    assert pinned[f"bench/{key}/ratio"].value == pytest.approx(0.012 / REF_S)
    # Against that median, the lucky run is improved and the slowest within the limit: no regression.
    assert run_cli(capsys, "check", "--current", str(runs[2]), "--baseline", str(out))[0] == 0
    # A failed step in any of the runs refuses the pin.
    broken = make_run(tmp_path / "broken", steps=[{"name": "bench-tiny", "rc": 1, "log": "x", "gates": True}])
    rc, _, err = run_cli(capsys, "baseline", "--from", str(runs[0]), str(broken), "--out", str(tmp_path / "b2.json"))
    assert rc == 2 and "failed steps" in err


def test_bad_thresholds_file_is_a_clear_error(pinned, tmp_path, capsys):
    run, base = pinned
    bad = tmp_path / "th.json"
    bad.write_text(json.dumps({"ratio": {"max_slowdown": 5}}))
    rc, _, err = run_cli(capsys, "check", "--current", str(run), "--baseline", str(base), "--thresholds", str(bad))
    assert rc == 2 and str(bad) in err and "unknown setting 'max_slowdown'" in err


def test_committed_thresholds_file_loads():
    from gqnbench.nightly.thresholds import load_thresholds

    th = load_thresholds(CI_DIR / "thresholds.json")
    gpu = th.for_benchmark("x", "train-gqn-paper-b36", "nvidia-h100-80gb-hbm3")
    cpu = th.for_benchmark("x", "train-gqn-tiny-b4", "cpu-intel-xeon-processor")
    assert gpu.ratio.max_slowdown_pct == 10.0 and cpu.ratio.max_slowdown_pct == 25.0
    assert th.memory.max_increase_pct == 10.0 and th.gate_missing is True
    assert th.is_busy(2.6, 2) and not th.is_busy(2.4, 2) and not th.is_busy(None, 2)


# --- One engine: the report's --baseline comparison and the gate see the same rows ---------------

PLAIN_LIMITS = {  # no overrides, no memory floor: the gate's thresholds are the report's 10 %
    "ratio": {"max_slowdown_pct": 10.0, "report_speedup_pct": 10.0},
    "memory": {"max_increase_pct": 10.0, "min_increase_bytes": 0},
}
SLOW = "benchmarks/test_step.py::test_train_step[gqn-tiny-b4-fp32-eager]"
NOISY = "benchmarks/test_step.py::test_train_step[metagqn-tiny-b4-fp32-eager]"
HEAVY = "benchmarks/test_step.py::test_infer_step[gqn-tiny-b4-fp32-eager]"


def _report_rows(tmp_path: Path, cur: Path, base: Path) -> dict[str, dict]:
    """``python -m gqnbench.report CUR --baseline BASE --threshold 0.10``: its comparison table, by key."""
    import csv
    import subprocess
    import sys

    out = tmp_path / "report"
    cmd = [sys.executable, "-m", "gqnbench.report", str(cur / "bench.json"), str(cur / "train"), "--baseline"]
    cmd += [str(base / "bench.json"), str(base / "train"), "--out", str(out), "--threshold", "0.10"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    with open(out / "tables" / "comparison.csv", newline="") as fh:
        return {row["key"]: row for row in csv.DictReader(fh)}


def _gate_rows(capsys, tmp_path: Path, cur: Path, base: Path, **limits: dict) -> dict[str, dict]:  # noqa: ANN001
    th = tmp_path / f"th-{len(list(tmp_path.glob('th-*')))}.json"
    th.write_text(json.dumps({**PLAIN_LIMITS, **limits}))
    run_cli(capsys, "check", "--current", str(cur), "--baseline", str(base), "--thresholds", str(th))
    return {r["key"]: r for r in json.loads((cur / "verdict.json").read_text())["rows"]}


def test_report_and_gate_share_rows_and_rules_only_change_statuses(tmp_path, capsys):
    base = make_run(tmp_path / "base")
    benches = dict(BENCHES)
    benches[SLOW] = (0.012 * 1.3, 300e6)  # steady and 30 % slower: both flag it
    benches[NOISY] = (0.009 * 1.3, 280e6)  # 30 % slower but noisy: the gate's unstable rule
    benches[HEAVY] = (0.004, 250e6 * 1.3)  # 30 % more memory (75 MB): the gate's floor rule when raised
    # +3 nats is 0.4 % of the NLL (the report: ok) but outside the band of +-1.5 nats (the gate's rule).
    cur = make_run(tmp_path / "cur", benches=benches, noisy=(NOISY,), val_nll=NLL_CONSTANT + 33.0)

    report = _report_rows(tmp_path, cur, base)
    gate = _gate_rows(capsys, tmp_path, cur, base)

    # Same keys: the gate lists every time, ratio, memory and NLL row of the report (its MSE rows stay in the report).
    assert {k for k, r in report.items() if r["category"] != "mse"} == set(gate)
    for key, g in gate.items():
        r = report[key]
        assert g["metric"] == r["category"]
        assert g["current"] == pytest.approx(float(r["current"])) and g["baseline"] == pytest.approx(
            float(r["baseline"])
        )
        expected_delta = g["current"] - g["baseline"] if g["metric"] == "nll" else float(r["delta_pct"])
        assert g["delta"] == pytest.approx(expected_delta)

    # Statuses agree wherever no gate rule applies...
    ruled = {f"bench/{NOISY}/ratio": "unstable", TRAIN_KEY: "regressed"}
    ruled.update({k: "shown" for k, g in gate.items() if g["metric"] == "time"})  # absolute times: never judged
    for key, g in gate.items():
        shared = {"regression": "regressed"}.get(report[key]["status"], report[key]["status"])
        assert g["status"] == ruled.get(key, shared), key
    assert report[f"bench/{SLOW}/ratio"]["status"] == "regression" and gate[f"bench/{SLOW}/ratio"]["gates"]
    assert report[f"bench/{HEAVY}/peak_memory"]["status"] == "regression"
    # ...and the rules change only the status: unstable, shown (the report flags both), NLL band (it does not).
    assert report[f"bench/{NOISY}/ratio"]["status"] == "regression" and not gate[f"bench/{NOISY}/ratio"]["gates"]
    assert report[f"bench/{SLOW}"]["status"] == "regression" and not gate[f"bench/{SLOW}"]["gates"]
    assert report[TRAIN_KEY]["status"] == "ok" and gate[TRAIN_KEY]["gates"]

    # The memory floor: the same +30 % row, now below min_increase_bytes, is ok for the gate only.
    floored = _gate_rows(capsys, tmp_path, cur, base, memory={"max_increase_pct": 10.0, "min_increase_bytes": 1e8})
    heavy = f"bench/{HEAVY}/peak_memory"
    assert floored[heavy]["status"] == "ok" and floored[heavy]["delta"] == pytest.approx(gate[heavy]["delta"])
    assert {k: (r["current"], r["baseline"]) for k, r in floored.items()} == {
        k: (r["current"], r["baseline"]) for k, r in gate.items()
    }


@pytest.mark.parametrize("name", ["cpu-amd-epyc", "nvidia-h200"])
def test_committed_baselines_load_and_pass_against_themselves(name, tmp_path, capsys):
    path = CI_DIR / "baselines" / f"{name}.json"
    loaded = read_baseline(path)
    assert loaded.device_name == name
    assert {"time", "nll"} <= {m.category for m in loaded.metrics.values()} <= {"time", "ratio", "memory", "nll", "mse"}
    assert all(k.startswith(("bench/", "val_nll/", "val_mse/")) for k in loaded.metrics)
    assert loaded.host  # what the gate compares this run's host with
    verdict = tmp_path / "v.json"
    rc, out, _ = run_cli(capsys, "check", "--current", str(path), "--baseline", str(path), "--verdict", str(verdict))
    assert rc == 0 and "verdict: PASS" in out
    counts = json.loads(verdict.read_text())["counts"]
    assert set(counts) <= {"ok", "shown", "unstable", "busy"} and counts["shown"] == len(loaded.of_category("time"))


def test_h200_baseline_without_paper_rows_says_so(tmp_path, capsys):
    """The GPU nightly benchmarks the paper preset's training steps; the committed H200 baseline predates that."""
    h200 = json.loads((CI_DIR / "baselines" / "nvidia-h200.json").read_text())
    assert not any(m.get("preset") == "paper" for m in h200["metrics"].values())
    current = dict(h200, quick=False, host={"gpu_name": "NVIDIA H200", "logical_cpus": 16},
                   plan={"bench_presets": ["paper", "cpu"], "train_preset": "cpu", "train_steps": 300})  # fmt: skip
    current["metrics"] = {k: m for k, m in h200["metrics"].items() if not k.startswith("val_nll/")}
    for model in ("gqn", "metagqn"):
        for dtype in ("fp32", "bf16"):
            key = f"bench/benchmarks/test_bench_throughput.py::test_step[train-{model}-paper-b36-{dtype}-eager]"
            group = f"train-{model}-paper-b36"
            current["metrics"][key] = {"key": key, "category": "time", "value": 0.2, "unit": "s", "group": group,
                                       "preset": "paper"}  # fmt: skip
            current["metrics"][key + "/ratio"] = {"key": key + "/ratio", "category": "ratio", "value": 30.0,
                                                  "unit": "x ref", "group": group, "preset": "paper", "rounds": 5,
                                                  "spread": 0.02, "setup": "torch.mm fp32 8192x8192 on cuda"}  # fmt: skip
    path = tmp_path / "current.json"
    path.write_text(json.dumps(current))
    rc, out, _ = run_cli(capsys, "check", "--current", str(path), "--device-name", "nvidia-h200",
                         "--verdict", str(tmp_path / "v.json"))  # fmt: skip
    assert rc == 0, out  # nothing regressed...
    # ...but said plainly: the paper rows are not gated, and the tiny training of the baseline was not in this plan.
    assert ("WARNING: no baseline rows for the paper preset: 8 ratio/time row(s) not gated "
            "(train-gqn-paper-b36, train-metagqn-paper-b36); pin a baseline from a run that has them") in out  # fmt: skip
    verdict = json.loads((tmp_path / "v.json").read_text())
    missing = [r for r in verdict["rows"] if r["status"] == "missing"]
    assert {r["key"] for r in missing} == {"val_nll/gqn/tiny", "val_nll/metagqn/tiny"}
    assert all(not r["gates"] and "not in this run's plan" in r["note"] for r in missing)
    assert verdict["host"].startswith("host: same class as the baseline's, unknown CPU, 16 CPUs, NVIDIA H200")


def test_old_format_baseline_is_a_clear_error(pinned, tmp_path, capsys):
    """A baseline pinned before timings were judged as ratios (raw stats under 'benchmarks') names the re-pin command."""
    run, base = pinned
    doc = json.loads(base.read_text())
    doc.pop("metrics")
    doc["benchmarks"] = {"benchmarks/x.py::test_x": {"median_s": 0.01, "iqr_s": 0.001, "mean_s": 0.01,
                                                     "stddev_s": 0.001, "rounds": 10}}  # fmt: skip
    old = tmp_path / "old.json"
    old.write_text(json.dumps(doc))
    rc, _, err = run_cli(capsys, "check", "--current", str(run), "--baseline", str(old))
    assert rc == 2 and str(old) in err and "before timings were judged as ratios" in err
    assert "python ci/nightly.py run --device cpu --quick --out /tmp/nightly && python ci/nightly.py baseline" in err
