"""Fast-path numerics vs an fp64 reference: correct paths pass, a wrong one fails."""

from __future__ import annotations

import pytest
import torch

from gqnbench.numerics import _fp32_randn_like, check_numerics, perturb_weights, same_noise_across_dtypes


@pytest.mark.parametrize("model", ["gqn", "metagqn"])
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_correct_fast_paths_pass(model, dtype):
    r = check_numerics(model, "tiny", dtype, batch=2)
    assert r.passed, r.reason
    assert r.loss_err_fp32 < 1e-6 and r.grad_err_fp32 < 1e-5  # fp32 vs fp64 on the same noise
    assert r.grad_cosine > 0.99
    if dtype == "bf16":
        assert r.grad_err_fast > r.grad_err_fp32  # bf16 really ran in bf16


@pytest.mark.parametrize("model", ["gqn", "metagqn"])
def test_a_wrong_fast_path_fails(model):
    r = check_numerics(model, "tiny", "bf16", batch=2, fast_model_hook=perturb_weights(0.5))
    assert not r.passed
    assert "gradient error" in r.reason


def test_compiled_fp32_path_passes_with_aot_eager():
    r = check_numerics("metagqn", "tiny", "fp32", compiled=True, batch=2, compile_backend="aot_eager")
    assert r.passed, r.reason
    assert r.compiled


def test_noise_is_the_same_in_every_dtype():
    x = torch.zeros(1000)
    with same_noise_across_dtypes():
        assert torch.randn_like is _fp32_randn_like
        torch.manual_seed(3)
        a = torch.randn_like(x.double())
        torch.manual_seed(3)
        b = torch.randn_like(x.bfloat16())
    assert torch.randn_like is not _fp32_randn_like
    assert (a - b.double()).abs().max() < 0.02  # equal up to bf16 rounding


def test_each_loss_term_is_checked_against_fp64():
    import torch

    from gqnbench.numerics import check_numerics

    ok = check_numerics("gqn", "tiny", "bf16")
    assert ok.passed and set(ok.terms) == {"reconstruction", "kl"}
    assert ok.terms["kl"]["fast"] >= 0.0 and ok.terms["kl"]["err_fast"] <= ok.terms["kl"]["bound"]

    def wrong_prior(model):  # a fast path whose prior head differs: only the KL term moves
        with torch.no_grad():
            model.eta_pi.bias.add_(0.5)

    bad = check_numerics("gqn", "tiny", "bf16", fast_model_hook=wrong_prior)
    assert not bad.passed and "kl error" in bad.reason
    assert bad.terms["reconstruction"]["err_fast"] <= bad.terms["reconstruction"]["bound"]


def test_judge_bounds_each_error_by_the_fp32_error_plus_the_floor():
    from gqnbench.numerics import GRAD_FLOOR, LOSS_FLOOR, _judge

    def measured(loss: float, grad: list[float], kl: float = 0.5) -> tuple:
        t = torch.tensor
        parts = {"reconstruction": t(loss - kl, dtype=torch.float64), "kl": t(kl, dtype=torch.float64)}
        return t(loss, dtype=torch.float64), t(grad, dtype=torch.float64), parts

    ref, fp32 = measured(10.0, [3.0, 4.0]), measured(10.001, [3.0, 4.0005])
    ok = _judge(ref, fp32, measured(10.02, [3.05, 4.0]), "bf16", multiplier=3.0)
    assert ok["passed"] and ok["reason"] == ""
    assert ok["loss_err_fast"] == pytest.approx(0.002)
    assert ok["loss_bound"] == pytest.approx(3 * 1e-4 + LOSS_FLOOR["bf16"])
    assert ok["grad_err_fast"] == pytest.approx(0.01) and ok["grad_bound"] == pytest.approx(
        3 * 1e-4 + GRAD_FLOOR["bf16"]
    )
    bad = _judge(ref, fp32, measured(11.0, [3.0, 5.0], kl=-0.1), "bf16", multiplier=3.0)
    assert not bad["passed"]
    assert (
        bad["reason"].startswith("loss error") and "gradient error" in bad["reason"] and "negative KL" in bad["reason"]
    )
