"""The nightly gate's check/baseline commands (:mod:`gqnbench.nightly.cli`, what ``ci/nightly.py`` runs) on
synthetic runs in the exact file formats (pytest-benchmark JSON, gqnbench ``training_run`` and
``nightly_run`` results files): pass/fail, names and numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gqnbench.nightly import cli as nightly
from gqnbench.nightly.collect import collect_run, read_baseline
from gqnbench.nightly.render import fmt_value
from gqnbench.results import write_result

CI_DIR = Path(__file__).resolve().parents[1] / "ci"

DEVICE_NAME = "cpu-test-processor"  # matches the "cpu-*" override in ci/thresholds.json (time limit +25%)
ENV = {"torch": "2.13.0", "cpu_count": 2, "torch_threads": 2, "python": "3.11.7"}
NLL_CONSTANT = 768 * 0.5 * 1.8378770664093453  # 16x16x3 values, nats per image
BENCHES = {
    # fullname: (median seconds, peak bytes)
    "benchmarks/test_step.py::test_train_step[gqn-tiny-b4-fp32-eager]": (0.012, 300e6),
    "benchmarks/test_step.py::test_train_step[metagqn-tiny-b4-fp32-eager]": (0.009, 280e6),
    "benchmarks/test_step.py::test_infer_step[gqn-tiny-b4-fp32-eager]": (0.004, 250e6),
}
TRAIN_KEY = "val_nll/gqn/tiny"  # the shared metric key (gqnbench.report.metrics)


def _bench_entry(fullname: str, median: float, peak: float | None, spread: float = 0.02, rounds: int = 10) -> dict:
    name = fullname.split("::", 1)[1]
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
) -> Path:
    """A run folder as ``ci/nightly.py run`` leaves it: bench.json, train/runs/*.json, nightly.json."""
    benches = BENCHES if benches is None else benches
    folder.mkdir(parents=True, exist_ok=True)
    doc = {
        "machine_info": {"node": "test", "machine": "x86_64", "cpu": {"brand_raw": "Test(R) Processor", "count": 2}},
        "commit_info": {"id": "0" * 40, "dirty": False},
        "benchmarks": [
            _bench_entry(k, med, peak, spread=0.5 if k in noisy else 0.02) for k, (med, peak) in benches.items()
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
        {"device": "cpu", "device_name": DEVICE_NAME, "quick": True, "steps": steps or []},
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
    assert "3 benchmark(s), 1 training run(s)" in out
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
    assert verdict["counts"] == {"ok": 7}  # 3 time + 3 memory + 1 NLL
    assert (run / "verdict.txt").read_text().startswith("nightly check:")


def test_run_compared_with_itself_as_a_run_folder_passes(tmp_path, capsys):
    run = make_run(tmp_path / "a")
    rc, out, _ = run_cli(capsys, "check", "--current", str(run), "--baseline", str(run))
    assert rc == 0 and "verdict: PASS" in out


def test_thirty_percent_slower_fails_naming_benchmark_and_numbers(pinned, capsys):
    run, base = pinned
    key = "benchmarks/test_step.py::test_train_step[gqn-tiny-b4-fp32-eager]"
    _doctor(base, lambda d: d["metrics"]["bench/" + key].update(value=0.012 / 1.3))
    rc, out, _ = run_cli(capsys, "check", "--current", str(run), "--baseline", str(base))
    assert rc == 1
    line = next(ln for ln in out.splitlines() if ln.startswith("  - "))
    assert key in line and "median step time regressed" in line
    assert fmt_value(0.012 / 1.3, "s") in line and "9.231 ms" in line and "12.000 ms" in line
    assert "+30.0%" in line and "limit +25%" in line
    assert "verdict: FAIL" in out
    verdict = json.loads((run / "verdict.json").read_text())
    (reg,) = verdict["regressions"]
    assert reg["key"] == "bench/" + key and reg["metric"] == "time"
    assert reg["baseline"] == pytest.approx(0.012 / 1.3) and reg["current"] == pytest.approx(0.012)
    assert reg["delta"] == pytest.approx(30.0)


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


def test_noisy_benchmarks_are_unstable_and_do_not_gate(tmp_path, capsys):
    key = "benchmarks/test_step.py::test_train_step[metagqn-tiny-b4-fp32-eager]"
    base = make_run(tmp_path / "base")
    slower = dict(BENCHES, **{key: (0.009 * 1.3, 280e6)})
    noisy_now = make_run(tmp_path / "noisy_now", benches=slower, noisy=(key,))
    rc, out, _ = run_cli(capsys, "check", "--current", str(noisy_now), "--baseline", str(base))
    assert rc == 0, out
    (line,) = [ln for ln in out.splitlines() if ln.startswith("UNSTABLE")]
    assert key in line and "+30.0%" in line and "current: IQR/median 0.5 > 0.15" in line and "not gated" in line

    # Noise in the baseline alone also makes the comparison untrustworthy.
    noisy_base = make_run(tmp_path / "noisy_base", noisy=(key,))
    steady_slow = make_run(tmp_path / "steady_slow", benches=slower)
    rc, out, _ = run_cli(capsys, "check", "--current", str(steady_slow), "--baseline", str(noisy_base))
    assert rc == 0 and "baseline: IQR/median 0.5 " in out

    # The same slowdown without noise gates.
    rc, out, _ = run_cli(capsys, "check", "--current", str(steady_slow), "--baseline", str(base))
    assert rc == 1 and key in out


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


def test_bad_thresholds_file_is_a_clear_error(pinned, tmp_path, capsys):
    run, base = pinned
    bad = tmp_path / "th.json"
    bad.write_text(json.dumps({"time": {"max_slowdown": 5}}))
    rc, _, err = run_cli(capsys, "check", "--current", str(run), "--baseline", str(base), "--thresholds", str(bad))
    assert rc == 2 and str(bad) in err and "unknown setting 'max_slowdown'" in err


def test_committed_thresholds_file_loads():
    from gqnbench.nightly.thresholds import load_thresholds

    th = load_thresholds(CI_DIR / "thresholds.json")
    gpu = th.for_benchmark("x", "train-gqn-paper-b36", "nvidia-h100-80gb-hbm3")
    cpu = th.for_benchmark("x", "train-gqn-tiny-b4", "cpu-intel-xeon-processor")
    assert gpu.time.max_slowdown_pct == 10.0 and cpu.time.max_slowdown_pct == 25.0
    assert th.memory.max_increase_pct == 10.0 and th.gate_missing is True


# --- One engine: the report's --baseline comparison and the gate see the same rows ---------------

PLAIN_LIMITS = {  # no overrides, no memory floor: the gate's thresholds are the report's 10 %
    "time": {"max_slowdown_pct": 10.0, "report_speedup_pct": 10.0},
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

    # Same keys: the gate judges every time, memory and NLL row of the report (its MSE rows stay in the report).
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
    ruled = {f"bench/{NOISY}": "unstable", TRAIN_KEY: "regressed"}
    for key, g in gate.items():
        shared = {"regression": "regressed"}.get(report[key]["status"], report[key]["status"])
        assert g["status"] == ruled.get(key, shared), key
    assert report[f"bench/{SLOW}"]["status"] == "regression" and gate[f"bench/{SLOW}"]["gates"]
    assert report[f"bench/{HEAVY}/peak_memory"]["status"] == "regression"
    # ...and the rules change only the status: unstable (the report flags it), NLL band (the report does not).
    assert report[f"bench/{NOISY}"]["status"] == "regression" and not gate[f"bench/{NOISY}"]["gates"]
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
    """The committed baselines predate the shared metrics (old format): read as they are, same keys."""
    path = CI_DIR / "baselines" / f"{name}.json"
    assert "benchmarks" in json.loads(path.read_text())  # still the old format on disk
    loaded = read_baseline(path)
    assert loaded.device_name == name
    assert {"time", "nll"} <= {m.category for m in loaded.metrics.values()} <= {"time", "memory", "nll"}
    assert all(k.startswith(("bench/", "val_nll/")) for k in loaded.metrics)
    assert {"val_nll/gqn/tiny", "val_nll/metagqn/tiny"} <= set(loaded.metrics)
    verdict = tmp_path / "v.json"
    rc, out, _ = run_cli(capsys, "check", "--current", str(path), "--baseline", str(path), "--verdict", str(verdict))
    assert rc == 0 and "verdict: PASS" in out
    counts = json.loads(verdict.read_text())["counts"]
    assert counts == ({"ok": 22} if name == "cpu-amd-epyc" else {"ok": 18, "unstable": 5})


def test_old_format_baseline_gates_a_run_like_a_new_one(pinned, tmp_path, capsys):
    """A baseline in the pre-engine format (raw stats + training entries) gives the same verdict rows."""
    run, base = pinned
    doc = json.loads(base.read_text())
    metrics = doc.pop("metrics")
    doc["benchmarks"] = {
        k.removeprefix("bench/"): {
            "group": m["group"], "median_s": m["value"], "iqr_s": m["value"] * m["spread"], "mean_s": m["value"],
            "stddev_s": m["value"] * m["cv"], "rounds": m["rounds"],
            "peak_memory_bytes": metrics[k + "/peak_memory"]["value"], "info": {},
        }
        for k, m in metrics.items() if m["category"] == "time"
    }  # fmt: skip
    doc["training"] = {
        "train:gqn-tiny-seed0-30steps": {"model": "gqn", "preset": "tiny", "seed": 0, "steps": 30,
                                         "val_nll": NLL_CONSTANT + 27.0, "nll_constant": NLL_CONSTANT,
                                         "status": "completed", "final_step": 30, "run_file": "x.json"}
    }  # fmt: skip
    old = tmp_path / "old.json"
    old.write_text(json.dumps(doc))
    rc, out, _ = run_cli(capsys, "check", "--current", str(run), "--baseline", str(old))
    assert rc == 1 and "above its band" in out  # the NLL doctored to 27 nats over the constant
    rows = json.loads((run / "verdict.json").read_text())["rows"]
    assert {r["key"] for r in rows} == set(metrics) - {k for k, m in metrics.items() if m["category"] == "mse"}
    assert sum(r["status"] == "ok" for r in rows) == 6
