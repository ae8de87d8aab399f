"""The study's proposed "meta-learning GQN" (SPEC sections 1 and 3).

r and z merge into one scene latent inferred from the context only: an inference
ConvLSTM reads (z_{l-1}, r) and a posterior head gives q(z_l | D); the generator reads
(v_q, z_l) and paints the canvas. The objective is ``-E_q[log N(x_q | mu, 1)]`` by one
Monte Carlo sample per scene; there is no KL and nothing looks at the query image.
At the paper preset 17,074,179 parameters are used by the objective; with
``include_unused_prior_head`` the module totals the study's 18,713,091.
"""

from __future__ import annotations

import torch
from torch import nn

from gqnbench.config import ModelConfig
from gqnbench.data.episode import Episode
from gqnbench.metrics import gaussian_nll
from gqnbench.models.base import (
    GQNFamilyModel,
    LossOutput,
    as_prediction,
    flatten_queries,
    gaussian_rsample,
    image_mean,
    init_logvar_bias,
)
from gqnbench.models.canvas import CanvasWriter
from gqnbench.models.convlstm import ConvLSTMCell
from gqnbench.models.folding import PointUpsample
from gqnbench.models.layout import in_layout_of, zeros_in_layout


class LatentInferenceCore(nn.Module):
    """q(z_l | z_{l-1}, r): autoregressive over the L latents, context only."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        z, r = cfg.z_channels, cfg.r_channels
        self.lstm = ConvLSTMCell(z + r, cfg.hidden_channels, static=(z, z + r))  # [z_prev | r]
        self.fold = cfg.fold_linear_ops

    def prepare(self, r: torch.Tensor) -> object:
        return self.lstm.prepare(r) if self.fold else r

    def forward(self, prepared: object, z_prev: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]):
        if self.fold:
            return self.lstm(z_prev, state, prepared)
        return self.lstm(torch.cat((z_prev, prepared), dim=1), state)


class QueryGenerationCore(CanvasWriter):
    """p(x_q | v_q, z): reads the upsampled query viewpoint and z_l, adds to the canvas."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg.hidden_channels, cfg.core_size, cfg.canvas_at_core_size)
        s, h, v = cfg.core_size, cfg.hidden_channels, cfg.viewpoint_dim
        self.upsample_v = PointUpsample(v, s)
        self.lstm = ConvLSTMCell(v + cfg.z_channels, h, static=(0, v))  # [v_q | z]
        self.upsample_h = nn.ConvTranspose2d(h, h, 4, stride=4, bias=False)
        self.fold = cfg.fold_linear_ops

    def prepare(self, v: torch.Tensor) -> object:
        return self.lstm.prepare(self.upsample_v(v[:, :, None, None])) if self.fold else v

    def forward(self, prepared: object, z: torch.Tensor, u: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]):
        if self.fold:
            h, c = self.lstm(z, state, prepared)
        else:
            h, c = self.lstm(torch.cat((self.upsample_v(prepared[:, :, None, None]), z), dim=1), state)
        return h, c, self.add_to_canvas(u, h)


