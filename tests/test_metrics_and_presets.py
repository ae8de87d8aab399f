"""The study's NLL metric against its closed form; presets and overrides."""

from __future__ import annotations

import math

import pytest
import torch

from gqnbench.config import ConfigError
from gqnbench.judging import nll_constant
from gqnbench.metrics import gaussian_nll, study_nll
from gqnbench.presets import get_preset, list_presets


def test_nll_constant_matches_the_study():
    assert nll_constant(64 * 64 * 3) == pytest.approx(12288 * 0.5 * math.log(2 * math.pi))
    assert nll_constant(64 * 64 * 3) == pytest.approx(11_291.9, abs=0.05)


def test_study_numbers_convert_to_the_stated_mse():
    # 1.1439e4 and 1.1353e4 nats at 64x64x3 are per-pixel MSEs of 0.0239 and 0.0099 (SPEC section 1).
    const = nll_constant(12288)
    assert (11_439 - const) * 2 / 12288 == pytest.approx(0.0239, abs=1e-4)
    assert (11_353 - const) * 2 / 12288 == pytest.approx(0.0099, abs=1e-4)


def test_study_nll_closed_form():
    torch.manual_seed(0)
    target = torch.rand(5, 3, 8, 8)
    pred = torch.rand(5, 3, 8, 8)
    res = study_nll(target, pred)
    d = 3 * 8 * 8
    sse = ((target.double() - pred.double()) ** 2).flatten(1).sum(1)
    expected = float((0.5 * sse).mean()) + d * 0.5 * math.log(2 * math.pi)
    assert res.nll == pytest.approx(expected, rel=1e-12)
    assert res.mse == pytest.approx(float(sse.sum() / (5 * d)), rel=1e-12)
    assert res.constant == pytest.approx(d * 0.5 * math.log(2 * math.pi))
    assert res.nll == pytest.approx(res.constant + 0.5 * d * res.mse, rel=1e-12)
    assert res.num_images == 5
    perfect = study_nll(target, target)
    assert perfect.mse == 0.0 and perfect.nll == pytest.approx(perfect.constant)


def test_gaussian_nll_against_torch_distributions():
    x, mu = torch.rand(2, 3, 4, 4, dtype=torch.float64), torch.rand(2, 3, 4, 4, dtype=torch.float64)
    for sigma in (0.7, 1.0, 2.0):
        ref = -torch.distributions.Normal(mu, sigma).log_prob(x).flatten(1).sum(1)
        torch.testing.assert_close(gaussian_nll(x, mu, sigma), ref)


def test_study_nll_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="shape"):
        study_nll(torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 4, 5))


def test_presets_and_overrides():
    assert list_presets() == ["cpu", "paper", "paper-short", "tiny"]
    p = get_preset(
        "cpu",
        {
            "model.z_channels": "32",
            "metagqn.hidden_channels": 16,
            "train.batch_size": "8",
            "train.grad_clip": "none",
            "data.image_size": 32,
        },
    )
    assert p.model_config("gqn").z_channels == 32 and p.model_config("metagqn").z_channels == 32
    assert p.model_config("metagqn").hidden_channels == 16 and p.model_config("gqn").hidden_channels == 32
    assert p.train.batch_size == 8 and p.train.grad_clip is None
    assert get_preset("cpu").train.batch_size == 32  # the registry itself is untouched
    assert get_preset("tiny", {"train.compile": "true"}).train.compile is True
    with pytest.raises(KeyError, match="unknown preset 'huge'"):
        get_preset("huge")
    with pytest.raises(ConfigError, match="unknown field"):
        get_preset("cpu", {"model.zz": 3})
    with pytest.raises(ConfigError, match="cannot read"):
        get_preset("cpu", {"train.batch_size": "many"})
    with pytest.raises(ConfigError, match="section"):
        get_preset("cpu", {"batch_size": 3})
