"""``--set`` on every command that takes ``--preset``: the overrides reach the measured preset and the results file.

Each test runs a command twice at the tiny preset, once with ``--set model.hidden_channels=16``
(tiny has 8), and checks a size-dependent number in the results file, not only that the option parses.
"""

from __future__ import annotations

import argparse

import pytest

from gqnbench.cli import build_parser, main
from gqnbench.commands.harness import SUBCOMMANDS
from gqnbench.results import read_result

WIDER = ["--set", "model.hidden_channels=16"]
RECORDED = {"model.hidden_channels": "16"}


def _costs(tmp_path, name: str, argv: list[str]) -> dict:
    out = tmp_path / f"{name}.json"
    assert main([*argv, "--out", str(out)]) == 0
    return read_result(out, "costs")


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


def test_every_command_with_preset_takes_set():
    for name, parser in _subcommands().items():
        options = {o for a in parser._actions for o in a.option_strings}
        if "--preset" in options:
            assert "--set" in options, name
    assert {name for name, *_ in SUBCOMMANDS} <= set(_subcommands())


def test_costs_set_changes_the_parameter_count_and_is_recorded(tmp_path):
    argv = ["costs", "--preset", "tiny", "--quick", "--sections", "params"]
    plain = _costs(tmp_path, "plain", argv)
    wider = _costs(tmp_path, "wider", [*argv, *WIDER])
    assert plain["overrides"] == {} and wider["overrides"] == RECORDED
    assert plain["params"]["gqn"]["total"] == 89_419
    assert wider["params"]["gqn"]["total"] > 2 * plain["params"]["gqn"]["total"]
    assert wider["params"]["gqn"]["config"]["hidden_channels"] == 16


def test_costs_resume_does_not_reuse_sections_measured_with_other_overrides(tmp_path):
    argv = ["costs", "--preset", "tiny", "--quick", "--sections", "params", "--out", str(tmp_path / "c.json")]
    assert main(argv) == 0
    assert main([*argv, *WIDER]) == 0
    assert read_result(tmp_path / "c.json", "costs")["params"]["gqn"]["config"]["hidden_channels"] == 16


@pytest.mark.slow
def test_scaling_set_changes_the_step_flops_and_is_recorded(tmp_path):
    argv = ["scaling", "--preset", "tiny", "--models", "gqn", "--axis", "L", "--values", "1", "--rounds", "1"]
    plain = _costs(tmp_path, "plain", argv)
    wider = _costs(tmp_path, "wider", [*argv, *WIDER])
    assert wider["overrides"] == RECORDED
    (p,), (w,) = plain["scaling"], wider["scaling"]
    assert (p["axis"], p["value"]) == (w["axis"], w["value"]) == ("L", 1)  # the axis still wins on its own field
    assert w["flop_per_step"] > 1.5 * p["flop_per_step"]


@pytest.mark.slow
def test_perf_targets_set_changes_the_measured_step_and_is_recorded(tmp_path):
    argv = ["perf-targets", "--preset", "tiny", "--batch", "2", "--rounds", "1", "--warmup", "0", "--no-compile"]
    argv += ["--matmul-n", "256"]
    plain = _costs(tmp_path, "plain", argv)
    wider = _costs(tmp_path, "wider", [*argv, *WIDER])
    assert wider["overrides"] == wider["perf_targets"]["overrides"] == RECORDED
    assert wider["perf_targets"]["fp32"]["flop_per_step"] > 1.5 * plain["perf_targets"]["fp32"]["flop_per_step"]


def test_throughput_and_memory_record_the_overrides(tmp_path):
    argv = ["throughput", "--preset", "tiny", "--models", "gqn", "--modes", "infer", "--dtypes", "fp32"]
    argv += ["--rounds", "1", "--warmup", "0", "--no-peak"]
    plain = _costs(tmp_path, "plain", argv)
    wider = _costs(tmp_path, "wider", [*argv, *WIDER])
    assert wider["overrides"] == RECORDED
    assert wider["throughput"][0]["flop_per_step"] > 1.5 * plain["throughput"][0]["flop_per_step"]


def test_learning_study_set_goes_under_every_entry(tmp_path, monkeypatch):
    import gqnbench.training.learning_study as study

    seen: list[dict] = []
    monkeypatch.setattr(study, "prepare_data", lambda *a, **k: None)
    monkeypatch.setattr(study, "run_jobs", lambda job, jobs, **k: seen.extend(jobs) or [])
    argv = ["learning-study", "--entries", "s16-base", "s16-h64", "--models", "gqn", "--out", str(tmp_path)]
    assert main([*argv, "--set", "model.hidden_channels=48", "--set", "train.seed=7", "--no-progress"]) == 0
    by_entry = {j["name"]: j["overrides"] for j in seen}
    assert by_entry.keys() == {"s16-base", "s16-h64"} and all(o["train.seed"] == "7" for o in by_entry.values())
    # An entry's own field wins: both entries set the hidden channels themselves.
    assert (by_entry["s16-base"]["model.hidden_channels"], by_entry["s16-h64"]["model.hidden_channels"]) == (32, 64)
    doc = read_result(tmp_path / "learning_study.json", "learning_study")
    assert doc["overrides"] == {"model.hidden_channels": "48", "train.seed": "7"}