class MetaGQN(GQNFamilyModel):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self._build_body(cfg, LatentInferenceCore, QueryGenerationCore)
        h, z = cfg.hidden_channels, cfg.z_channels
        self.eta_e = nn.Conv2d(h, 2 * z, 5, padding=2)
        init_logvar_bias(self.eta_e, cfg.latent_logvar_bias)
        self.eta_g = nn.Conv2d(h, 3, 1)
        # The authors' code builds a prior head that the proposed objective never calls;
        # it is only here so the study's parameter count can be reproduced.
        self.eta_pi = nn.Conv2d(h, 2 * z, 5, padding=2) if cfg.include_unused_prior_head else None

    def module_groups(self) -> dict[str, list[nn.Module]]:
        groups: dict[str, list[nn.Module]] = {
            "representation": [self.representation],
            "inference_core": [self.inference_cores],
            "generation_core": [self.generation_cores],
            "posterior_head": [self.eta_e],
            "image_head": [self.eta_g],
        }
        if self.eta_pi is not None:
            groups["unused_prior_head"] = [self.eta_pi]
        return groups

    def pixel_sigma(self, step: int) -> float:
        return 1.0  # fixed by the study

    def _core_index(self, layer: int) -> int:
        return 0 if self.config.shared_core else layer

    def _represent(self, episode: Episode) -> torch.Tensor:
        """r for each scene of the batch, on the core's grid."""
        cfg = self.config
        r = self.representation(
            episode.context_images, episode.context_viewpoints, episode.context_scene, episode.num_scenes
        )
        if r.shape[-1] != cfg.core_size:  # pooled r: broadcast to the core's grid (no parameters)
            r = r.expand(-1, -1, cfg.core_size, cfg.core_size)
        return r

    def infer_latents(self, episode: Episode, use_mean: bool = False) -> list[torch.Tensor]:
        """z_1..z_L ~ q(z | D) for each scene of the batch: L tensors [B, z, s, s]."""
        return self._latents(self._represent(episode), use_mean)

    def _latents(self, r: torch.Tensor, use_mean: bool = False) -> list[torch.Tensor]:
        cfg = self.config
        batch = r.shape[0]
        state = self.inference_cores[0].lstm.initial_state(r, batch, cfg.core_size)
        z = zeros_in_layout(r, batch, cfg.z_channels, cfg.core_size, cfg.core_size)
        prepared = [core.prepare(r) for core in self.inference_cores]
        latents = []
        for layer in range(cfg.num_layers):
            i = self._core_index(layer)
            state = self.inference_cores[i](prepared[i], z, state)
            mu, logvar = self.eta_e(state[0]).chunk(2, dim=1)
            z = mu if use_mean else gaussian_rsample(mu, logvar)
            latents.append(z)
        return latents

    def generate(self, latents: list[torch.Tensor], query_viewpoints: torch.Tensor) -> torch.Tensor:
        """The likelihood's mean (unclamped with the raw head) for [B, K, 7] query viewpoints given per-scene latents -> [B*K, 3, H, W]."""
        cfg = self.config
        k = query_viewpoints.shape[1]
        v = query_viewpoints.flatten(0, 1)
        batch = v.shape[0]
        prepared = [core.prepare(v) for core in self.generation_cores]
        state = self.generation_cores[0].lstm.initial_state(latents[0], batch, cfg.core_size)
        h, c = state
        u = self.generation_cores[0].initial_canvas(latents[0], batch)
        for layer in range(cfg.num_layers):
            i = self._core_index(layer)
            # One z per scene, shared by its queries (in z's own layout: a copy comes out NCHW).
            z = in_layout_of(latents[layer].repeat_interleave(k, dim=0), latents[layer])
            h, c, u = self.generation_cores[i](prepared[i], z, u, (h, c))
        return image_mean(self.eta_g(self.generation_cores[-1].render_canvas(u)), cfg.output_head)

    def loss_inputs(self, episode: Episode) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Each scene's r, the [B, K, 7] query viewpoints and the flattened query images: ``(r, v, x)``."""
        x, _ = flatten_queries(episode)
        return self._represent(episode), episode.query_viewpoints, x

    def core_loss(
        self, r: torch.Tensor, v: torch.Tensor, x: torch.Tensor, *, sigma: float | torch.Tensor
    ) -> LossOutput:
        """``-log N(x_q | mean, sigma)`` with one sample of the latents per scene (sigma is fixed at 1 by the study)."""
        mean_image = self.generate(self._latents(r), v)
        reconstruction = gaussian_nll(x, mean_image, sigma)
        return LossOutput(
            loss=reconstruction.mean(),
            reconstruction=reconstruction.mean(),
            kl=reconstruction.new_zeros(()),
            mean_image=mean_image,
            sigma=sigma,
        )

    def predict(self, episode: Episode, use_mean: bool = False) -> torch.Tensor:
        """Query images with z sampled from q(z | D) (or its mean)."""
        latents = self.infer_latents(episode, use_mean=use_mean)
        return as_prediction(self.generate(latents, episode.query_viewpoints)).view_as(episode.query_images)
