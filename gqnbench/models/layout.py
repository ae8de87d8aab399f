"""Memory layout: keep a channels-last step channels-last from its first convolution to its last.

The step's fast path (gqnbench.step) stores weights and images channels-last (NHWC), where cuDNN's
bf16 convolutions need no transposes. A tensor the model makes itself (zero states, a broadcast
viewpoint, a matrix product viewed as a map) is NCHW, and a concatenation of mixed layouts falls
back to NCHW, so every convolution after it would convert back. These helpers make such tensors in
the layout of the tensor they join; with NCHW inputs they return exactly what the model made
before (the CPU step stays bit-identical).
"""

from __future__ import annotations

import torch


def is_channels_last(t: torch.Tensor) -> bool:
    """Stored NHWC (and not also plain contiguous, as a 1x1 or one-channel map is)."""
    return t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last)


def in_layout_of(t: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """``t`` stored channels-last when ``reference`` is, else ``t`` itself."""
    return t.contiguous(memory_format=torch.channels_last) if is_channels_last(reference) else t


def zeros_in_layout(reference: torch.Tensor, *shape: int) -> torch.Tensor:
    """Zeros of ``shape`` with the dtype and device of ``reference``, channels-last when ``reference`` is.

    The ConvLSTM states and the canvas start from these, so a channels-last step stays
    channels-last from its first core step.
    """
    return in_layout_of(reference.new_zeros(*shape), reference)
