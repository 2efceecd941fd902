"""The procedural synthetic RGB-D dataset: exact ray casting on known scenes, determinism, disk round trip."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from anydepth.data.datasets.folder import FolderDataset
from anydepth.data.datasets.synthetic import (
    Box,
    Camera,
    Material,
    Plane,
    Scene,
    Sphere,
    SyntheticDataset,
    render_scene,
    write_synthetic_dataset,
)
from anydepth.registry import DATASETS
from anydepth.types import DepthSpace


def _cam(h: int, w: int, f: float = 40.0, rotation=None, position=None) -> Camera:
    return Camera(
        fx=f,
        fy=f,
        cx=(w - 1) / 2,
        cy=(h - 1) / 2,
        rotation=np.eye(3) if rotation is None else rotation,
        position=np.zeros(3) if position is None else position,
    )


def _wall(z: float) -> Plane:
    return Plane(
        np.array([0.0, 0.0, 1.0]),
        z,
        np.array([1.0, 0, 0]),
        np.array([0, 1.0, 0]),
        Material(pattern="checker"),
    )


def test_fronto_parallel_plane_has_constant_depth():
    r = render_scene(Scene(_cam(33, 47), planes=[_wall(5.0)], sky=False), 33, 47)
    assert not r.sky.any()
    np.testing.assert_allclose(r.depth, 5.0, rtol=1e-6)
    assert r.rgb.shape == (33, 47, 3) and r.rgb.dtype == np.uint8


def test_sphere_centre_pixel_depth_is_distance_minus_radius():
    h = w = 31  # odd: the centre pixel's ray is the optical axis
    sphere = Sphere(np.array([0.0, 0.0, 7.0]), 1.5, Material(pattern="noise", scale=0.3))
    r = render_scene(Scene(_cam(h, w), planes=[_wall(20.0)], spheres=[sphere]), h, w)
    assert r.depth[15, 15] == pytest.approx(7.0 - 1.5, abs=1e-5)
    assert r.depth[0, 0] == pytest.approx(20.0, rel=1e-6)  # the corner sees the wall behind
    # an off-axis pixel on the sphere: solve |t d - c| = R for t with d = ((u-cx)/f, (v-cy)/f, 1)
    u, v = 18, 13
    d = np.array([(u - 15) / 40.0, (v - 15) / 40.0, 1.0])
    c = np.array([0.0, 0.0, 7.0])
    a, b, cc = d @ d, -2 * d @ c, c @ c - 1.5**2
    t = (-b - math.sqrt(b * b - 4 * a * cc)) / (2 * a)
    assert r.depth[v, u] == pytest.approx(t, rel=1e-6)


def test_box_front_face_and_rotated_camera_ground_plane():
    h = w = 21
    box = Box(np.array([0.0, 0.0, 6.0]), np.array([1.0, 1.0, 0.5]), yaw=0.0)
    r = render_scene(Scene(_cam(h, w), planes=[_wall(30.0)], boxes=[box]), h, w)
    assert r.depth[10, 10] == pytest.approx(5.5, abs=1e-6)
    np.testing.assert_allclose(r.normal[10, 10], [0, 0, -1], atol=1e-6)
    # Camera 1.6 m above a ground plane (y down), pitched 15 deg down and rolled: unprojecting the rendered
    # planar depth with the intrinsics must land every ground pixel on y = 1.6 in the world frame.
    p, roll = math.radians(-15), math.radians(3)
    rx = np.array([[1, 0, 0], [0, math.cos(p), -math.sin(p)], [0, math.sin(p), math.cos(p)]])
    rz = np.array([[math.cos(roll), -math.sin(roll), 0], [math.sin(roll), math.cos(roll), 0], [0, 0, 1]])
    cam = _cam(40, 60, f=50.0, rotation=rx @ rz)
    ground = Plane(np.array([0.0, -1.0, 0.0]), -1.6, np.array([1.0, 0, 0]), np.array([0, 0, 1.0]))
    r = render_scene(Scene(cam, planes=[ground]), 40, 60)
    assert r.sky[0].all() and not r.sky[-1].any()  # horizon inside the image
    vv, uu = np.nonzero(~r.sky)
    z = r.depth[vv, uu].astype(np.float64)
    pc = np.stack([(uu - cam.cx) / cam.fx * z, (vv - cam.cy) / cam.fy * z, z])
    np.testing.assert_allclose((cam.rotation @ pc)[1], 1.6, rtol=1e-5)


def test_occlusion_takes_the_nearest_surface():
    h = w = 15
    near = Sphere(np.array([0.0, 0.0, 4.0]), 0.5)  # angular radius 7 deg; the corner ray is 13 deg off-axis
    far = Box(np.array([0.0, 0.0, 9.0]), np.array([3.0, 3.0, 1.0]))
    r = render_scene(Scene(_cam(h, w), spheres=[near], boxes=[far]), h, w)
    assert r.depth[7, 7] == pytest.approx(3.5, abs=1e-6)
    assert r.depth[0, 0] == pytest.approx(8.0, abs=1e-6)


def test_determinism_by_seed_and_index():
    a = SyntheticDataset(length=6, size=(48, 64), seed=3)
    b = SyntheticDataset(length=6, size=(48, 64), seed=3)
    for i in (0, 5):
        sa, sb = a[i], b[i]
        assert sa.image.equal(sb.image) and sa.depth.equal(sb.depth) and sa.valid.equal(sb.valid)
        assert sa.intrinsics == sb.intrinsics
    c = SyntheticDataset(length=6, size=(48, 64), seed=4)
    assert not a[0].image.equal(c[0].image)
    assert not a[0].depth.equal(a[1].depth)


def test_sample_contract_and_sky_policy():
    ds = DATASETS.get("synthetic")(length=8, size=(40, 52), seed=0, scene_types=["outdoor"])
    s = ds[0]
    assert (
        s.image.shape == (3, 40, 52)
        and s.depth.shape == (1, 40, 52)
        and s.valid.dtype.is_floating_point is False
    )
    assert s.depth_space is DepthSpace.DEPTH_METRIC and s.source == "synthetic"
    assert s.intrinsics.cx == pytest.approx(25.5) and s.extra["scene_type"] == "outdoor"
    sky = ~s.valid[0]
    assert sky.any() and (s.depth[0][sky] == 0).all()
    assert float(s.depth[s.valid].min()) > 0 and float(s.depth[s.valid].max()) < 65.0
    far = SyntheticDataset(length=8, size=(40, 52), seed=0, scene_types=["outdoor"], sky_policy="far_plane")[
        0
    ]
    assert far.valid.all() and (far.depth[0][sky] == 100.0).all()
    indoor = SyntheticDataset(length=3, size=(40, 52), scene_types="indoor")
    assert all(indoor[i].valid.all() for i in range(3))  # closed rooms: every pixel valid
    d, v = indoor.load_depth(1)  # the filtering worker's entry point
    assert d.shape == (40, 52) and v.all()


def test_options_are_validated():
    with pytest.raises(ValueError, match="unknown option"):
        SyntheticDataset(lenght=3)
    with pytest.raises(ValueError, match="generated"):
        SyntheticDataset("/some/root")
    with pytest.raises(ValueError, match="scene_types"):
        SyntheticDataset(scene_types=["forest"])
    with pytest.raises(ValueError, match="fov_deg"):
        SyntheticDataset(fov_deg=(60, 40))
    with pytest.raises(IndexError):
        SyntheticDataset(length=2)[2]


def test_render_speed_256():
    ds = SyntheticDataset(length=3, size=(256, 256), seed=0)
    times = []
    for i in range(3):
        t = time.perf_counter()
        ds.render(i)
        times.append(time.perf_counter() - t)
    # About 40 ms on an idle core; the bound only catches order-of-magnitude regressions on a busy CI machine.
    assert sorted(times)[1] < 1.0


def test_write_to_folder_format_and_read_back(tmp_path):
    lst = write_synthetic_dataset(tmp_path / "syn", 3, size=(24, 32), seed=7)
    assert lst.read_text().splitlines() == [f"rgb/{i:06d}.png depth/{i:06d}.png" for i in range(3)]
    folder = FolderDataset(tmp_path / "syn")  # everything from dataset.json
    gen = SyntheticDataset(length=3, size=(24, 32), seed=7)
    for i in range(3):
        a, b = folder[i], gen[i]
        assert a.image.equal(b.image)
        assert a.valid.equal(b.valid)
        np.testing.assert_allclose(a.depth.numpy(), b.depth.numpy(), atol=5e-4 + 1e-6)
        assert a.intrinsics == b.intrinsics
    with pytest.raises(FileExistsError):
        write_synthetic_dataset(tmp_path / "syn", 3, size=(24, 32), seed=7)
    write_synthetic_dataset(tmp_path / "syn", 2, size=(24, 32), seed=8, overwrite=True)
    assert len(FolderDataset(tmp_path / "syn")) == 2
