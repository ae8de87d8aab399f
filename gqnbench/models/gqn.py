"""The reference GQN (Eslami et al. 2018) in the layout of the study's authors (SPEC section 2).

Three learned distributions trained at once on the ELBO: the representation r, the
prior pi(z | h_g) read from the generator state, and the posterior q(z | x_q, v_q, r)
from the inference core. At the paper configuration it has exactly 49,469,343
parameters (shared cores, z = 3); 571,619,279 with a separate core per step.
By default the cores' linear operations are regrouped so the step-invariant work runs
once per forward (``ModelConfig.fold_linear_ops``; gqnbench.models.folding).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from gqnbench.config import ModelConfig, linear_anneal
from gqnbench.data.episode import Episode
from gqnbench.metrics import gaussian_nll
from gqnbench.models.base import (
    GQNFamilyModel,
    LossOutput,
    as_prediction,
    flatten_queries,
    gaussian_kl,
    gaussian_rsample,
    image_mean,
    init_logvar_bias,
)
from gqnbench.models.canvas import CanvasWriter
from gqnbench.models.convlstm import ConvLSTMCell, PreparedGates
from gqnbench.models.folding import CallTimeWeightConv, ComposeBlockConvs, PointUpsample, in_autocast_dtype


class FoldedInputs(NamedTuple):
    """What a folded inference core computes once per forward."""

    gates: PreparedGates  # the step-invariant inputs' share of the gates
    canvas_weight: torch.Tensor | None  # downsample_u after upsample_h as a 1x1 conv (canvas at core size)


class InferenceCore(nn.Module):
    """Posterior core: reads x_q, v_q, r (step-invariant), the generator state h_g and the canvas u."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        s, h, r, v = cfg.core_size, cfg.hidden_channels, cfg.r_channels, cfg.viewpoint_dim
        self.downsample_x = nn.Conv2d(3, 3, 4, stride=4, bias=False)
        self.upsample_v = PointUpsample(v, s)
        # Kept (and counted) for the tower representation too, as in the authors' code,
        # where r already has the core's size and this layer is skipped.
        self.upsample_r = PointUpsample(r, s)
        self.downsample_u = nn.Conv2d(h, h, 4, stride=4, bias=False)
        # Input channels: [x_q, v_q, r | h_g, u]; the first 3 + v + r never change.
        self.lstm = ConvLSTMCell(3 + v + r + h + h, h, static=(0, 3 + v + r))
        self.compose_canvas = ComposeBlockConvs()
        self.canvas_conv = CallTimeWeightConv()
        self.pooled = cfg.representation == "pool"
        self.fold = cfg.fold_linear_ops

    def _static_inputs(self, x: torch.Tensor, v: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        r_up = self.upsample_r(r) if self.pooled else r
        return torch.cat((self.downsample_x(x), self.upsample_v(v[:, :, None, None]), r_up), dim=1)

    def prepare(
        self, x: torch.Tensor, v: torch.Tensor, r: torch.Tensor, canvas_upsample: nn.ConvTranspose2d | None
    ) -> object:
        """Once per forward. ``canvas_upsample``: the generator's upsample_h when the canvas
        is kept at core size (then the canvas this core reads is the sum of h_g)."""
        if not self.fold:
            return x, v, r
        canvas_weight = None
        if canvas_upsample is not None:
            composed = self.compose_canvas(self.downsample_u.weight, canvas_upsample.weight)
            canvas_weight = in_autocast_dtype(composed)
        return FoldedInputs(self.lstm.prepare(self._static_inputs(x, v, r)), canvas_weight)

    def forward(
        self, prepared: object, h_g: torch.Tensor, canvas: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]
    ):
        if not self.fold:
            dynamic = torch.cat((h_g, self.downsample_u(canvas)), dim=1)
            return self.lstm(torch.cat((self._static_inputs(*prepared), dynamic), dim=1), state)
        if prepared.canvas_weight is None:
            canvas_in = self.downsample_u(canvas)
        else:
            canvas_in = self.canvas_conv(canvas, prepared.canvas_weight)
        return self.lstm(torch.cat((h_g, canvas_in), dim=1), state, prepared.gates)


