"""The study's validation metric: Gaussian NLL with unit variance, in nats per image.

``NLL = 0.5 * sum((x - mu)^2) + D * 0.5 * ln(2*pi)`` over the D = C*H*W pixel values in
[0, 1]. At 64x64x3 the constant is 12288 * 0.5 * ln(2*pi) = 11,291.9 nats, so the
study's 1.1439e4 (GQN) and 1.1353e4 (proposed) are per-pixel MSEs of 0.0239 and 0.0099.
Every place that reports an NLL (training, evaluation, reports) calls this module.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gqnbench.judging import HALF_LOG_2PI, nll_constant


def gaussian_nll(target: torch.Tensor, mean: torch.Tensor, sigma: float | torch.Tensor = 1.0) -> torch.Tensor:
    """Per-image ``-log N(target | mean, sigma^2)`` summed over all but the first dimension.

    Computed in at least fp32 whatever the inputs' dtype (bf16 under autocast would round the
    sum of thousands of squared errors and log(sigma) to 3 significant digits).
    """
    dtype = torch.promote_types(torch.promote_types(mean.dtype, target.dtype), torch.float32)
    sigma_t = torch.as_tensor(sigma, dtype=dtype, device=mean.device)
    diff = (target.to(dtype) - mean.to(dtype)) / sigma_t
    per_value = 0.5 * diff.pow(2) + torch.log(sigma_t) + HALF_LOG_2PI
    return per_value.flatten(1).sum(dim=1)


# A pixel of the true query is foreground when any channel is above this (the background is black;
# SPEC section 9: 14% of the pixels at 32x32, carrying 88% of the mean frame's error).
FOREGROUND_THRESHOLD = 0.1


def foreground_mask(target: torch.Tensor) -> torch.Tensor:
    """[N, C, H, W] images -> [N, C, H, W] bool: True on every channel of a pixel with any channel > 0.1."""
    return (target > FOREGROUND_THRESHOLD).any(dim=1, keepdim=True).expand_as(target)


@dataclass(frozen=True)
class NLLResult:
    """The study's metric for a set of predictions, with the errors that show scene-specific learning."""

    nll: float  # nats per image, mean over images
    mse: float  # per-pixel-value mean squared error
    constant: float  # nats per image that no model can remove
    num_images: int
    fg_mse: float = float("nan")  # mean squared error over foreground pixel values (see foreground_mask)
    fg_fraction: float = float("nan")  # share of pixel values that are foreground

    def as_dict(self) -> dict[str, float | int]:
        return {
            "nll": self.nll,
            "mse": self.mse,
            "fg_mse": self.fg_mse,
            "fg_fraction": self.fg_fraction,
            "nll_constant": self.constant,
            "num_images": self.num_images,
        }


def study_nll(target: torch.Tensor, prediction: torch.Tensor) -> NLLResult:
    """The study's NLL (sigma = 1) of ``target`` under ``prediction``, both [N, C, H, W] in [0, 1]."""
    if target.shape != prediction.shape:
        raise ValueError(f"target shape {tuple(target.shape)} != prediction shape {tuple(prediction.shape)}")
    target64 = target.detach().to(torch.float64).flatten(1)
    pred64 = prediction.detach().to(torch.float64).flatten(1)
    per_image = gaussian_nll(target64, pred64, 1.0)
    sq = (target64 - pred64).pow(2)
    fg = foreground_mask(target.detach()).flatten(1)
    fg_count = int(fg.sum())
    return NLLResult(
        nll=float(per_image.mean()),
        mse=float(sq.mean()),
        constant=nll_constant(target64.shape[1]),
        num_images=int(target64.shape[0]),
        fg_mse=float(sq[fg].sum() / fg_count) if fg_count else float("nan"),
        fg_fraction=fg_count / fg.numel(),
    )
