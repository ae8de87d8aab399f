"""The nightly gate on real benchmark runs: it still catches a slow model, and passes an unchanged one.

Two real ``ci/nightly.py run --device cpu --quick`` runs (the tiny preset's step benchmarks,
one thread, training skipped) of ``gqn`` and of ``gqn_slow``, a test plugin doing ``gqn``'s
work twice (``tests/plugins/slow_gqn.py``). Both models run in each of the two runs, so the
comparison of the slow model with the plain one's baseline is made between two runs on the
same host. The busy and unstable rules are switched off here (tests/test_nightly_check.py owns
them): these tests may run while other work shares the two cores, which spreads each round's
ratio widely, and what they test is that the median ratio still tells the slow model from the
plain one, and an unchanged run from a regression, under the committed ratio limit.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gqnbench.nightly import cli as nightly

REPO = Path(__file__).resolve().parents[1]
SLOW_PLUGIN = REPO / "tests" / "plugins" / "slow_gqn.py"
STEPS = ("train-gqn-tiny-b4-fp32-eager", "train-gqn-tiny-b4-bf16-eager", "infer-gqn-tiny-b4-fp32-eager")


def _run(out: Path) -> Path:
    """One real nightly run of both models' step benchmarks (check skipped: the tests check on their own)."""
    bench = "--models gqn,gqn_slow --threads 1 --rounds 20 -k test_step"
    cmd = [sys.executable, str(REPO / "ci" / "nightly.py"), "run", "--device", "cpu", "--quick", "--out", str(out),
           f"--bench-args={bench}", "--skip", "train", "--skip", "report", "--skip", "check"]  # fmt: skip
    env = {**os.environ, "GQNBENCH_PLUGINS": str(SLOW_PLUGIN)}
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("nightly-ratio")
    return _run(root / "first"), _run(root / "second")


@pytest.fixture
def thresholds(tmp_path: Path) -> Path:
    th = json.loads((REPO / "ci" / "thresholds.json").read_text())
    th["busy"]["max_load_per_core"] = 1000.0
    loose = {"max_iqr_over_median": 1000.0, "max_stddev_over_mean": 1000.0}
    th["stability"].update(loose)
    for override in th["overrides"]:
        override["stability"] = loose
    path = tmp_path / "thresholds.json"
    path.write_text(json.dumps(th))
    return path


def _model_only(run: Path, model: str, out: Path, scale: float = 1.0) -> Path:
    """A copy of ``run`` with ``model``'s benchmarks only, named as ``gqn``'s; every time scaled by ``scale``.

    The renaming lets the gate pair the slow model's rows with the plain model's baseline; the
    scaling makes the run one from a host ``1 / scale`` times as fast (ratios unchanged, since
    the step and the reference beside it both scale).
    """
    out.mkdir(parents=True)
    shutil.copy(run / "nightly.json", out / "nightly.json")
    doc = json.loads((run / "bench.json").read_text())
    kept = []
    for bench in doc["benchmarks"]:
        if bench["extra_info"].get("model") != model:
            continue
        bench = json.loads(json.dumps(bench).replace(f"-{model}-", "-gqn-"))
        bench["extra_info"]["model"] = "gqn"
        for k in ("min", "max", "mean", "stddev", "median", "iqr", "q1", "q3", "ld15iqr", "hd15iqr", "total"):
            bench["stats"][k] *= scale
        bench["stats"]["ops"] /= scale
        bench["extra_info"]["ref_median_s"] *= scale
        for k in ("ref_flop_per_s", "flop_per_s", "images_per_s", "matmul_peak_flop_per_s"):
            if bench["extra_info"].get(k) is not None:
                bench["extra_info"][k] /= scale
        kept.append(bench)
    (out / "bench.json").write_text(json.dumps({**doc, "benchmarks": kept}))
    return out


def _pin_and_check(capsys, tmp_path: Path, base: Path, cur: Path, thresholds: Path) -> tuple[int, dict, str]:  # noqa: ANN001
    pinned = tmp_path / "baseline.json"
    assert nightly.main(["baseline", "--from", str(base), "--out", str(pinned), "--thresholds", str(thresholds)]) == 0
    capsys.readouterr()
    rc = nightly.main(["check", "--current", str(cur), "--baseline", str(pinned), "--thresholds", str(thresholds)])
    out = capsys.readouterr().out
    rows = {r["key"]: r for r in json.loads((cur / "verdict.json").read_text())["rows"]}
    return rc, rows, out


def _ratio_rows(rows: dict) -> dict[str, dict]:
    found = {s: r for s in STEPS for k, r in rows.items() if k.endswith(f"[{s}]/ratio")}
    assert set(found) == set(STEPS), sorted(rows)
    return found


@pytest.mark.slow
def test_plain_model_run_twice_passes(runs, tmp_path, thresholds, capsys):
    first, second = runs
    base = _model_only(first, "gqn", tmp_path / "base")
    cur = _model_only(second, "gqn", tmp_path / "cur")
    rc, rows, out = _pin_and_check(capsys, tmp_path, base, cur, thresholds)
    assert rc == 0, out
    assert all(r["status"] != "regressed" for r in _ratio_rows(rows).values())
    assert "host: same class as the baseline's" in out


@pytest.mark.slow
def test_model_doing_twice_the_work_is_a_regression(runs, tmp_path, thresholds, capsys):
    first, second = runs
    base = _model_only(first, "gqn", tmp_path / "base")
    slow = _model_only(second, "gqn_slow", tmp_path / "slow")
    rc, rows, out = _pin_and_check(capsys, tmp_path, base, slow, thresholds)
    assert rc == 1, out
    for step, row in _ratio_rows(rows).items():
        assert row["status"] == "regressed" and row["gates"], (step, row)
        assert row["delta"] > 40.0  # about +70-100 %: the step's work is done twice, the optimizer's once
    assert "time relative to the reference regressed" in out


@pytest.mark.slow
def test_baseline_from_a_twice_as_fast_host_passes_an_unchanged_run(runs, tmp_path, thresholds, capsys):
    first, second = runs
    fast = _model_only(first, "gqn", tmp_path / "fast", scale=0.5)
    cur = _model_only(second, "gqn", tmp_path / "cur")
    rc, rows, out = _pin_and_check(capsys, tmp_path, fast, cur, thresholds)
    assert rc == 0, out
    assert all(r["status"] != "regressed" for r in _ratio_rows(rows).values())
    # The absolute times are shown beside the baseline's, half of what the first run measured, and not judged.
    medians = {
        b["fullname"]: b["stats"]["median"] for b in json.loads((first / "bench.json").read_text())["benchmarks"]
    }
    shown = {k: r for k, r in rows.items() if r["metric"] == "time"}
    assert len(shown) == len(STEPS) and all(r["status"] == "shown" and not r["gates"] for r in shown.values())
    assert all(r["baseline"] == pytest.approx(0.5 * medians[k.removeprefix("bench/")]) for k, r in shown.items())
