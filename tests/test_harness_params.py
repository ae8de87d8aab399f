"""Parameter counts: per-module sums, the objective-used count, and the paper numbers (meta device)."""

from __future__ import annotations

import dataclasses

import pytest

from gqnbench.harness.common import make_episode
from gqnbench.harness.params import count_parameters, parameter_report
from gqnbench.models import build_model


@pytest.mark.parametrize("model", ["gqn", "metagqn"])
def test_per_module_totals_sum_to_total(model, tiny):
    rep = parameter_report(model, tiny, device="cpu")
    assert sum(v["total"] for v in rep["per_module"].values()) == rep["total"]
    assert sum(v["used"] for v in rep["per_module"].values()) == rep["used_by_objective"]
    # parameter_report builds metagqn in the authors' layout (with the unused prior head).
    cfg = dataclasses.replace(tiny.model_config(model), include_unused_prior_head=model == "metagqn")
    assert rep["total"] == sum(p.numel() for p in build_model(model, cfg).parameters())


def test_used_by_objective_excludes_exactly_the_unused_prior_head(tiny):
    rep = parameter_report("metagqn", tiny, authors_layout=True, device="cpu")
    cfg = tiny.model_config("metagqn")
    head = cfg.hidden_channels * 2 * cfg.z_channels * 25 + 2 * cfg.z_channels  # 5x5 conv with bias
    assert rep["per_module"]["unused_prior_head"] == {"total": head, "used": 0}
    assert rep["unused"] == head
    assert rep["used_by_objective"] == rep["total"] - head
    # Without the authors' head nothing is unused.
    plain = parameter_report("metagqn", tiny, authors_layout=False, device="cpu")
    assert plain["total"] == plain["used_by_objective"] == rep["used_by_objective"]


def test_gqn_uses_every_parameter(tiny):
    rep = parameter_report("gqn", tiny, device="cpu")
    assert rep["unused"] == 0 and rep["total"] == 89_419


def test_paper_counts_match_the_study():
    gqn = parameter_report("gqn", "paper")
    meta = parameter_report("metagqn", "paper")
    assert gqn["total"] == gqn["used_by_objective"] == 49_469_343
    assert meta["total"] == 18_713_091
    assert meta["used_by_objective"] == 17_074_179
    assert meta["per_module"]["unused_prior_head"] == {"total": 1_638_912, "used": 0}
    assert gqn["per_module"]["representation"]["total"] == 1_962_368
    assert gqn["per_module"]["inference_core"]["total"] == 25_372_560
    assert gqn["per_module"]["generation_core"]["total"] == 22_095_616


def test_count_leaves_no_gradients_behind(tiny):
    cfg = tiny.model_config("gqn")
    model = build_model("gqn", cfg)
    counts = count_parameters(model, make_episode(cfg, 2))
    assert counts.used_by_objective == counts.total
    assert all(p.grad is None for p in model.parameters())
