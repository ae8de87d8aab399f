"""Profiling: a Chrome/Perfetto trace, phase labels that add up to the step, the profile results file,
and the trace read back by the TensorBoard profiler plugin's own loader (tiny preset, seconds)."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import textwrap

import pytest

from gqnbench.harness.common import StepSpec
from gqnbench.harness.profile import (
    LABEL_PREFIX,
    PHASES,
    format_phase_table,
    profile_phases,
    profile_step,
    write_profile,
)
from gqnbench.results import read_result


def _trace_events(path) -> list[dict]:
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt") as fh:
        return json.load(fh)["traceEvents"]


def test_profile_writes_a_trace(tmp_path):
    result = profile_step(StepSpec("gqn", "tiny", batch=2), tmp_path / "trace", warmup=1, active=1, top_k=5)
    assert result.trace_path.name.endswith(".pt.trace.json")
    events = _trace_events(result.trace_path)
    assert any(e.get("name", "").startswith("aten::convolution") for e in events)
    assert "Self CPU" in result.table and "aten::" in result.table
    assert result.memory_snapshot is None  # CUDA only


@pytest.fixture(scope="module")
def tiny_cases(tmp_path_factory):
    out = tmp_path_factory.mktemp("profile")
    peaks = {"fp32_flop_per_s": 1e12, "bf16_flop_per_s": 4e12}
    cases = {
        model: profile_phases(
            StepSpec(model, "tiny", batch=4), out / "traces", warmup=1, active=3, plain_rounds=2, peaks=peaks
        )
        for model in ("gqn", "metagqn")
    }
    return out, cases, peaks


@pytest.mark.parametrize("model", ["gqn", "metagqn"])
def test_phase_times_add_up_to_the_profiled_step(tiny_cases, model):
    _, cases, _ = tiny_cases
    case = cases[model]
    assert [r["phase"] for r in case["phases"]] == list(PHASES)
    assert all(r["time_s"] > 0 for r in case["phases"])
    assert case["phase_sum_s"] == pytest.approx(case["profiled_step_s"], rel=0.10)
    # Phases of one step (the median of the three), not of the whole profiled window.
    assert (
        len(case["profiled_step_times_s"]) == 3 and sorted(case["profiled_step_times_s"])[1] == case["profiled_step_s"]
    )
    assert sum(r["share"] for r in case["phases"]) == pytest.approx(1.0, abs=0.10)
    # FLOPs of the phases are the FLOP harness's train step; the cores and backward carry them.
    by = {r["phase"]: r for r in case["phases"]}
    assert by["inference_core"]["flop"] > 0 and by["backward"]["flop"] > by["generation_core"]["flop"]
    assert by["optimizer"]["flop"] == 0 and by["optimizer"]["share_of_peak"] is None
    assert 0 < by["backward"]["share_of_peak"] == pytest.approx(by["backward"]["flop_per_s"] / 1e12)
    assert by["backward"]["calls_per_step"] == 1 and by["representation"]["calls_per_step"] == 1
    assert by["inference_core"]["calls_per_step"] >= 2  # one label range per core step (L = 2)
    assert case["overhead"]["profiled_over_plain"] > 0 and len(case["timing"]["plain"]["times_s"]) == 4
    assert case["top_operators"] and not any(op["name"].startswith(LABEL_PREFIX) for op in case["top_operators"])
    assert case["memory"] is None  # CUDA only by default
    assert "sum of phases" in format_phase_table(case)


@pytest.mark.parametrize("model", ["gqn", "metagqn"])
def test_every_phase_label_is_in_the_trace(tiny_cases, model):
    _, cases, _ = tiny_cases
    names = {e.get("name") for e in _trace_events(cases[model]["trace_file"])}
    assert {LABEL_PREFIX + p for p in PHASES} <= names


def test_profile_results_file_names_its_trace(tiny_cases):
    out, cases, peaks = tiny_cases
    path = write_profile(out / "profile.json", list(cases.values()), "tiny", "cpu", peaks)
    doc = read_result(path, "profile")
    assert [c["model"] for c in doc["cases"]] == ["gqn", "metagqn"]
    for case in doc["cases"]:
        assert not case["trace_file"].startswith("/")  # relative to the results file
        assert (path.parent / case["trace_file"]).is_file()


def test_authors_formulation_and_bf16_are_labelled(tmp_path):
    spec = StepSpec("metagqn", "tiny", batch=2, dtype="bf16", overrides=(("model.fold_linear_ops", False),))
    case = profile_phases(spec, tmp_path, warmup=1, active=2, plain_rounds=1, gzip=True, memory=True)
    assert case["formulation"] == "authors" and case["dtype"] == "bf16"
    assert case["trace_file"].endswith(".pt.trace.json.gz")
    assert case["phase_sum_s"] == pytest.approx(case["profiled_step_s"], rel=0.10)
    # The memory timeline (on CUDA by default) also runs on CPU: its peak and what holds it.
    assert case["memory"]["timeline_peak_bytes"] > 0 and case["memory"]["at_peak"]["parameter"] > 0


def test_tensorboard_plugin_loader_reads_the_trace(tiny_cases, tmp_path):
    pytest.importorskip("torch_tb_profiler", reason="torch-tb-profiler is not installed (pip install -e '.[profile]')")
    _, cases, _ = tiny_cases
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    src = cases["gqn"]["trace_file"]
    (run_dir / src.rsplit("/", 1)[-1]).write_bytes(open(src, "rb").read())
    # The loader parses in spawned processes, so it runs from a script file (spawn re-imports __main__).
    script = tmp_path / "load.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import gzip, json
            from torch_tb_profiler import io
            from torch_tb_profiler.profiler import RunLoader

            if __name__ == "__main__":
                run = RunLoader("gqnbench", {str(run_dir)!r}, io.Cache()).load()
                profiles = list(run.get_profiles())
                p = profiles[0] if profiles else None
                served = p.trace_file_path if p else None  # what the plugin's Trace view shows
                opener = gzip.open if served and served.endswith(".gz") else open
                print(json.dumps({{"profiles": len(profiles),
                                   "tree": json.dumps(p.get_operator_tree()) if p else "",
                                   "served": opener(served, "rt").read() if served else ""}}))
            """
        )
    )
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=True)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["profiles"] == 1, proc.stderr[-2000:]
    # Its operator tree holds the profiled steps and their ops; it keeps user annotations only in
    # the Trace view (the file it serves), which is where the phase labels show.
    assert "ProfilerStep#" in result["tree"] and "aten::convolution" in result["tree"]
    for phase in PHASES:
        assert LABEL_PREFIX + phase in result["served"]


