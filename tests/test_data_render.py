"""The scene generator (SPEC section 6) and the viewpoint formula (SPEC section 5)."""

from __future__ import annotations

import colorsys
import math

import numpy as np
import pytest

from gqnbench.data.render import (
    AMBIENT,
    DIFFUSE,
    HEADLIGHT,
    LIGHT_DIRECTION,
    Scene,
    camera_basis,
    random_cameras,
    random_colours,
    random_walk_cubes,
    render_scene,
    sample_scene,
)
from gqnbench.data.viewpoint import VIEWPOINT_ORDER, cameras_to_viewpoints


def test_viewpoint_formula_and_order():
    rng = np.random.default_rng(0)
    cams = np.concatenate([rng.normal(size=(4, 15, 3)) * 8, rng.uniform(-np.pi, np.pi, (4, 15, 2))], -1)
    v = cameras_to_viewpoints(cams.astype(np.float32))
    assert v.shape == (4, 15, 7) and v.dtype == np.float32
    c = cams.astype(np.float32).astype(np.float64)
    want = np.stack(
        [c[..., 0], c[..., 1], c[..., 2], np.cos(c[..., 3]), np.sin(c[..., 3]), np.cos(c[..., 4]), np.sin(c[..., 4])],
        -1,
    )
    np.testing.assert_allclose(v, want, rtol=0, atol=1e-6)
    assert VIEWPOINT_ORDER == ("x", "y", "z", "cos_yaw", "sin_yaw", "cos_pitch", "sin_pitch")
    with pytest.raises(ValueError, match="5 values"):
        cameras_to_viewpoints(np.zeros((15, 7)))


def test_walk_is_self_avoiding_and_connected():
    rng = np.random.default_rng(1)
    for _ in range(200):
        cells = random_walk_cubes(rng)
        assert cells.shape == (7, 3)
        assert len({tuple(c) for c in cells}) == 7
        assert np.all(np.abs(np.diff(cells, axis=0)).sum(axis=1) == 1)  # each step to a face neighbour


def test_colours_in_hsv_ranges():
    rgb = random_colours(np.random.default_rng(2), 500)
    hsv = np.array([colorsys.rgb_to_hsv(*c) for c in rgb])
    assert hsv[:, 1].min() >= 0.75 - 1e-9 and hsv[:, 2].min() >= 0.85 - 1e-9 and hsv[:, 2].max() <= 1 + 1e-9
    assert hsv[:, 0].min() < 0.05 and hsv[:, 0].max() > 0.95  # hue spans [0, 1)


def test_cameras_on_sphere_looking_at_centre():
    cams = random_cameras(np.random.default_rng(3), 1000).astype(np.float64)
    pos = cams[:, :3]
    np.testing.assert_allclose(np.linalg.norm(pos, axis=1), 8.0, rtol=1e-6)
    look = -pos / 8.0
    np.testing.assert_allclose(cams[:, 3], np.arctan2(look[:, 1], look[:, 0]), atol=1e-6)
    np.testing.assert_allclose(cams[:, 4], np.arcsin(look[:, 2]), atol=1e-6)
    assert abs(pos[:, 2].mean()) < 0.5 and pos[:, 2].std() == pytest.approx(8 / math.sqrt(3), rel=0.1)  # uniform
    _, forward, right, up = camera_basis(cams)
    np.testing.assert_allclose(forward, look, atol=1e-6)
    np.testing.assert_allclose(right[:, 2], 0.0, atol=1e-12)  # no roll
    assert np.all(up[:, 2] >= -1e-12)  # z up


def test_scene_centred():
    scene = sample_scene(np.random.default_rng(4))
    np.testing.assert_allclose(scene.cube_centres.mean(axis=0), 0.0, atol=1e-12)
    assert scene.cameras.shape == (15, 5) and scene.cameras.dtype == np.float32


def test_bounding_box_casting_equals_full_frame():
    for seed in range(3):
        scene = sample_scene(np.random.default_rng(seed))
        assert np.array_equal(render_scene(scene), render_scene(scene, full_frame=True))


def test_coverage_and_black_background():
    frames = np.stack([render_scene(sample_scene(np.random.default_rng(s))) for s in range(8)])
    covered = frames.max(axis=-1) > 0
    assert 0.05 < covered.mean() < 0.25  # SPEC: the object covers about 10% of the pixels
    assert covered.reshape(-1, 64 * 64).any(axis=1).all()  # the object is in every view
    border = covered[:, :, [0, -1]].any(axis=(2, 3)) | covered[:, :, :, [0, -1]].any(axis=(2, 3))
    assert border.mean() < 0.05  # framed: only long objects seen end-on from nearby reach the edge


def test_single_cube_projection_and_lighting():
    """One grey cube at the origin seen from (8, 0, 0): the front face (normal +x) is a square of
    half-width 0.5 / 7.5 / tan(25 deg) * 32 px with shade 0.15 + 0.9 n.L + 0.5 headlight."""
    cams = np.array([[8.0, 0.0, 0.0, math.pi, 0.0], [0.0, 0.0, 8.0, 0.0, -math.pi / 2 + 1e-6]], dtype=np.float32)
    scene = Scene(cube_centres=np.zeros((1, 3)), colours=np.full((1, 3), 0.5), cameras=cams)
    img = render_scene(scene)
    half = 0.5 / 7.5 / math.tan(math.radians(25)) * 32
    area = img[0, ..., 0].sum() / img[0, 32, 32, 0]  # in pixels; edge pixels count by their coverage
    assert area == pytest.approx((2 * half) ** 2, rel=0.05)
    shade = AMBIENT + DIFFUSE * LIGHT_DIRECTION[0] + HEADLIGHT * 1.0
    assert img[0, 32, 32].tolist() == pytest.approx([0.5 * shade * 255] * 3, abs=1.0)
    # from above: the top face, lit by the key light's z component
    shade_top = AMBIENT + DIFFUSE * LIGHT_DIRECTION[2] + HEADLIGHT * 1.0
    assert img[1, 32, 32].tolist() == pytest.approx([min(1.0, 0.5 * shade_top) * 255] * 3, abs=1.0)
