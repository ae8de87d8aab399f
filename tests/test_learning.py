"""What the learning half stands on: fp32 loss terms under bf16, the output head, foreground MSE,
the reference predictors and the "learned" criterion."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gqnbench.data.episode import Episode
from gqnbench.judging import final_ratios, learned
from gqnbench.metrics import FOREGROUND_THRESHOLD, foreground_mask, gaussian_nll, study_nll
from gqnbench.models import build_model
from gqnbench.models.base import gaussian_kl
from gqnbench.presets import get_preset
from gqnbench.training.budgets import MseRatioTarget
from gqnbench.training.evaluation import mean_image_baseline, nearest_context_prediction, reference_results


def _near_equal_gaussians(seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    mu_p = torch.randn(16, 3, 4, 4, generator=g)
    logvar_p = 0.5 * torch.randn(16, 3, 4, 4, generator=g)
    mu_q = mu_p + 0.03 * torch.randn(mu_p.shape, generator=g)
    logvar_q = logvar_p + 0.03 * torch.randn(mu_p.shape, generator=g)
    return tuple(t.bfloat16() for t in (mu_q, logvar_q, mu_p, logvar_p))


def test_kl_of_bf16_inputs_is_fp32_and_matches_fp64() -> None:
    args = _near_equal_gaussians()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        kl = gaussian_kl(*args)
    reference = gaussian_kl(*(t.double() for t in args))  # the same bf16 values, in fp64
    assert kl.dtype == torch.float32 and bool((kl >= 0).all())
    torch.testing.assert_close(kl.double(), reference, rtol=1e-3, atol=0.0)
    # What the fix prevents: the same formula in bf16 is off by far more than 1e-3.
    naive = 0.5 * (args[3] - args[1] + (args[1].exp() + (args[0] - args[2]).pow(2)) / args[3].exp() - 1.0)
    assert (naive.flatten(1).sum(1).double() - reference).abs().max() > 1e-2 * reference.abs().max()


def test_gaussian_nll_is_fp32_for_bf16_inputs() -> None:
    target = torch.rand(2, 3, 8, 8).bfloat16()
    mean = torch.rand(2, 3, 8, 8).bfloat16()
    out = gaussian_nll(target, mean, 0.7)
    ref = gaussian_nll(target.double(), mean.double(), 0.7)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), ref, rtol=1e-6, atol=1e-4)


def test_bf16_gqn_loss_has_nonnegative_kl_at_every_layer_count() -> None:
    cfg = get_preset("tiny").model_config("gqn")
    model = build_model("gqn", cfg)
    episode = Episode.random(4, cfg.image_size, num_context=3, generator=torch.Generator().manual_seed(2))
    for step in range(5):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model.loss(episode, step)
        assert out.loss.dtype == torch.float32 and float(out.kl) >= 0.0


@pytest.mark.parametrize("model_name", ["gqn", "metagqn"])
def test_raw_head_trains_unclamped_and_predicts_clamped(model_name: str) -> None:
    cfg = get_preset("tiny").model_config(model_name)
    assert cfg.output_head == "raw"  # the authors' form is the default
    model = build_model(model_name, cfg)
    with torch.no_grad():
        model.eta_g.bias.fill_(2.0)  # a head output far above 1
    episode = Episode.random(2, cfg.image_size, generator=torch.Generator().manual_seed(0))
    out = model.loss(episode)
    assert float(out.mean_image.min()) > 1.0  # the likelihood sees the raw output
    pred = model.predict(episode, use_mean=True)
    assert float(pred.max()) == 1.0  # predictions are clamped to [0, 1]
    sig = build_model(model_name, get_preset("tiny", {"model.output_head": "sigmoid"}).model_config(model_name))
    assert float(sig.loss(episode).mean_image.max()) < 1.0


def test_latent_logvar_bias_initialises_the_variance_half_only() -> None:
    cfg = get_preset("tiny", {"model.latent_logvar_bias": -6.0}).model_config("metagqn")
    head = build_model("metagqn", cfg).eta_e
    z = cfg.z_channels
    assert torch.all(head.bias[z:] == -6.0) and not torch.all(head.bias[:z] == -6.0)


def _hand_made_episode() -> Episode:
    """Two scenes, two context views each; views are flat colours so every error is known."""
    h = 4
    query = torch.zeros(2, 1, 3, h, h)
    query[0, 0, 0, :2, :] = 1.0  # scene 0: top half red (8 of 16 pixels foreground)
    query[1, 0, 1, 0, 0] = 0.05  # scene 1: one dim pixel, below the foreground threshold
    ctx = torch.zeros(4, 3, h, h)
    ctx[0, 0] = 1.0  # scene 0, far camera: all red
    ctx[1, 2] = 1.0  # scene 0, near camera: all blue
    ctx[2, 1] = 0.5  # scene 1, near camera: all half green
    ctx[3] = 0.0  # scene 1, far camera: black
    cams = torch.zeros(4, 7)
    cams[:, :3] = torch.tensor([[5.0, 0, 0], [0, 0, 1.0], [0, 1.0, 0], [-5.0, 0, 0]])
    qcams = torch.zeros(2, 1, 7)
    qcams[:, 0, :3] = torch.tensor([[0, 0, 2.0], [0, 2.0, 0]])
    return Episode(ctx, cams, torch.tensor([0, 0, 1, 1]), query, qcams)


def test_foreground_mask_marks_whole_pixels_above_threshold() -> None:
    episode = _hand_made_episode()
    mask = foreground_mask(episode.query_images.flatten(0, 1))
    assert mask.shape == (2, 3, 4, 4)
    assert int(mask[0].sum()) == 3 * 8  # 8 red pixels, all three channels each
    assert int(mask[1].sum()) == 0  # 0.05 <= threshold
    assert FOREGROUND_THRESHOLD == 0.1


def test_reference_predictors_on_a_hand_made_episode() -> None:
    episode = _hand_made_episode()
    nearest = nearest_context_prediction(episode)
    assert torch.equal(nearest[0, 0], episode.context_images[1])  # scene 0's near camera (blue)
    assert torch.equal(nearest[1, 0], episode.context_images[2])  # scene 1's near camera (half green)
    res = study_nll(episode.query_images.flatten(0, 1), nearest.flatten(0, 1))
    # Scene 0: 8 red pixels predicted blue (error 1 on R and B), 8 black ones predicted blue (1 on B).
    # Scene 1: every pixel predicted 0.25 off in G (one is 0.2 off).
    sq0 = 8 * 2 + 8 * 1
    sq1 = 15 * 0.25 + 0.45**2
    assert res.mse == pytest.approx((sq0 + sq1) / (2 * 48))
    assert res.fg_mse == pytest.approx(8 * 2 / 24)  # foreground: scene 0's red pixels only
    # Mean frame over "training" scenes that are the two queries: every pixel is their average.
    train = (episode.query_images.permute(0, 1, 3, 4, 2).numpy() * 255).round().astype(np.uint8)
    mean = mean_image_baseline(train, episode)
    assert mean.fg_mse == pytest.approx(0.25 / 3, rel=1e-3)  # red 1 vs 0.5 on R, about 0 on G and B
    both = reference_results(train, episode)
    assert set(both) == {"mean_image", "nearest_context"} and both["nearest_context"].mse == res.mse


def _doc(mse: float, fg: float, status: str = "completed") -> dict:
    return {
        "status": status,
        "baselines": {"mean_image": {"val_mse": 0.02, "val_fg_mse": 0.1}},
        "eval_curve": [
            {"step": 0, "val_nll": 1.0, "val_mse": 0.04, "val_fg_mse": 0.2},
            {"step": 100, "val_nll": 0.5, "val_mse": mse, "val_fg_mse": fg, "z_mean": {"val_mse": mse, "val_fg_mse": fg}},
        ],
    }


@pytest.mark.parametrize(
    ("mse", "fg", "status", "expected"),
    [
        (0.017, 0.085, "completed", True),  # 0.85x on both
        (0.018, 0.090, "completed", True),  # exactly at the margin
        (0.017, 0.095, "completed", False),  # beats the mean frame overall but not on the objects
        (0.019, 0.050, "completed", False),  # the other way round
        (0.010, 0.050, "diverged", False),  # a diverged run never counts
    ],
)
def test_learned_needs_both_ratios_below_the_margin(mse: float, fg: float, status: str, expected: bool) -> None:
    assert learned(_doc(mse, fg, status)) is expected
    ratios = final_ratios(_doc(mse, fg, status))
    assert ratios["mse_ratio"] == pytest.approx(mse / 0.02) and ratios["fg_ratio"] == pytest.approx(fg / 0.1)


def test_mse_ratio_target_is_an_nll_on_the_data() -> None:
    target = MseRatioTarget(0.9)
    constant = 3 * 16 * 16 * 0.5 * math.log(2 * math.pi)
    nll = target.nll(constant, 0.02, 16)
    assert nll == pytest.approx(constant + 0.5 * 768 * 0.9 * 0.02)
    assert target.describe() == "0.9 x the mean-frame MSE"