def test_profile_command_prints_the_phase_table_and_writes_both_files(tmp_path, capsys):
    from gqnbench.cli import main

    out = tmp_path / "prof"
    argv = ["profile", "--model", "gqn", "--preset", "tiny", "--batch", "2", "--steps", "2", "--warmup", "1"]
    assert main([*argv, "--plain-rounds", "1", "--matmul-n", "256", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "sum of phases" in printed and "inference_core" in printed and "profiler overhead" in printed
    doc = read_result(out / "profile.json", "profile")
    (case,) = doc["cases"]
    assert case["peak_flop_per_s"] > 0 and (out / case["trace_file"]).is_file()


def test_phase_rows_come_from_the_median_step_and_rate_only_counted_flops():
    from gqnbench.harness.profile import PhaseTimes, StepPhases

    phases = ["representation", "loss"]
    steps = [
        StepPhases(1.0, {"representation": 0.5, "loss": 0.3}, {"representation": 1, "loss": 1}),
        StepPhases(4.0, {"representation": 3.0, "loss": 0.5}, {"representation": 1, "loss": 1}),  # a slowed step
        StepPhases(2.0, {"representation": 1.0, "loss": 0.6}, {"representation": 2, "loss": 1}),  # the median
    ]
    times = PhaseTimes(steps, phases)
    fields = times.fields({"representation": 4e9, "loss": 0.0}, peak=8e9)
    rep, loss = fields["phases"]
    assert (rep["time_s"], rep["share"], rep["calls_per_step"]) == (1.0, 0.5, 2)
    assert rep["mean_time_s"] == pytest.approx(1.5)  # all steps, beside the median's
    assert (rep["flop_per_s"], rep["share_of_peak"]) == (4e9, 0.5)
    # The loss has no counted FLOPs: no rate rather than a misleading 0.
    assert (loss["flop"], loss["flop_per_s"], loss["share_of_peak"]) == (0.0, None, None)
    assert fields["profiled_step_s"] == 2.0 and fields["phase_sum_s"] == pytest.approx(1.6)
    assert fields["unlabelled_s"] == pytest.approx(0.4)
    assert fields["profiled_step_times_s"] == [1.0, 4.0, 2.0] and fields["step_flop"] == 4e9
    assert times.mean_step_s == pytest.approx(7 / 3)
    assert PhaseTimes(steps, phases).fields(None, None)["phases"][0]["flop"] is None
