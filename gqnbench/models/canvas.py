"""The canvas a generator core paints: ``u = sum_l upsample_h(h_l)`` at image resolution.

``upsample_h`` is linear and the same at every step when the core is shared, so with
``ModelConfig.canvas_at_core_size`` the sum is kept at the core's resolution and
upsampled once, when the image is read; the L per-step 64x64 transposed convolutions,
their additions and (under autocast) their casts disappear. Otherwise each step adds its
upsampled state, as in the authors' code.
"""

from __future__ import annotations

import torch
from torch import nn

from gqnbench.models.layout import zeros_in_layout


class CanvasWriter(nn.Module):
    """Canvas methods for a core that defines ``upsample_h`` (4x4, stride 4, no bias)."""

    upsample_h: nn.ConvTranspose2d

    def __init__(self, hidden_channels: int, core_size: int, at_core_size: bool) -> None:
        super().__init__()
        self.canvas_channels = hidden_channels
        self.core_size = core_size
        self.canvas_at_core_size = at_core_size

    def initial_canvas(self, reference: torch.Tensor, batch: int) -> torch.Tensor:
        """A zero canvas with the dtype, device and memory layout of ``reference``."""
        size = self.core_size if self.canvas_at_core_size else 4 * self.core_size
        return zeros_in_layout(reference, batch, self.canvas_channels, size, size)

    def add_to_canvas(self, u: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return u + h if self.canvas_at_core_size else u + self.upsample_h(h)

    def render_canvas(self, u: torch.Tensor) -> torch.Tensor:
        """The canvas at image resolution, whichever way it was kept."""
        return self.upsample_h(u) if self.canvas_at_core_size else u
