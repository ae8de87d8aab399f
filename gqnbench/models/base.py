"""What every registered model offers the harnesses and the training loop.

A model is an ``nn.Module`` with ``loss(episode, step)`` (the training objective, a
scalar to minimise, plus its parts for logging) and ``predict(episode)`` (the mean image
for every query view, used by the NLL evaluation). Nothing here depends on a
particular architecture.

The two study models split their loss in two (:meth:`GQNFamilyModel.loss_inputs` and
:meth:`GQNFamilyModel.core_loss`): the representation, whose input shapes change with the
number of context views drawn for each scene, and the L-step core, whose shapes are fixed by
the batch and the query count and whose code has no host synchronisation (no ``.item()``,
no Python branch on a tensor's value). ``loss`` is the two in a row; the step's fast path
(:mod:`gqnbench.step`) runs the core as a CUDA graph. A plugin model may override ``loss``
instead; it then simply runs without the graph.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from gqnbench.config import ModelConfig
from gqnbench.data.episode import Episode
from gqnbench.models.representation import Representation


@dataclass
class LossOutput:
    """A training objective and its parts; all are means over the query images, in nats."""

    loss: torch.Tensor  # what the optimiser minimises
    reconstruction: torch.Tensor  # -log p(x_q | ...) at the training pixel sigma
    kl: torch.Tensor  # KL(q || pi) summed over latents; zero for models without one
    mean_image: torch.Tensor  # [B*K, 3, H, W] predicted mean used in the reconstruction term
    sigma: float | torch.Tensor  # a 0-d tensor when the step feeds the schedule's sigma to a CUDA graph


def gaussian_rsample(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Reparameterised sample with std = exp(0.5 * logvar) (SPEC section 2)."""
    return mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)


def gaussian_kl(mu_q: torch.Tensor, logvar_q: torch.Tensor, mu_p: torch.Tensor, logvar_p: torch.Tensor) -> torch.Tensor:
    """KL(N(mu_q, e^logvar_q) || N(mu_p, e^logvar_p)) summed over all but the batch dimension.

    Always computed in (at least) fp32: under bf16 autocast the heads return bf16, and the
    difference of two near-equal bf16 log-variances is rounded so coarsely that the KL of
    near-equal distributions came out negative.
    """
    mu_q, logvar_q, mu_p, logvar_p = (t.to(loss_dtype(t)) for t in (mu_q, logvar_q, mu_p, logvar_p))
    kl = 0.5 * (logvar_p - logvar_q + (logvar_q.exp() + (mu_q - mu_p).pow(2)) / logvar_p.exp() - 1.0)
    return kl.flatten(1).sum(dim=1)


def loss_dtype(t: torch.Tensor) -> torch.dtype:
    """The dtype loss terms are computed in: fp32 for half/bf16 tensors, else the tensor's own (fp64 stays)."""
    return torch.promote_types(t.dtype, torch.float32)


def image_mean(head_output: torch.Tensor, output_head: str) -> torch.Tensor:
    """The likelihood's mean from the image head: raw (the authors' form) or squashed by a sigmoid."""
    out = head_output.to(loss_dtype(head_output))
    return torch.sigmoid(out) if output_head == "sigmoid" else out


def as_prediction(mean: torch.Tensor) -> torch.Tensor:
    """A training mean as a predicted image: clamped to [0, 1] (a no-op after a sigmoid)."""
    return mean.clamp(0.0, 1.0)


def init_logvar_bias(head: nn.Conv2d, bias: float | None) -> None:
    """Set the log-variance half (the second half of the output channels) of a latent head's bias."""
    if bias is not None:
        with torch.no_grad():
            head.bias[head.out_channels // 2 :].fill_(bias)


def flatten_queries(episode: Episode) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, K, ...] queries -> [B*K, ...] images and viewpoints."""
    return episode.query_images.flatten(0, 1), episode.query_viewpoints.flatten(0, 1)


class GQNFamilyModel(nn.Module):
    """Common interface; subclasses build their modules from a :class:`ModelConfig`."""

    config: ModelConfig

    def pixel_sigma(self, step: int) -> float:
        raise NotImplementedError

    def loss(self, episode: Episode, step: int = 0) -> LossOutput:
        """The training objective of update ``step``: the core's loss on the representation's inputs."""
        return self.core_loss(*self.loss_inputs(episode), sigma=self.pixel_sigma(step))

    def loss_inputs(self, episode: Episode) -> tuple[torch.Tensor, ...]:
        """What the L-step core reads, from the episode (the representation runs here): shapes fixed by B and K."""
        raise NotImplementedError

    def core_loss(self, *inputs: torch.Tensor, sigma: float | torch.Tensor) -> LossOutput:
        """The L-step core and the loss on ``loss_inputs``' tensors, at pixel standard deviation ``sigma``."""
        raise NotImplementedError

    def predict(self, episode: Episode, use_mean: bool = False) -> torch.Tensor:
        """Mean image for every query view: [B, K, 3, H, W] in [0, 1]."""
        raise NotImplementedError

    def forward(self, episode: Episode, step: int = 0) -> torch.Tensor:
        # forward() is the training loss so DDP, FLOP counters and torch.compile see one call.
        return self.loss(episode, step).loss

    def module_groups(self) -> dict[str, list[nn.Module]]:
        """Named groups of submodules for per-module parameter and FLOP breakdowns."""
        raise NotImplementedError

    def _build_body(self, cfg: ModelConfig, inference_core: type[nn.Module], generation_core: type[nn.Module]) -> None:
        """The representation net and the L inference and generation cores (one each when shared).

        Built in this order in both models, so a seed gives the same initial weights as it always has.
        """
        self.config = cfg
        n_cores = 1 if cfg.shared_core else cfg.num_layers
        self.representation = Representation(cfg.r_channels, cfg.viewpoint_dim, pool=cfg.representation == "pool")
        self.inference_cores = nn.ModuleList(inference_core(cfg) for _ in range(n_cores))
        self.generation_cores = nn.ModuleList(generation_core(cfg) for _ in range(n_cores))
