"""Judging a training run against the reference predictors: ratios to the mean frame, and "learned".

A run has **learned** when it did not diverge and its final validation MSE *and* its final
foreground MSE (pixels of the true query that are not background) are both at most
``LEARNED_FRACTION`` (0.9) of the mean training frame's on the same validation episode. The
mean frame ignores the scene; beating it by 10% on the foreground too means the model used its
context (an untrained model starts at about 2x). Everything here reads a ``training_run``
document, so the report and the sweep judge runs the same way.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from gqnbench.results import as_float

LEARNED_FRACTION = 0.9
LEARNED_CRITERION = (
    f"not diverged, and final val MSE and foreground MSE both <= {LEARNED_FRACTION} x the mean-frame predictor's"
)


def _ratio(point: Mapping[str, Any] | None, base: Mapping[str, Any], key: str) -> float:
    if not point or point.get(key) is None or not base.get(key):
        return math.nan
    return as_float(point[key]) / as_float(base[key])


def ratio_curve(doc: Mapping[str, Any]) -> list[dict[str, float]]:
    """Every evaluation of a run as MSE and foreground MSE relative to the mean frame."""
    base = doc["baselines"]["mean_image"]
    return [
        {"step": int(p["step"]), "mse_ratio": _ratio(p, base, "val_mse"), "fg_ratio": _ratio(p, base, "val_fg_mse")}
        for p in doc["eval_curve"]
    ]


def final_ratios(doc: Mapping[str, Any]) -> dict[str, float]:
    """The last evaluation's ratios to the mean frame (z sampled, and z at the mean) and its NLL."""
    base = doc["baselines"]["mean_image"]
    last = doc["eval_curve"][-1] if doc.get("eval_curve") else {}
    return {
        "mse_ratio": _ratio(last, base, "val_mse"),
        "fg_ratio": _ratio(last, base, "val_fg_mse"),
        "mse_ratio_zmean": _ratio(last.get("z_mean"), base, "val_mse"),
        "fg_ratio_zmean": _ratio(last.get("z_mean"), base, "val_fg_mse"),
        "val_nll": as_float(last.get("val_nll", math.nan)),
    }


def learned(doc: Mapping[str, Any]) -> bool:
    """The one "learned" criterion (see the module docstring)."""
    if doc.get("status") == "diverged" or not doc.get("eval_curve"):
        return False
    r = final_ratios(doc)
    return all(math.isfinite(r[k]) and r[k] <= LEARNED_FRACTION for k in ("mse_ratio", "fg_ratio"))
