"""Camera records -> the 7-d viewpoint vector the models read.

DeepMind's Shepard-Metzler records store each camera as 5 floats ``(x, y, z, yaw, pitch)``
(position in cube edges, angles in radians). The models read the 7-d vector

    v = (x, y, z, cos yaw, sin yaw, cos pitch, sin pitch)

the order of the GQN paper and of the public PyTorch implementations. DeepMind's own
TensorFlow reader (``gqn/data_reader.py``) orders sine before cosine,
``(x, y, z, sin yaw, cos yaw, sin pitch, cos pitch)``; a model trained with one order
does not transfer to the other, so :data:`VIEWPOINT_ORDER` names ours explicitly.
"""

from __future__ import annotations

import numpy as np

CAMERA_FIELDS = ("x", "y", "z", "yaw", "pitch")
VIEWPOINT_ORDER = ("x", "y", "z", "cos_yaw", "sin_yaw", "cos_pitch", "sin_pitch")
VIEWPOINT_DIM = len(VIEWPOINT_ORDER)


def cameras_to_viewpoints(cameras: np.ndarray) -> np.ndarray:
    """``[..., 5]`` cameras ``(x, y, z, yaw, pitch)`` -> ``[..., 7]`` float32 viewpoints (order above)."""
    cameras = np.asarray(cameras)
    if cameras.shape[-1] != len(CAMERA_FIELDS):
        raise ValueError(f"cameras must have {len(CAMERA_FIELDS)} values {CAMERA_FIELDS} last, got {cameras.shape}")
    # Trigonometry in float64 so the float32 result is the correctly rounded value of the formula.
    c = cameras.astype(np.float64)
    yaw, pitch = c[..., 3], c[..., 4]
    out = np.concatenate(
        [c[..., :3], np.stack([np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch)], axis=-1)], axis=-1
    )
    return out.astype(np.float32)
