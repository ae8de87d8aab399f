"""Divergence checks: a non-finite training loss or a validation NLL that blew up ends a run as ``diverged``.

A diverged run stops with a reason instead of raising, so a sweep always continues. The
loss is checked on every update, before it reaches the weights; ``inject_nan_at_step``
(fault injection for tests) turns one update's loss into NaN.
"""

from __future__ import annotations

import math

import torch


def inject_nan(loss: torch.Tensor, step: int, at_step: int | None) -> torch.Tensor:
    """``loss`` as NaN at update ``at_step`` (``train.inject_nan_at_step``), else unchanged."""
    return loss * float("nan") if at_step is not None and step == at_step else loss


def loss_divergence(loss: float, step: int) -> str | None:
    """Why update ``step`` diverged (its rank-averaged loss is NaN or inf), or None."""
    return None if math.isfinite(loss) else f"training loss is {loss} at step {step}"


def nll_divergence(nll: float, blowup: float) -> str | None:
    """Why a validation NLL means divergence (non-finite, or above ``train.nll_blowup``), or None."""
    if math.isfinite(nll) and nll <= blowup:
        return None
    return f"validation NLL {nll:.6g} is non-finite or above nll_blowup={blowup:g}"
