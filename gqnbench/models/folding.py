"""Building blocks for the linear shortcuts of ``ModelConfig.fold_linear_ops``.

Both GQN cores spend most of their work on linear operations whose inputs barely change
over the L steps. Because they are linear, they can be regrouped without changing the
function (only the rounding) or the parameters:

- step-invariant inputs (upsampled v_q and r, downsampled x_q) go through their slice of
  the ConvLSTM gate weight once per forward, not once per step (see ``convlstm``);
- the canvas ``u = sum_l upsample_h(h_l)`` equals ``upsample_h(sum_l h_l)``, so with one
  shared core it is kept at the core's resolution and upsampled once at the end; the
  inference core's ``downsample_u(u)`` of that canvas is a 1x1 convolution of the sum
  with the composed weight (4x4 stride-4 blocks do not overlap);
- a k x k, stride-k transposed convolution of a 1x1 input is a matrix product.

The helpers are modules (owning no parameters) so the per-module FLOP attribution, which
hooks module calls, credits their work to the core that calls them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CallTimeWeightConv(nn.Module):
    """A convolution whose weight is passed in at call time (a slice or product of parameters)."""

    def __init__(self, padding: int = 0) -> None:
        super().__init__()
        self.padding = padding

    def forward(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, weight, padding=self.padding)


class ComposeBlockConvs(nn.Module):
    """The 1x1 weight of ``down(up(s))`` for a k x k stride-k ConvTranspose2d ``up`` and
    a k x k stride-k Conv2d ``down`` (no biases): ``M[o, i] = sum_{c,y,x} D[o,c,y,x] U[i,c,y,x]``."""

    def forward(self, down_weight: torch.Tensor, up_weight: torch.Tensor) -> torch.Tensor:
        if down_weight.shape[2:] != up_weight.shape[2:]:
            raise ValueError(f"block sizes differ: {tuple(down_weight.shape)} vs {tuple(up_weight.shape)}")
        composed = torch.mm(down_weight.flatten(1), up_weight.flatten(1).t())
        return composed[:, :, None, None]


class PointUpsample(nn.ConvTranspose2d):
    """A k x k, stride-k transposed convolution (no bias) that the cores apply to 1x1 inputs.

    On a 1x1 input it is exactly a matrix product with the same weight, which oneDNN runs
    several times faster than its deconvolution path. The product runs in fp32 even under
    autocast: with a handful of input rows, casting the 16.7M-element weight (and its
    gradient back) costs far more than the product itself. Larger inputs take the
    ordinary transposed convolution. Parameters and FLOPs are unchanged.
    """

    def __init__(self, channels: int, size: int) -> None:
        super().__init__(channels, channels, size, stride=size, bias=False)

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        if x.shape[-2:] != (1, 1) or output_size is not None:
            return super().forward(x, output_size)
        if active_autocast_dtype(x) is not None:
            with torch.autocast(x.device.type, enabled=False):
                out = torch.mm(x.flatten(1).to(self.weight.dtype), self.weight.flatten(1))
        else:
            out = torch.mm(x.flatten(1), self.weight.flatten(1))
        return out.view(x.shape[0], self.out_channels, *self.kernel_size)


def in_autocast_dtype(weight: torch.Tensor) -> torch.Tensor:
    """``weight`` cast once to the active autocast dtype, so L steps do not each cast it.

    Autocast caches casts of parameters only; a weight derived from one (a slice, a
    product) would otherwise be cast again at every step, forward and backward.
    """
    dtype = active_autocast_dtype(weight)
    return weight if dtype is None else weight.to(dtype)


def active_autocast_dtype(tensor: torch.Tensor) -> torch.dtype | None:
    """The autocast dtype in force for ``tensor``'s device, or None (meta tensors never autocast)."""
    device = tensor.device.type
    if device in ("cpu", "cuda") and torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return None
