"""The claims section is built from the numbers: verdicts follow the seed ranges and the sweep."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from gqnbench.report.build import build_report
from gqnbench.report.inputs import load_results
from gqnbench.report.sections.claims import (
    FAILS,
    HOLDS,
    UNKNOWN,
    claims_frame,
    judged,
    learned,
    learning_frame,
    sweep_verdict,
)
from gqnbench.results import write_result

BASE = {"val_nll": 800.0, "val_mse": 0.02, "val_fg_mse": 0.1}
NEAREST = {"val_nll": 810.0, "val_mse": 0.027, "val_fg_mse": 0.114}


def _run(folder: Path, model: str, seed: int, final_nll: float, ratio: float, bumps: float = 0.0) -> None:
    """A finished training run whose last evaluation is ``ratio`` x the mean frame (MSE and fg MSE)."""
    curve = [
        {"step": 0, "wall_s": 0.0, "val_nll": 900.0, "val_mse": 0.04, "val_fg_mse": 0.2},
        {"step": 100, "wall_s": 10.0, "val_nll": final_nll + 5 - bumps, "val_mse": 0.0205 - bumps * 1e-4, "val_fg_mse": 0.1},
        {"step": 200, "wall_s": 20.0, "val_nll": final_nll + 5, "val_mse": 0.0205, "val_fg_mse": 0.1},
        {"step": 300, "wall_s": 30.0, "val_nll": final_nll, "val_mse": 0.02 * ratio, "val_fg_mse": 0.1 * ratio},
    ]
    write_result(
        folder / f"{model}-main-seed{seed}.json",
        "training_run",
        {
            "model": model,
            "seed": seed,
            "tag": "main",
            "preset": "cpu",
            "status": "completed",
            "eval_curve": curve,
            "baselines": {"mean_image": BASE, "nearest_context": NEAREST},
            "final": {"step": 300, "val_nll": final_nll, "nll_constant": 705.7},
            "config": {"model": {"image_size": 16, "z_channels": 3}, "train": {"batch_size": 32}, "data": {}},
        },
    )


def _sweep(folder: Path, learned: dict[tuple[str, int], bool]) -> None:
    runs = [
        {"model": m, "value": z, "seed": 0, "status": "completed", "learned": ok, "diverged": False, "final_val_nll": 800.0}
        for (m, z), ok in learned.items()
    ]
    write_result(
        folder / "sweep.json", "sweep", {"field": "model.z_channels", "values": [3, 32, 128], "seeds": [0], "runs": runs}
    )


STUDY_LIKE = {
    ("gqn", 3): True, ("gqn", 32): True, ("gqn", 128): False,
    ("metagqn", 3): True, ("metagqn", 32): True, ("metagqn", 128): True,
}  # fmt: skip


def _results(tmp_path: Path, meta_nlls, gqn_nlls, sweep=STUDY_LIKE, ratio=0.8, gqn_bumps=0.0):
    folder = tmp_path / "results"
    for seed, nll in enumerate(meta_nlls):
        _run(folder, "metagqn", seed, nll, ratio)
    for seed, nll in enumerate(gqn_nlls):
        _run(folder, "gqn", seed, nll, ratio, bumps=gqn_bumps)
    _sweep(folder, sweep)
    return load_results([folder])


def test_study_like_numbers_make_every_claim_hold(tmp_path: Path) -> None:
    results = _results(tmp_path, [750, 752, 751], [760, 761, 765], gqn_bumps=8.0)
    learning = learning_frame(results)
    assert learning["learned"].all() and len(learning) == 6
    assert learning["mse_ratio"].round(6).eq(0.8).all() and learning["nearest_mse_ratio"].round(3).eq(1.35).all()
    claims = claims_frame(results)
    assert list(claims["verdict"]) == [HOLDS, HOLDS, HOLDS]
    assert "751.0 (750.0–752.0)" in claims["this run"].iloc[0]  # the numbers, not a constant


def test_overlapping_seeds_cannot_tell_and_reversed_order_does_not_hold(tmp_path: Path) -> None:
    overlap = claims_frame(_results(tmp_path / "a", [750, 770, 751], [760, 761, 765]))
    assert overlap["verdict"].iloc[0] == UNKNOWN
    reversed_ = claims_frame(_results(tmp_path / "b", [770, 772, 771], [760, 761, 765]))
    assert reversed_["verdict"].iloc[0] == FAILS


def test_gqn_learning_at_128_means_the_robustness_claim_does_not_hold(tmp_path: Path) -> None:
    sweep = {**STUDY_LIKE, ("gqn", 128): True}
    claims = claims_frame(_results(tmp_path, [750, 752, 751], [760, 761, 765], sweep=sweep))
    assert claims["verdict"].iloc[2] == FAILS
    missing = {k: v for k, v in STUDY_LIKE.items() if k != ("metagqn", 128)}
    assert claims_frame(_results(tmp_path / "m", [750], [760], sweep=missing))["verdict"].iloc[2] == UNKNOWN


def test_runs_that_did_not_learn_are_never_judged(tmp_path: Path) -> None:
    results = _results(tmp_path, [750, 752, 751], [760, 761, 765], ratio=0.97)
    assert not learning_frame(results)["learned"].any()
    assert set(claims_frame(results)["verdict"]) == {UNKNOWN}


def test_sweep_verdict_follows_every_seed_at_every_setting() -> None:
    study_like = {key: [ok, ok] for key, ok in STUDY_LIKE.items()}
    assert sweep_verdict(study_like) == (HOLDS, "")
    # One GQN seed learning at 128, or one metagqn seed failing at 32, breaks the claim.
    assert sweep_verdict({**study_like, ("gqn", 128): [False, True]})[0] == FAILS
    assert sweep_verdict({**study_like, ("metagqn", 32): [True, False]})[0] == FAILS
    nowhere = {**study_like, **{("metagqn", z): [False] for z in (3, 32, 128)}}
    assert sweep_verdict(nowhere) == (UNKNOWN, " (metagqn learned at no setting)")
    assert sweep_verdict({k: v for k, v in study_like.items() if k != ("gqn", 128)}) == (UNKNOWN, "")


def test_learned_needs_both_ratios_within_the_margin_and_no_divergence() -> None:
    frame = pd.DataFrame(
        {
            "status": ["completed", "completed", "completed", "diverged"],
            "mse_ratio": [0.9, 0.91, 0.5, 0.5],
            "fg_ratio": [0.9, 0.5, 0.95, 0.5],
        }
    )
    assert list(learned(frame)) == [True, False, False, False]
    assert judged(HOLDS, anyone_learned=False) == UNKNOWN and judged(FAILS, anyone_learned=True) == FAILS


@pytest.mark.slow
def test_the_report_opens_with_the_claims(tmp_path: Path) -> None:
    results = _results(tmp_path, [750, 752, 751], [760, 761, 765], gqn_bumps=8.0)
    out = build_report(results, tmp_path / "report")
    md = out.markdown.read_text()
    assert md.index('<a id="claims"') == md.index("<a id=")  # the first section
    assert "| 1. The proposed model reaches a lower validation NLL than GQN |" in md and "| holds |" in md
