"""Camera geometry (anydepth.ops.geometry): hand-computed known answers and checks on real RGB-D frames."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from anydepth.ops.geometry import (
    DEFAULT_FOV_DEG,
    depth_edge_mask,
    focal_from_35mm,
    focal_from_fov,
    fov_from_focal,
    intrinsics_from_35mm,
    intrinsics_from_dict,
    intrinsics_from_fov,
    project_points,
    resolve_intrinsics,
    unproject_depth,
)
from anydepth.types import Intrinsics

RGBD = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "rgbd"


def _fixture(sample_id: str) -> tuple[np.ndarray, Intrinsics, dict]:
    if not (RGBD / "manifest.json").is_file():
        pytest.skip("real RGB-D fixtures not available")
    from anydepth.data.io import read_depth

    manifest = json.loads((RGBD / "manifest.json").read_text())
    s = next(x for x in manifest["samples"] if x["id"] == sample_id)
    depth = read_depth(RGBD / s["depth"], scale=s["depth_scale"])
    return depth, Intrinsics(**s["intrinsics"]), s


def _plane(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Least-squares plane: unit normal, centroid, RMS distance."""
    c = points.mean(0)
    _, s, vt = np.linalg.svd(points - c, full_matrices=False)
    return vt[2], c, float(s[2] / math.sqrt(len(points)))


# ---------------------------------------------------------------------------------------------- known answers


def test_focal_from_fov_hand_values() -> None:
    # 90 degrees across 640 px: tan(45) = 1 -> f = 320
    assert focal_from_fov(640, 90.0) == pytest.approx(320.0)
    # 60 degrees: f = 320 / tan(30) = 554.256
    assert focal_from_fov(640, 60.0) == pytest.approx(320.0 / math.tan(math.radians(30.0)))
    assert fov_from_focal(640, 320.0) == pytest.approx(90.0)
    with pytest.raises(ValueError, match="field of view"):
        focal_from_fov(640, 180.0)


def test_intrinsics_from_fov_pixel_centre_convention() -> None:
    k = intrinsics_from_fov(480, 640, 90.0)
    assert (k.fx, k.fy, k.cx, k.cy) == pytest.approx((320.0, 320.0, 319.5, 239.5))
    # the left edge of pixel 0 (u = -0.5) and the right edge of the last pixel (u = W - 0.5) are at +-45 degrees
    assert math.degrees(math.atan((-0.5 - k.cx) / k.fx)) == pytest.approx(-45.0)
    assert math.degrees(math.atan((639.5 - k.cx) / k.fx)) == pytest.approx(45.0)
    kv = intrinsics_from_fov(480, 640, 90.0, axis="vertical")
    assert kv.fy == pytest.approx(240.0)
    kd = intrinsics_from_fov(480, 640, 90.0, axis="diagonal")
    assert kd.fx == pytest.approx(400.0)  # diagonal 800 px


def test_focal_from_35mm_hand_value() -> None:
    # a 26 mm equivalent lens on a 4032x3024 photo: f = 26 * 5040 / 43.2666
    assert focal_from_35mm(3024, 4032, 26.0) == pytest.approx(26.0 * 5040.0 / math.hypot(36, 24))
    # 35 mm equivalent 43.27 mm ("normal lens") -> focal length equals the image diagonal
    k = intrinsics_from_35mm(300, 400, math.hypot(36, 24))
    assert k.fx == pytest.approx(500.0)
    assert (k.cx, k.cy) == (199.5, 149.5)


def test_intrinsics_from_dict_rescales_to_image_size() -> None:
    d = {"fx": 500.0, "fy": 510.0, "cx": 319.5, "cy": 239.5, "width": 640, "height": 480}
    k = intrinsics_from_dict(d, 240, 320)
    assert (k.fx, k.fy) == pytest.approx((250.0, 255.0))
    assert (k.cx, k.cy) == pytest.approx((159.5, 119.5))  # the centre stays the centre
    k2 = intrinsics_from_dict({"fx": 100.0}, 10, 20)
    assert (k2.fy, k2.cx, k2.cy) == (100.0, 9.5, 4.5)
    with pytest.raises(ValueError, match="unknown intrinsics key"):
        intrinsics_from_dict({"fx": 1.0, "f": 2.0}, 10, 10)


def test_resolve_intrinsics_precedence() -> None:
    explicit = Intrinsics(100.0, 100.0, 5.0, 5.0)
    assert resolve_intrinsics(10, 20, intrinsics=explicit, fov_deg=90, focal_35mm=26) == (
        explicit,
        "intrinsics",
    )
    k, src = resolve_intrinsics(10, 20, fov_deg=90.0, focal_35mm=26)
    assert src == "fov" and k.fx == pytest.approx(10.0)
    k, src = resolve_intrinsics(10, 20, focal_35mm=26.0)
    assert src == "exif_35mm" and k.fx == pytest.approx(focal_from_35mm(10, 20, 26.0))
    k, src = resolve_intrinsics(10, 20)
    assert src == "default_fov" and k.fx == pytest.approx(focal_from_fov(20, DEFAULT_FOV_DEG))


