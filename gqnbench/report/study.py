"""The study's published numbers (SPEC sections 1 and 3) that the report sets ours beside.

Kept as plain constants so the report can print them without importing a model. The NLL
constant is recomputed here with ``math`` rather than imported from :mod:`gqnbench.metrics`,
because that module imports torch and the report must not.
"""

from __future__ import annotations

import math

HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)

STUDY_IMAGE_SIZE = 64
STUDY_STEP = 35_000
STUDY_CONTEXT_VIEWS = 3
STUDY_BATCH = 36

# Table 1 of the study: parameters as the authors counted them, validation NLL at 35,000 steps.
STUDY_PARAMS = {"gqn": 49_469_343, "metagqn": 18_713_091}
STUDY_NLL = {"gqn": 1.1439e4, "metagqn": 1.1353e4}

# The authors' metagqn count includes a prior head eta_pi that the objective never uses.
METAGQN_UNUSED_PRIOR_HEAD = 1_638_912
METAGQN_USED_BY_OBJECTIVE = 17_074_179

# The "learned" margin: final MSE and foreground MSE at most this fraction of the mean training
# frame's. The same number as gqnbench.training.judging.LEARNED_FRACTION (a test keeps them equal;
# the report never imports the training package).
LEARNED_FRACTION = 0.9

MODEL_LABELS = {"gqn": "GQN", "metagqn": "proposed (metagqn)"}


def model_label(model: str) -> str:
    """Display name of a registry model name (unknown models keep their registry name)."""
    return MODEL_LABELS.get(model, model)


def num_values(image_size: int, channels: int = 3) -> int:
    """Pixel values per image: the D in the NLL constant D * 0.5 * ln(2 pi)."""
    return channels * image_size * image_size


def nll_constant(image_size: int, channels: int = 3) -> float:
    """The prediction-independent part of the study's unit-variance NLL, in nats per image."""
    return num_values(image_size, channels) * HALF_LOG_2PI


def mse_from_nll(nll: float, image_size: int, channels: int = 3) -> float:
    """Per-pixel-value MSE implied by an NLL with sigma = 1: (NLL - constant) / (D / 2)."""
    return (nll - nll_constant(image_size, channels)) / (0.5 * num_values(image_size, channels))


STUDY_CONSTANT = nll_constant(STUDY_IMAGE_SIZE)
STUDY_MSE = {model: mse_from_nll(nll, STUDY_IMAGE_SIZE) for model, nll in STUDY_NLL.items()}
