"""ModelConfig: every size knob of both models in one dataclass (presets live in gqnbench.presets)."""

from __future__ import annotations

from dataclasses import dataclass

from gqnbench.config import ConfigError, check_ranges, ranged


@dataclass(frozen=True)
class ModelConfig:
    """Sizes of a GQN-family model. Defaults are the study's paper configuration for ``gqn``.

    ``image_size`` must be divisible by 4: the representation and the cores work at
    image_size / 4 (16x16 at 64x64), and the canvas is upsampled back by a 4/4 transposed conv.
    """

    image_size: int = ranged(64, lo=8, multiple_of=4)
    hidden_channels: int = ranged(128, lo=1)  # ConvLSTM hidden state
    r_channels: int = ranged(256, lo=1)  # scene representation r
    z_channels: int = ranged(3, lo=1)  # latent channels per step
    num_layers: int = ranged(12, lo=1)  # L, generation steps
    representation: str = "pool"  # "pool" (r is C x 1 x 1) or "tower" (r is C x H/4 x W/4)
    shared_core: bool = True  # one set of core weights reused at all L steps
    viewpoint_dim: int = ranged(7, lo=7, hi=7)  # (x, y, z, cos/sin yaw, cos/sin pitch): what the data gives
    # GQN pixel standard deviation, annealed linearly (SPEC section 4); metagqn uses sigma_end = sigma_start = 1.
    sigma_start: float = ranged(2.0, lo=0, lo_open=True)
    sigma_end: float = ranged(0.7, lo=0, lo_open=True)
    sigma_anneal_steps: int = ranged(200_000, lo=0)
    # metagqn only: keep the authors' prior head eta_pi that the objective never uses
    # (the study's 18,713,091 parameters count it).
    include_unused_prior_head: bool = False
    # Regroup the cores' linear operations (gqnbench.models.folding): step-invariant inputs
    # through the gate conv once per forward, the canvas kept at core size with one shared
    # core. Same parameters and function, ~45% fewer FLOPs at the paper size. False computes
    # everything at every step as the authors' code does (their FLOPs, SPEC section 7).
    fold_linear_ops: bool = True
    # How eta_g's output becomes the predicted mean. "raw" (the authors' torch-gqn / torch-jump
    # code): the likelihood is trained on the raw head output, clamped to [0, 1] only when
    # predicting; a zero canvas predicts black, the background. "sigmoid": squashed in training
    # too (another public GQN); a zero canvas predicts grey 0.5.
    output_head: str = "raw"
    # Initial bias of the log-variance half of the latent heads (eta_e, and eta_pi for GQN).
    # None keeps PyTorch's default init (logvar about 0: z carries unit-variance noise at the start).
    latent_logvar_bias: float | None = ranged(None)

    def __post_init__(self) -> None:
        check_ranges(self)
        if self.output_head not in ("raw", "sigmoid"):
            raise ConfigError(f"output_head={self.output_head!r}: must be 'raw' or 'sigmoid'")
        if self.representation not in ("pool", "tower"):
            raise ConfigError(f"representation={self.representation!r}: must be 'pool' or 'tower'")

    @property
    def canvas_at_core_size(self) -> bool:
        """Whether the canvas is summed at the core's resolution and upsampled once at the end.

        Only with one shared core: ``sum_l up(h_l) = up(sum_l h_l)`` needs the same ``up``.
        """
        return self.fold_linear_ops and self.shared_core

    @property
    def core_size(self) -> int:
        """Spatial size of the ConvLSTM states (16 at 64x64)."""
        return self.image_size // 4


def linear_anneal(step: int, start: float, end: float, steps: int) -> float:
    """Linear from ``start`` at step 0 to ``end`` at ``steps``, constant after (SPEC section 4)."""
    if steps <= 0:
        return end
    frac = min(max(step, 0) / steps, 1.0)
    return start + (end - start) * frac
