"""Sample predictions: per validation scene the context views, the true query and each model's prediction.

Only runs that completed have predictions here: the samples writer leaves out a run that
diverged, failed or was interrupted (``left_out``), and the section says which and why.
"""

from __future__ import annotations

import base64
import binascii
import io

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from gqnbench.report import formatting as F
from gqnbench.report.context import ReportContext
from gqnbench.report.document import Note, Section
from gqnbench.report.formatting import model_label
from gqnbench.report.inputs import ReportInputError, ResultFile, ResultSet
from gqnbench.report.plotting import plt
from gqnbench.schema.study import SampleScene, SamplesDoc

# The paper-scale recipe's preset (gqnbench.report.sections.paper_scale shows its samples).
PAPER_SCALE_PRESET = "paper-short"
_REFERENCE_LABELS = {"mean frame": "ref: mean frame", "nearest context view": "ref: nearest view"}


def decode_png(text: str, where: str) -> np.ndarray:
    """A base64 PNG as float RGB in [0, 1]; ``where`` names the file and field in the error."""
    try:
        with Image.open(io.BytesIO(base64.b64decode(text, validate=True))) as img:
            return np.asarray(img.convert("RGB"), dtype=np.float64) / 255.0
    except (binascii.Error, ValueError, UnidentifiedImageError, OSError) as exc:
        raise ReportInputError(f"{where}: not a base64-encoded PNG ({exc})") from exc


def _decode_scene(scene: SampleScene, where: str) -> dict:
    """One scene's PNGs as arrays: context views, the true query, and predictions by model and reference."""
    references = scene.references or {}  # files written before the references were drawn have none
    return {
        "index": scene.index,
        "context": [decode_png(c, f"{where}.context[{j}]") for j, c in enumerate(scene.context)],
        "query": decode_png(scene.query, f"{where}.query"),
        "predictions": {
            **{m: decode_png(p, f"{where}.predictions.{m}") for m, p in scene.predictions.items()},
            **{
                _REFERENCE_LABELS.get(name, f"ref: {name}"): decode_png(p, f"{where}.references.{name}")
                for name, p in references.items()
            },
        },
    }


def decode_scenes(samples: ResultFile) -> list[dict]:
    """Every scene of a samples file, decoded; a PNG that does not decode names file and field."""
    scenes = samples.as_(SamplesDoc).scenes
    return [_decode_scene(scene, f"{samples.path}: scenes[{i}]") for i, scene in enumerate(scenes)]


def prediction_mse(scenes: list[dict]) -> pd.DataFrame:
    """Per-pixel MSE of each shown prediction against its true query (of the 8-bit PNGs)."""
    rows = []
    for scene in scenes:
        for model, pred in scene["predictions"].items():
            mse = float(np.mean((pred - scene["query"]) ** 2)) if pred.shape == scene["query"].shape else np.nan
            rows.append({"scene": scene["index"], "model": model, "mse": mse})
    return pd.DataFrame(rows)


def prediction_grid(scenes: list[dict], mse: pd.DataFrame):
    n_ctx = max(len(s["context"]) for s in scenes)
    models = list(dict.fromkeys(m for s in scenes for m in s["predictions"]))
    cols = n_ctx + 1 + len(models)
    fig, axes = plt.subplots(len(scenes), cols, figsize=(1.45 * cols, 1.6 * len(scenes)), squeeze=False)
    for r, scene in enumerate(scenes):
        cells = [(f"context {j + 1}", img) for j, img in enumerate(scene["context"])]
        cells += [(None, None)] * (n_ctx - len(scene["context"]))
        cells.append(("true query", scene["query"]))
        for model in models:
            err = mse[(mse["scene"] == scene["index"]) & (mse["model"] == model)]["mse"]
            title = f"{model_label(model)}\nMSE {F.fmt_sig(err.iloc[0], 2)}" if len(err) else model_label(model)
            cells.append((title, scene["predictions"].get(model)))
        for c, (title, img) in enumerate(cells):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if img is None:
                ax.axis("off")
                continue
            ax.imshow(img, interpolation="nearest")
            ax.set_title(title, fontsize=7)
            if c == 0:
                ax.set_ylabel(f"scene {scene['index']}", fontsize=8)
    fig.tight_layout()
    return fig


def _caption(doc: SamplesDoc) -> str:
    # Which z the predictions used is recorded by the writer; a file without it does not say.
    z = doc.z if doc.z is not None else "z not recorded"
    return (
        f"Validation scenes: context views, the true query view, each model's prediction after "
        f"{F.fmt_int(doc.step)} training steps ({z}) and the two reference predictors (the mean training frame, "
        "which ignores the scene, and the context view whose camera is nearest the query's); MSE of the "
        "shown 8-bit image."
    )


def build(results: ResultSet, ctx: ReportContext) -> Section:
    """A grid per samples file: context views, the true query, each model's and reference's prediction."""
    section = Section("Sample predictions", "samples")
    # The paper-scale recipe's predictions are drawn in their own section.
    files = [f for f in results.of_kind("samples") if f.as_(SamplesDoc).preset != PAPER_SCALE_PRESET]
    if not files:
        section.blocks.append(Note("No samples results: the prediction grid is omitted."))
        return section
    for i, samples in enumerate(files):
        scenes = decode_scenes(samples)
        if not scenes:
            section.blocks.append(Note(f"{ctx.rel(samples.path)} holds no scenes."))
            continue
        name = "samples" if len(files) == 1 else f"samples_{i}"
        figure = prediction_grid(scenes, prediction_mse(scenes))
        doc = samples.as_(SamplesDoc)
        section.blocks.append(ctx.figure(name, figure, _caption(doc), [samples.path]))
        if doc.left_out:
            reasons = "; ".join(f"{model_label(m)} ({why})" for m, why in doc.left_out.items())
            section.blocks.append(Note(f"Predictions not shown, the run did not complete: {reasons}."))
    return section
