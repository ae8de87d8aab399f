"""Matplotlib/seaborn set-up for report figures: headless Agg backend and one consistent style."""

from __future__ import annotations

import zlib

import matplotlib

matplotlib.use("Agg")  # reports are written on headless machines; never open a window

import matplotlib.pyplot as plt  # noqa: E402
import seaborn as sns  # noqa: E402

from gqnbench.report.formatting import MODEL_LABELS  # noqa: E402

sns.set_theme(style="whitegrid", context="notebook", font_scale=0.9)

# Fixed colours so a model looks the same in every figure (the study: GQN blue, proposed red).
MODEL_PALETTE = {MODEL_LABELS["gqn"]: "#1f77b4", MODEL_LABELS["metagqn"]: "#d62728"}


# Any other model (a plugin, found by name in the results files) gets one of these, chosen from
# its label alone, so it keeps its colour in every figure and every report; blue and red stay the study's.
EXTRA_COLOURS = ("#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f")


def palette_for(labels: list[str]) -> dict[str, str]:
    """Model colours: the study's two fixed, every other label its own colour from :data:`EXTRA_COLOURS`.

    An extra label's colour is picked by a hash of the label; when two labels of one figure
    would share a colour, the later one takes the next free colour.
    """
    out: dict[str, str] = {}
    for lab in dict.fromkeys(labels):
        if lab in MODEL_PALETTE:
            out[lab] = MODEL_PALETTE[lab]
            continue
        start = zlib.crc32(str(lab).encode()) % len(EXTRA_COLOURS)
        taken = set(out.values())
        free = [EXTRA_COLOURS[(start + i) % len(EXTRA_COLOURS)] for i in range(len(EXTRA_COLOURS))]
        out[lab] = next((c for c in free if c not in taken), free[0])
    return out


__all__ = ["plt", "sns", "palette_for", "MODEL_PALETTE", "EXTRA_COLOURS"]
