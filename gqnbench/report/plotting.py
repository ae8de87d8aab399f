"""Matplotlib/seaborn set-up for report figures: headless Agg backend and one consistent style."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # reports are written on headless machines; never open a window

import matplotlib.pyplot as plt  # noqa: E402
import seaborn as sns  # noqa: E402

from gqnbench.report.study import MODEL_LABELS  # noqa: E402

sns.set_theme(style="whitegrid", context="notebook", font_scale=0.9)

# Fixed colours so a model looks the same in every figure (the study: GQN blue, proposed red).
MODEL_PALETTE = {MODEL_LABELS["gqn"]: "#1f77b4", MODEL_LABELS["metagqn"]: "#d62728"}


def palette_for(labels: list[str]) -> dict[str, str]:
    """Model colours for known labels, seaborn's defaults for the rest."""
    extra = [lab for lab in labels if lab not in MODEL_PALETTE]
    colours = dict(zip(extra, sns.color_palette("colorblind", len(extra)).as_hex()))
    return {lab: MODEL_PALETTE.get(lab, colours.get(lab, "#555555")) for lab in labels}


__all__ = ["plt", "sns", "palette_for", "MODEL_PALETTE"]
