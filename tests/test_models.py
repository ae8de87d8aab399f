"""Both models: exact paper parameter counts, shapes, gradients, determinism, ConvLSTM fusion."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from gqnbench.data.episode import Episode
from gqnbench.models import ModelConfig, build_model, list_models
from gqnbench.models.convlstm import ConvLSTMCell
from gqnbench.models.representation import Representation
from gqnbench.presets import get_preset


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def meta_count(name: str, cfg: ModelConfig) -> int:
    with torch.device("meta"):
        return n_params(build_model(name, cfg))


# ---- exact parameter counts (SPEC sections 2-3) -------------------------------------------


@pytest.mark.parametrize("representation", ["pool", "tower"])
def test_gqn_paper_count_on_cpu(representation):
    cfg = dataclasses.replace(get_preset("paper").model_config("gqn"), representation=representation)
    model = build_model("gqn", cfg)  # real CPU weights, never run
    assert n_params(model) == 49_469_343


def test_gqn_paper_module_counts():
    model = build_model("gqn", get_preset("paper").model_config("gqn"))
    assert n_params(model.representation) == 1_962_368
    assert n_params(model.inference_cores) == 25_372_560
    assert n_params(model.generation_cores) == 22_095_616
    assert n_params(model.eta_pi) == n_params(model.eta_e) == 19_206
    assert n_params(model.eta_g) == 387


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"shared_core": False}, 571_619_279),
        ({"z_channels": 32}, 50_211_859),
        ({"z_channels": 128}, 52_669_843),
    ],
)
def test_gqn_variant_counts(overrides, expected):
    cfg = dataclasses.replace(get_preset("paper").model_config("gqn"), **overrides)
    assert meta_count("gqn", cfg) == expected


def test_metagqn_paper_counts_both_ways():
    cfg = get_preset("paper").model_config("metagqn")
    used = build_model("metagqn", cfg)
    assert n_params(used) == 17_074_179
    study = build_model("metagqn", dataclasses.replace(cfg, include_unused_prior_head=True))
    assert n_params(study) == 18_713_091
    assert n_params(study) - n_params(used) == n_params(study.eta_pi) == 1_638_912
    assert n_params(used.inference_cores) == 8_192_512
    assert n_params(used.generation_cores[0].lstm) == 5_005_312
    assert n_params(used.eta_e) == 1_638_912


@pytest.mark.parametrize(("z", "expected"), [(3, 8_996_879), (32, 10_110_595), (128, 13_797_379)])
def test_metagqn_authors_counts_at_other_z(z, expected):
    cfg = dataclasses.replace(get_preset("paper").model_config("metagqn"), z_channels=z, include_unused_prior_head=True)
    assert meta_count("metagqn", cfg) == expected


def test_paper_preset_is_the_study_configuration():
    paper = get_preset("paper")
    g, m = paper.model_config("gqn"), paper.model_config("metagqn")
    assert (g.image_size, g.num_layers, g.hidden_channels, g.r_channels, g.z_channels) == (64, 12, 128, 256, 3)
    assert g.shared_core and m.shared_core and m.representation == "tower" and m.z_channels == 256
    assert (g.sigma_start, g.sigma_end, g.sigma_anneal_steps) == (2.0, 0.7, 200_000)
    assert m.sigma_start == m.sigma_end == 1.0
    assert paper.train.batch_size == 36 and paper.train.lr_start == 5e-4 and paper.train.lr_end == 5e-5


# ---- shapes and objectives ------------------------------------------------------------------


def _cfg(name: str, **kw) -> ModelConfig:
    return dataclasses.replace(get_preset("tiny").model_config(name), **kw)


@pytest.mark.parametrize("name", ["gqn", "metagqn"])
@pytest.mark.parametrize(("image_size", "queries", "context"), [(16, 1, 3), (24, 2, 1), (32, 3, 5)])
def test_output_shapes(name, image_size, queries, context):
    model = build_model(name, _cfg(name, image_size=image_size))
    ep = Episode.random(2, image_size, num_context=context, num_queries=queries)
    pred = model.predict(ep)
    assert pred.shape == (2, queries, 3, image_size, image_size)
    assert 0.0 <= float(pred.detach().min()) and float(pred.detach().max()) <= 1.0
    out = model.loss(ep, step=0)
    assert out.loss.shape == () and torch.isfinite(out.loss)
    assert out.mean_image.shape == (2 * queries, 3, image_size, image_size)
    if name == "gqn":
        assert model.reconstruct(ep).shape == pred.shape


def test_gqn_loss_is_reconstruction_plus_kl_and_kl_nonnegative():
    model = build_model("gqn", _cfg("gqn"))
    out = model.loss(Episode.random(4, 16), step=0)
    assert float(out.kl) >= 0.0
    torch.testing.assert_close(out.loss, out.reconstruction + out.kl)
    assert out.sigma == 2.0


def test_metagqn_objective_has_no_kl_and_unit_sigma():
    model = build_model("metagqn", _cfg("metagqn"))
    ep = Episode.random(4, 16)
    out = model.loss(ep, step=10_000)
    assert float(out.kl) == 0.0 and out.sigma == 1.0
    # sigma = 1: loss = 0.5 * SSE + D * 0.5 * ln(2 pi), per image
    x = ep.query_images.flatten(0, 1)
    sse = (x - out.mean_image).pow(2).flatten(1).sum(1)
    expected = (0.5 * sse + x[0].numel() * 0.9189385332046727).mean()
    torch.testing.assert_close(out.loss, expected, rtol=1e-6, atol=1e-3)


def test_gqn_sigma_schedule():
    model = build_model("gqn", ModelConfig())
    assert model.pixel_sigma(0) == 2.0
    assert model.pixel_sigma(100_000) == pytest.approx(1.35)
    assert model.pixel_sigma(200_000) == pytest.approx(0.7)
    assert model.pixel_sigma(10**7) == pytest.approx(0.7)


def _grads_after_one_step(model: torch.nn.Module, ep: Episode) -> dict[str, torch.Tensor | None]:
    model.zero_grad(set_to_none=True)
    model(ep).backward()
    return {n: p.grad for n, p in model.named_parameters()}


@pytest.mark.parametrize("name", ["gqn", "metagqn"])
def test_every_used_parameter_gets_a_nonzero_gradient(name):
    model = build_model(name, _cfg(name))
    grads = _grads_after_one_step(model, Episode.random(3, 16))
    for pname, g in grads.items():
        assert g is not None, f"{pname} got no gradient"
        assert torch.isfinite(g).all(), pname
        assert float(g.abs().sum()) > 0.0, f"{pname} gradient is all zero"


def test_unused_prior_head_gets_no_gradient():
    model = build_model("metagqn", _cfg("metagqn", include_unused_prior_head=True))
    grads = _grads_after_one_step(model, Episode.random(3, 16))
    unused = {n for n in grads if n.startswith("eta_pi.")}
    assert unused == {"eta_pi.weight", "eta_pi.bias"}
    assert all(grads[n] is None for n in unused)
    assert all(grads[n] is not None for n in grads if n not in unused)


def test_gqn_tower_keeps_but_skips_r_upsampling():
    # The authors' layout keeps upsample_r for the tower representation, where r already has the core size.
    model = build_model("gqn", _cfg("gqn", representation="tower"))
    grads = _grads_after_one_step(model, Episode.random(2, 16))
    skipped = {n for n, g in grads.items() if g is None}
    assert skipped == {"inference_cores.0.upsample_r.weight", "generation_cores.0.upsample_r.weight"}


def test_gqn_per_step_cores_all_trained():
    model = build_model("gqn", _cfg("gqn", shared_core=False, num_layers=3))
    assert len(model.inference_cores) == 3
    grads = _grads_after_one_step(model, Episode.random(2, 16))
    assert all(g is not None for g in grads.values())
    # The first step's core reads the canvas while it is still all zeros, so only its
    # canvas downsampling gets an exactly-zero gradient; every other weight learns.
    zero = {n for n, g in grads.items() if float(g.abs().sum()) == 0.0}
    assert zero == {"inference_cores.0.downsample_u.weight"}


@pytest.mark.parametrize("name", ["gqn", "metagqn"])
def test_determinism_under_fixed_seed(name):
    def run() -> tuple[torch.Tensor, torch.Tensor]:
        torch.manual_seed(123)
        model = build_model(name, _cfg(name))
        ep = Episode.random(2, 16, generator=torch.Generator().manual_seed(7))
        torch.manual_seed(5)
        return model(ep).detach(), model.predict(ep)

    (l1, p1), (l2, p2) = run(), run()
    assert torch.equal(l1, l2) and torch.equal(p1, p2)
    torch.manual_seed(124)
    first = build_model(name, _cfg(name)).state_dict()
    torch.manual_seed(124)
    second = build_model(name, _cfg(name)).state_dict()
    # Initialisation depends on torch's seed alone (no other RNG, no call-order effects).
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


@pytest.mark.parametrize("name", ["gqn", "metagqn"])
def test_predict_with_mean_latent_is_deterministic(name):
    model = build_model(name, _cfg(name))
    ep = Episode.random(2, 16)
    torch.manual_seed(1)
    a = model.predict(ep, use_mean=True)
    torch.manual_seed(2)
    b = model.predict(ep, use_mean=True)
    torch.manual_seed(2)
    c = model.predict(ep, use_mean=False)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_metagqn_prediction_ignores_the_query_image():
    model = build_model("metagqn", _cfg("metagqn"))
    ep = Episode.random(2, 16)
    other = dataclasses.replace(ep, query_images=torch.rand_like(ep.query_images))
    torch.manual_seed(3)
    a = model.predict(ep)
    torch.manual_seed(3)
    b = model.predict(other)
    assert torch.equal(a, b)


def test_registry_errors_and_listing():
    assert list_models() == ["gqn", "metagqn"]
    with pytest.raises(KeyError, match="unknown model 'nope'"):
        build_model("nope")
    with pytest.raises(ValueError, match="multiple of 4"):
        ModelConfig(image_size=30)


# ---- building blocks -------------------------------------------------------------------------


def test_fused_convlstm_matches_four_separate_convs():
    torch.manual_seed(0)
    cin, hid = 6, 5
    cell = ConvLSTMCell(cin, hid).double()
    x = torch.randn(3, cin, 8, 8, dtype=torch.float64)
    h0 = torch.randn(3, hid, 8, 8, dtype=torch.float64)
    c0 = torch.randn(3, hid, 8, 8, dtype=torch.float64)
    h, c = cell(x, (h0, c0))
    # Reference: the four gates as four separate convolutions, each with its slice of the weights.
    w, b = cell.gates.weight, cell.gates.bias
    inp = torch.cat((h0, x), dim=1)
    f, i, o, g = (F.conv2d(inp, w[k * hid : (k + 1) * hid], b[k * hid : (k + 1) * hid], padding=2) for k in range(4))
    c_ref = torch.sigmoid(f) * c0 + torch.sigmoid(i) * torch.tanh(g)
    h_ref = torch.sigmoid(o) * torch.tanh(c_ref)
    assert (h - h_ref).abs().max() < 1e-6 and (c - c_ref).abs().max() < 1e-6
    # Same parameter count as four separate (in+hidden -> hidden) 5x5 convs with bias.
    assert n_params(cell) == 4 * ((cin + hid) * hid * 25 + hid)


def test_convlstm_static_split_matches_the_fused_conv():
    torch.manual_seed(0)
    cell = ConvLSTMCell(9, 5, static=(2, 6)).double()
    x = torch.randn(3, 9, 8, 8, dtype=torch.float64)
    state = (torch.randn(3, 5, 8, 8, dtype=torch.float64), torch.randn(3, 5, 8, 8, dtype=torch.float64))
    prepared = cell.prepare(x[:, 2:6])
    dynamic = torch.cat((x[:, :2], x[:, 6:]), dim=1)
    for got, want in zip(cell(dynamic, state, prepared), cell(x, state)):
        assert (got - want).abs().max() < 1e-12
    with pytest.raises(ValueError, match="static channel range"):
        ConvLSTMCell(4, 5, static=(2, 6))


def _double(ep: Episode) -> Episode:
    return dataclasses.replace(
        ep,
        context_images=ep.context_images.double(),
        context_viewpoints=ep.context_viewpoints.double(),
        query_images=ep.query_images.double(),
        query_viewpoints=ep.query_viewpoints.double(),
    )


@pytest.mark.parametrize("name", ["gqn", "metagqn"])
@pytest.mark.parametrize("overrides", [{}, {"shared_core": False, "num_layers": 3}, {"representation": "tower"}])
def test_folded_linear_ops_compute_the_same_function(name, overrides):
    # fold_linear_ops regroups linear work (step-invariant inputs once, canvas at core size);
    # in fp64 loss, every gradient and the prediction must equal the step-by-step formulation.
    cfg = _cfg(name, **overrides)
    torch.manual_seed(0)
    folded = build_model(name, cfg).double()
    torch.manual_seed(0)
    unfolded = build_model(name, dataclasses.replace(cfg, fold_linear_ops=False)).double()
    assert n_params(folded) == n_params(unfolded)
    ep = _double(Episode.random(2, 16, num_queries=2))
    losses = []
    for model in (folded, unfolded):
        torch.manual_seed(1)
        loss = model(ep)
        loss.backward()
        losses.append(loss.detach())
    assert abs(float(losses[0] - losses[1])) < 1e-9 * abs(float(losses[1]))
    for (pname, a), b in zip(folded.named_parameters(), unfolded.parameters()):
        if a.grad is None:
            assert b.grad is None, pname
            continue
        scale = max(float(b.grad.abs().max()), 1e-12)
        assert float((a.grad - b.grad).abs().max()) < 1e-9 * scale, pname
    torch.manual_seed(2)
    pa = folded.predict(ep)
    torch.manual_seed(2)
    assert (pa - unfolded.predict(ep)).abs().max() < 1e-12


def test_convlstm_gates_run_in_bf16_and_the_state_stays_fp32_under_autocast():
    cell = ConvLSTMCell(4, 8)
    x = torch.randn(2, 4, 8, 8)
    state = cell.initial_state(x, 2, 8)
    gate_dtypes = []
    cell.gates.register_forward_hook(lambda mod, inp, out: gate_dtypes.append(out.dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for _ in range(3):
            state = cell(x, state)
            # The cell state accumulates over the L steps: it must not be rounded to bf16 each step.
            assert state[0].dtype == torch.float32 and state[1].dtype == torch.float32
    assert gate_dtypes == [torch.bfloat16] * 3  # the convolution, the cost, runs in bf16


def test_representation_sums_over_variable_context_counts():
    torch.manual_seed(0)
    rep = Representation(16, 7, pool=True)
    images, views = torch.rand(5, 3, 16, 16), torch.randn(5, 7)
    scene = torch.tensor([0, 0, 0, 1, 1])  # scene 0 has 3 views, scene 1 has 2
    r = rep(images, views, scene, num_scenes=2)
    per_view = rep.encode(images, views)
    torch.testing.assert_close(r[0], per_view[:3].sum(0))
    torch.testing.assert_close(r[1], per_view[3:].sum(0))
    assert r.shape == (2, 16, 1, 1)
    assert Representation(16, 7, pool=False)(images, views, scene, 2).shape == (2, 16, 4, 4)