class GenerationCore(CanvasWriter):
    """Generator core: reads v_q, r (step-invariant) and z; adds to the canvas u."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg.hidden_channels, cfg.core_size, cfg.canvas_at_core_size)
        s, h, r, v, z = cfg.core_size, cfg.hidden_channels, cfg.r_channels, cfg.viewpoint_dim, cfg.z_channels
        self.upsample_v = PointUpsample(v, s)
        self.upsample_r = PointUpsample(r, s)
        self.lstm = ConvLSTMCell(v + r + z, h, static=(0, v + r))  # [v_q, r | z]
        self.upsample_h = nn.ConvTranspose2d(h, h, 4, stride=4, bias=False)
        self.pooled = cfg.representation == "pool"
        self.fold = cfg.fold_linear_ops

    def _static_inputs(self, v: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        r_up = self.upsample_r(r) if self.pooled else r
        return torch.cat((self.upsample_v(v[:, :, None, None]), r_up), dim=1)

    def prepare(self, v: torch.Tensor, r: torch.Tensor) -> object:
        return self.lstm.prepare(self._static_inputs(v, r)) if self.fold else (v, r)

    def forward(self, prepared: object, z: torch.Tensor, u: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]):
        if self.fold:
            h, c = self.lstm(z, state, prepared)
        else:
            h, c = self.lstm(torch.cat((self._static_inputs(*prepared), z), dim=1), state)
        return h, c, self.add_to_canvas(u, h)


class GQN(GQNFamilyModel):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self._build_body(cfg, InferenceCore, GenerationCore)
        h, z = cfg.hidden_channels, cfg.z_channels
        self.eta_pi = nn.Conv2d(h, 2 * z, 5, padding=2)  # prior head, reads h_g
        self.eta_e = nn.Conv2d(h, 2 * z, 5, padding=2)  # posterior head, reads h_e
        self.eta_g = nn.Conv2d(h, 3, 1)  # image head, reads the canvas u
        for head in (self.eta_pi, self.eta_e):
            init_logvar_bias(head, cfg.latent_logvar_bias)

    def module_groups(self) -> dict[str, list[nn.Module]]:
        return {
            "representation": [self.representation],
            "inference_core": [self.inference_cores],
            "generation_core": [self.generation_cores],
            "prior_head": [self.eta_pi],
            "posterior_head": [self.eta_e],
            "image_head": [self.eta_g],
        }

    def pixel_sigma(self, step: int) -> float:
        c = self.config
        return linear_anneal(step, c.sigma_start, c.sigma_end, c.sigma_anneal_steps)

    def _core_index(self, layer: int) -> int:
        return 0 if self.config.shared_core else layer

    def _represent(self, episode: Episode) -> torch.Tensor:
        r = self.representation(
            episode.context_images, episode.context_viewpoints, episode.context_scene, episode.num_scenes
        )
        # One r per scene, shared by its K queries.
        return r.repeat_interleave(episode.num_queries, dim=0)

    def _initial(self, reference: torch.Tensor, batch: int):
        s = self.config.core_size
        state_g = self.generation_cores[0].lstm.initial_state(reference, batch, s)
        state_e = self.inference_cores[0].lstm.initial_state(reference, batch, s)
        return state_g, state_e, self.generation_cores[0].initial_canvas(reference, batch)

    def _image(self, u: torch.Tensor) -> torch.Tensor:
        return image_mean(self.eta_g(self.generation_cores[-1].render_canvas(u)), self.config.output_head)

    def loss_inputs(self, episode: Episode) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The flattened query images and viewpoints and each query's r: ``(x, v, r)``."""
        x, v = flatten_queries(episode)
        return x, v, self._represent(episode)

    def _posterior_core(self, x: torch.Tensor, v: torch.Tensor, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Run L steps with z from the posterior: (mean image, KL per image)."""
        batch = x.shape[0]
        canvas_up = self.generation_cores[0].upsample_h if self.config.canvas_at_core_size else None
        static_e = [core.prepare(x, v, r, canvas_up) for core in self.inference_cores]
        static_g = [core.prepare(v, r) for core in self.generation_cores]
        (h_g, c_g), state_e, u = self._initial(x, batch)
        kl = x.new_zeros(batch)
        for layer in range(self.config.num_layers):
            i = self._core_index(layer)
            mu_pi, logvar_pi = self.eta_pi(h_g).chunk(2, dim=1)
            state_e = self.inference_cores[i](static_e[i], h_g, u, state_e)
            mu_q, logvar_q = self.eta_e(state_e[0]).chunk(2, dim=1)
            z = gaussian_rsample(mu_q, logvar_q)
            h_g, c_g, u = self.generation_cores[i](static_g[i], z, u, (h_g, c_g))
            kl = kl + gaussian_kl(mu_q, logvar_q, mu_pi, logvar_pi)
        return self._image(u), kl

    def core_loss(
        self, x: torch.Tensor, v: torch.Tensor, r: torch.Tensor, *, sigma: float | torch.Tensor
    ) -> LossOutput:
        """The ELBO's terms: reconstruction at pixel sigma ``sigma`` and the KL summed over the L latents."""
        mean_image, kl = self._posterior_core(x, v, r)
        reconstruction = gaussian_nll(x, mean_image, sigma)
        return LossOutput(
            loss=(reconstruction + kl).mean(),
            reconstruction=reconstruction.mean(),
            kl=kl.mean(),
            mean_image=mean_image,
            sigma=sigma,
        )

    def reconstruct(self, episode: Episode) -> torch.Tensor:
        """Posterior reconstruction of the queries (z sees x_q): a diagnostic, not a prediction."""
        mean_image, _ = self._posterior_core(*self.loss_inputs(episode))
        return as_prediction(mean_image).view_as(episode.query_images)

    def predict(self, episode: Episode, use_mean: bool = False) -> torch.Tensor:
        """Query images with z from the prior pi(z | h_g) (sampled, or its mean)."""
        v = episode.query_viewpoints.flatten(0, 1)
        r = self._represent(episode)
        batch = v.shape[0]
        static_g = [core.prepare(v, r) for core in self.generation_cores]
        (h_g, c_g), _, u = self._initial(episode.query_images.flatten(0, 1), batch)
        for layer in range(self.config.num_layers):
            i = self._core_index(layer)
            mu_pi, logvar_pi = self.eta_pi(h_g).chunk(2, dim=1)
            z = mu_pi if use_mean else gaussian_rsample(mu_pi, logvar_pi)
            h_g, c_g, u = self.generation_cores[i](static_g[i], z, u, (h_g, c_g))
        return as_prediction(self._image(u)).view_as(episode.query_images)
