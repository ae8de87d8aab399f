"""The ConvLSTM cell both models use: four gates from ONE fused 5x5 convolution.

The fused conv has exactly the parameters of four separate gate convs (SPEC section 2)
and is faster: one large GEMM instead of four small ones. The cell has no Python-side
branches on data and keeps the state in the input's dtype, so an L-step loop over it
unrolls cleanly under ``torch.compile`` and stays in bf16 under autocast.

Step-invariant inputs. In both GQN cores most input channels (the upsampled v_q and r,
the downsampled x_q) are the same at every one of the L steps. A convolution is linear,
so the gate pre-activation splits into ``conv(static, W_static) + conv(dynamic,
W_dynamic)``; :meth:`ConvLSTMCell.prepare` computes the first term once per forward and
the steps convolve only the channels that change. Same parameters, same function (up to
rounding). More such shortcuts: gqnbench.models.folding.

The gate nonlinearities and the state update are one function, :func:`lstm_update`, so the
step's fast path can replace it in every cell with its ``torch.compile`` (``fused_update``):
regional compilation of the part repeated L times, which fuses the gate sum, the four
nonlinearities and both products into one kernel forward and one backward, and builds in
seconds where compiling the whole model unrolls the L steps.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from gqnbench.models.folding import CallTimeWeightConv, in_autocast_dtype
from gqnbench.models.layout import in_layout_of, zeros_in_layout

LSTMUpdate = Callable[..., tuple[torch.Tensor, torch.Tensor]]


def lstm_update(
    gates: torch.Tensor, c: torch.Tensor, static_gates: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(h, c)`` from the gate pre-activations (plus the static inputs' share, when folded) and the old ``c``."""
    if static_gates is not None:
        gates = static_gates + gates
    f, i, o, g = gates.chunk(4, dim=1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h = torch.sigmoid(o) * torch.tanh(c)
    return h, c


class PreparedGates(NamedTuple):
    """What :meth:`ConvLSTMCell.prepare` hands to every step."""

    static_gates: torch.Tensor  # conv(static inputs) + bias, [B, 4*hidden, s, s]
    step_weight: torch.Tensor  # the gate weight's columns for [h, dynamic inputs]


class _StaticSplit(nn.Module):
    """Splits the gate weight into its static and per-step columns and convolves the static inputs.

    One ``torch.split`` (not two slices) so the backward assembles the weight gradient with
    a single concatenation instead of zero-filling the full weight twice. A module, owning no
    parameters, so FLOP attribution credits the work to its cell, and so the split happens
    inside a module call (a parameter view made under no_grad and passed into a module
    call trips torch's module tracker, which FlopCounterMode uses).
    """

    def __init__(self, hidden: int, static: tuple[int, int], in_channels: int, padding: int) -> None:
        super().__init__()
        self.sizes = (hidden + static[0], static[1] - static[0], in_channels - static[1])
        self.padding = padding

    def forward(self, static_x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> PreparedGates:
        before, static_w, after = torch.split(weight, self.sizes, dim=1)
        # The static inputs are a concatenation of broadcast and upsampled maps: NCHW unless moved.
        static_gates = F.conv2d(in_layout_of(static_x, weight), static_w, bias, padding=self.padding)
        step_weight = in_layout_of(torch.cat((before, after), dim=1), weight)
        return PreparedGates(static_gates, in_autocast_dtype(step_weight))


class ConvLSTMCell(nn.Module):
    """``c = s(f)*c + s(i)*tanh(g)``, ``h = s(o)*tanh(c)`` with gates = conv5x5([h, x]).

    ``static`` is the (start, stop) channel range of ``x`` that does not change between
    steps; with it, :meth:`prepare` takes those channels once and each step passes only
    the remaining channels of ``x`` (in their original order).
    """

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        kernel_size: int = 5,
        static: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.hidden_channels = hidden_channels
        # Gate order in the fused output: f, i, o, g. Input order: h, then x.
        self.gates = nn.Conv2d(
            in_channels + hidden_channels, 4 * hidden_channels, kernel_size, padding=kernel_size // 2
        )
        if static is not None and not 0 <= static[0] < static[1] <= in_channels:
            raise ValueError(f"static channel range {static} outside the {in_channels} input channels")
        self.static = static
        if static is not None:
            self.split_static = _StaticSplit(hidden_channels, static, in_channels, kernel_size // 2)
        self.step_conv = CallTimeWeightConv(kernel_size // 2)
        # The step's fast path puts a compiled lstm_update here (gqnbench.step); None runs it eagerly.
        self.fused_update: LSTMUpdate | None = None

    def prepare(self, static_x: torch.Tensor) -> PreparedGates:
        """The static channels' share of the gates (bias included), computed once per forward."""
        if self.static is None:
            raise RuntimeError("this ConvLSTMCell was built without a static channel range")
        return self.split_static(static_x, self.gates.weight, self.gates.bias)

    def forward(
        self,
        x: torch.Tensor,
        state: tuple[torch.Tensor, torch.Tensor],
        prepared: PreparedGates | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One step; with ``prepared``, ``x`` holds only the non-static channels."""
        h, c = state
        update = self.fused_update or lstm_update
        if prepared is None:
            return update(self.gates(in_layout_of(torch.cat((h, x), dim=1), self.gates.weight)), c)
        hx = in_layout_of(torch.cat((h, x), dim=1), prepared.step_weight)
        return update(self.step_conv(hx, prepared.step_weight), c, prepared.static_gates)

    def initial_state(self, reference: torch.Tensor, batch: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Zero (h, c) with the dtype, device and memory layout of ``reference``."""
        zeros = zeros_in_layout(reference, batch, self.hidden_channels, size, size)
        return zeros, zeros.clone()