def test_unproject_hand_computed_points() -> None:
    k = Intrinsics(fx=2.0, fy=4.0, cx=1.0, cy=0.5)
    depth = np.array([[2.0, 4.0, 6.0], [1.0, 1.0, 8.0]], dtype=np.float32)
    pts = unproject_depth(depth, k)
    assert pts.shape == (2, 3, 3) and isinstance(pts, np.ndarray)
    # pixel (u=0, v=0), z=2: x = (0-1)/2*2 = -1, y = (0-0.5)/4*2 = -0.25
    np.testing.assert_allclose(pts[0, 0], [-1.0, -0.25, 2.0])
    # pixel (u=2, v=1), z=8: x = (2-1)/2*8 = 4, y = (1-0.5)/4*8 = 1
    np.testing.assert_allclose(pts[1, 2], [4.0, 1.0, 8.0])
    # the principal point column has x = 0
    np.testing.assert_allclose(pts[:, 1, 0], 0.0)
    # torch in, torch out, batched
    t = unproject_depth(torch.from_numpy(np.stack([depth, depth])), k)
    assert isinstance(t, torch.Tensor) and t.shape == (2, 2, 3, 3)
    np.testing.assert_allclose(t[1].numpy(), pts)


def test_project_inverts_unproject() -> None:
    rng = np.random.default_rng(0)
    k = Intrinsics(fx=300.0, fy=310.0, cx=31.7, cy=20.2)
    depth = rng.uniform(0.5, 20.0, size=(40, 60))
    uv = project_points(unproject_depth(depth, k), k)
    v, u = np.mgrid[0:40, 0:60]
    np.testing.assert_allclose(uv[..., 0], u, atol=1e-9)
    np.testing.assert_allclose(uv[..., 1], v, atol=1e-9)


def test_depth_edge_mask_marks_discontinuities_only() -> None:
    depth = np.ones((8, 10), dtype=np.float32)
    depth[:, 5:] = 3.0  # a depth jump between columns 4 and 5
    depth[0, 0] = 0.0  # invalid pixel: not an edge, and no edge next to it
    e = depth_edge_mask(depth, rtol=0.05)
    assert e.dtype == bool and e.shape == depth.shape
    assert e[:, 4].all() and e[:, 5].all()
    assert not e[:, :4].any() and not e[:, 6:].any()
    # a smooth ramp of 1% per pixel is not an edge at 5% tolerance
    ramp = np.cumprod(np.full((6, 30), 1.01), axis=1)
    assert not depth_edge_mask(ramp, rtol=0.05).any()


# ---------------------------------------------------------------------------------------------- real frames


@pytest.mark.parametrize("sample_id", ["nyu_00000", "kitti_0000000005", "tum_sample"])
def test_real_frames_unproject_z_equals_depth_and_reprojects(sample_id: str) -> None:
    depth, k, _ = _fixture(sample_id)
    pts = unproject_depth(depth, k)
    valid = depth > 0
    assert valid.mean() > 0.1
    np.testing.assert_array_equal(pts[..., 2], depth)
    uv = project_points(pts[valid].astype(np.float64), k)
    v, u = np.nonzero(valid)
    np.testing.assert_allclose(uv[:, 0], u, atol=1e-3)
    np.testing.assert_allclose(uv[:, 1], v, atol=1e-3)
    # ray directions: x/z and y/z depend on the pixel only, not on the depth
    np.testing.assert_allclose(pts[valid][:, 0] / depth[valid], (u - k.cx) / k.fx, atol=1e-5)


@pytest.mark.parametrize("sample_id", ["kitti_0000000005", "kitti_0000000050", "kitti_0000000100"])
def test_kitti_road_plane_is_camera_height_below(sample_id: str) -> None:
    """KITTI's colour camera is mounted 1.65 m above the road: the LiDAR road points must say so."""
    depth, k, _ = _fixture(sample_id)
    pts = unproject_depth(depth, k)
    road = pts[300:375, 500:750].reshape(-1, 3)
    road = road[road[:, 2] > 0]
    assert len(road) > 1000
    n, c, rms = _plane(road.astype(np.float64))
    assert abs(n[1]) > 0.99  # road normal is vertical (camera y points down)
    assert 1.55 < abs(float(n @ c)) < 1.80
    assert rms < 0.03


def test_livingroom_wall_and_floor_are_perpendicular_planes() -> None:
    """Noise-free synthetic frame: wall and floor back-project to planes at 90 degrees with its intrinsics."""
    depth, k, _ = _fixture("livingroom_00000")
    pts = unproject_depth(depth, k).astype(np.float64)
    wall = pts[10:90, 300:620].reshape(-1, 3)
    floor = pts[400:475, 150:630].reshape(-1, 3)
    n_wall, _, rms_wall = _plane(wall[wall[:, 2] > 0])
    n_floor, c_floor, rms_floor = _plane(floor[floor[:, 2] > 0])
    assert rms_wall < 0.002 and rms_floor < 0.002  # metres
    angle = math.degrees(math.acos(abs(float(n_wall @ n_floor))))
    assert angle == pytest.approx(90.0, abs=0.5)
    assert abs(n_floor[1]) > 0.9  # the floor is roughly horizontal in the camera frame
