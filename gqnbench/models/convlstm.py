"""The ConvLSTM cell both models use: four gates from ONE fused 5x5 convolution.

The fused conv has exactly the parameters of four separate gate convs (SPEC section 2)
and is faster: one large GEMM instead of four small ones. The cell has no Python-side
branches and keeps the state in the input's dtype, so an L-step loop over it unrolls
cleanly under ``torch.compile`` and stays in bf16 under autocast.
"""

from __future__ import annotations

import torch
from torch import nn


class ConvLSTMCell(nn.Module):
    """``c = s(f)*c + s(i)*tanh(g)``, ``h = s(o)*tanh(c)`` with gates = conv5x5([x, h])."""

    def __init__(self, in_channels: int, hidden_channels: int, kernel_size: int = 5) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.hidden_channels = hidden_channels
        # Gate order in the fused output: f, i, o, g.
        self.gates = nn.Conv2d(
            in_channels + hidden_channels, 4 * hidden_channels, kernel_size, padding=kernel_size // 2
        )

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        h, c = state
        f, i, o, g = self.gates(torch.cat((h, x), dim=1)).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c

    def initial_state(self, reference: torch.Tensor, batch: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Zero (h, c) with the dtype and device of ``reference``."""
        zeros = reference.new_zeros(batch, self.hidden_channels, size, size)
        return zeros, zeros.clone()
