"""The reference GQN (Eslami et al. 2018) in the layout of the study's authors (SPEC section 2).

Three learned distributions trained at once on the ELBO: the representation r, the
prior pi(z | h_g) read from the generator state, and the posterior q(z | x_q, v_q, r)
from the inference core. At the paper configuration it has exactly 49,469,343
parameters (shared cores, z = 3); 571,619,279 with a separate core per step.
"""

from __future__ import annotations

import torch
from torch import nn

from gqnbench.data.episode import Episode
from gqnbench.metrics import gaussian_nll
from gqnbench.models.base import (
    GQNFamilyModel,
    LossOutput,
    flatten_queries,
    gaussian_kl,
    gaussian_rsample,
)
from gqnbench.models.config import ModelConfig, linear_anneal
from gqnbench.models.convlstm import ConvLSTMCell
from gqnbench.models.representation import Representation


class InferenceCore(nn.Module):
    """Posterior core: reads x_q, v_q, r, the generator state h_g and the canvas u."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        s, h, r, v = cfg.core_size, cfg.hidden_channels, cfg.r_channels, cfg.viewpoint_dim
        self.downsample_x = nn.Conv2d(3, 3, 4, stride=4, bias=False)
        self.upsample_v = nn.ConvTranspose2d(v, v, s, stride=s, bias=False)
        # Kept (and counted) for the tower representation too, as in the authors' code,
        # where r already has the core's size and this layer is skipped.
        self.upsample_r = nn.ConvTranspose2d(r, r, s, stride=s, bias=False)
        self.downsample_u = nn.Conv2d(h, h, 4, stride=4, bias=False)
        self.lstm = ConvLSTMCell(3 + v + r + h + h, h)
        self.pooled = cfg.representation == "pool"

    def prepare(self, x: torch.Tensor, v: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """The step-independent part of the input, computed once per forward."""
        r_up = self.upsample_r(r) if self.pooled else r
        return torch.cat((self.downsample_x(x), self.upsample_v(v[:, :, None, None]), r_up), dim=1)

    def forward(
        self, static: torch.Tensor, h_g: torch.Tensor, u: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]
    ):
        return self.lstm(torch.cat((static, h_g, self.downsample_u(u)), dim=1), state)


class GenerationCore(nn.Module):
    """Generator core: reads v_q, r and z; writes the canvas u at full resolution."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        s, h, r, v, z = cfg.core_size, cfg.hidden_channels, cfg.r_channels, cfg.viewpoint_dim, cfg.z_channels
        self.upsample_v = nn.ConvTranspose2d(v, v, s, stride=s, bias=False)
        self.upsample_r = nn.ConvTranspose2d(r, r, s, stride=s, bias=False)
        self.lstm = ConvLSTMCell(v + r + z, h)
        self.upsample_h = nn.ConvTranspose2d(h, h, 4, stride=4, bias=False)
        self.pooled = cfg.representation == "pool"

    def prepare(self, v: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        r_up = self.upsample_r(r) if self.pooled else r
        return torch.cat((self.upsample_v(v[:, :, None, None]), r_up), dim=1)

    def forward(self, static: torch.Tensor, z: torch.Tensor, u: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]):
        h, c = self.lstm(torch.cat((static, z), dim=1), state)
        return h, c, u + self.upsample_h(h)


class GQN(GQNFamilyModel):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.config = cfg
        h, z = cfg.hidden_channels, cfg.z_channels
        n_cores = 1 if cfg.shared_core else cfg.num_layers
        self.representation = Representation(cfg.r_channels, cfg.viewpoint_dim, pool=cfg.representation == "pool")
        self.inference_cores = nn.ModuleList(InferenceCore(cfg) for _ in range(n_cores))
        self.generation_cores = nn.ModuleList(GenerationCore(cfg) for _ in range(n_cores))
        self.eta_pi = nn.Conv2d(h, 2 * z, 5, padding=2)  # prior head, reads h_g
        self.eta_e = nn.Conv2d(h, 2 * z, 5, padding=2)  # posterior head, reads h_e
        self.eta_g = nn.Conv2d(h, 3, 1)  # image head, reads the canvas u

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
        s, hc = self.config.core_size, self.config.hidden_channels
        state_g = self.generation_cores[0].lstm.initial_state(reference, batch, s)
        state_e = self.inference_cores[0].lstm.initial_state(reference, batch, s)
        u = reference.new_zeros(batch, hc, self.config.image_size, self.config.image_size)
        return state_g, state_e, u

    def _posterior_pass(self, episode: Episode) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Run L steps with z from the posterior: (mean image, KL per image, target images)."""
        x, v = flatten_queries(episode)
        r = self._represent(episode)
        batch = x.shape[0]
        static_e = [core.prepare(x, v, r) for core in self.inference_cores]
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
        return torch.sigmoid(self.eta_g(u)), kl, x

    def loss(self, episode: Episode, step: int = 0) -> LossOutput:
        mean_image, kl, x = self._posterior_pass(episode)
        sigma = self.pixel_sigma(step)
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
        mean_image, _, _ = self._posterior_pass(episode)
        return mean_image.view_as(episode.query_images)

    def predict(self, episode: Episode, use_mean: bool = False) -> torch.Tensor:
        """Query images with z from the prior pi(z | h_g) (sampled, or its mean)."""
        v = episode.query_viewpoints.flatten(0, 1)
        r = self._represent(episode)
        batch = v.shape[0]
        static_g = [core.prepare(v, r) for core in self.generation_cores]
        (h_g, c_g), _, u = self._initial(episode.query_images, batch)
        for layer in range(self.config.num_layers):
            i = self._core_index(layer)
            mu_pi, logvar_pi = self.eta_pi(h_g).chunk(2, dim=1)
            z = mu_pi if use_mean else gaussian_rsample(mu_pi, logvar_pi)
            h_g, c_g, u = self.generation_cores[i](static_g[i], z, u, (h_g, c_g))
        return torch.sigmoid(self.eta_g(u)).view_as(episode.query_images)
