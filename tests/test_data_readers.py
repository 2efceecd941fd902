"""Training-set readers on tiny files written in the true formats and native directory layouts."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

import anydepth.data  # noqa: F401  (registers readers)
from anydepth.data import io
from anydepth.data.datasets.blendedmvs import BlendedMVSDataset
from anydepth.data.datasets.folder import FolderDataset
from anydepth.data.datasets.hypersim import HypersimDataset, hypersim_tonemap
from anydepth.data.datasets.irs import IRSDataset
from anydepth.data.datasets.tartanair import TartanAirDataset
from anydepth.data.datasets.vkitti2 import VKITTI2Dataset
from anydepth.registry import DATASETS
from anydepth.types import DepthSpace


def _rgb(path: Path, h: int, w: int, seed: int = 0) -> None:
    io.write_image(path, np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def _list(path: Path, rows: list[str]) -> Path:
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_readers_are_registered():
    for name, cls in [
        ("hypersim", HypersimDataset),
        ("vkitti2", VKITTI2Dataset),
        ("blendedmvs", BlendedMVSDataset),
        ("irs", IRSDataset),
        ("tartanair", TartanAirDataset),
        ("folder", FolderDataset),
    ]:
        assert DATASETS.get(name) is cls


# -- Hypersim ----------------------------------------------------------------------------------------------------


def _hypersim_tree(root: Path, dist: np.ndarray) -> tuple[str, str]:
    h5py = pytest.importorskip("h5py")
    h, w = dist.shape
    rgb = "ai_001_001/images/scene_cam_00_final_preview/frame.0000.tonemap.jpg"
    dep = "ai_001_001/images/scene_cam_00_geometry_hdf5/frame.0000.depth_meters.hdf5"
    _rgb(root / rgb, h, w)
    (root / dep).parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(root / dep, "w") as f:
        f.create_dataset("dataset", data=dist.astype(np.float16))
    return rgb, dep


def test_hypersim_distance_to_planar_hand_computed(tmp_path):
    h, w = 12, 16
    dist = np.full((h, w), 10.0)
    dist[5, 7] = np.nan
    rgb, dep = _hypersim_tree(tmp_path, dist)
    ds = HypersimDataset(tmp_path, split_file=_list(tmp_path / "train.txt", [f"{rgb} {dep}"]))
    s = ds[0]
    # Pixel (u=0, v=0): f = 886.81 * 16 / 1024 = 13.8564..., ray (0 - 8 + 0.5, 0 - 6 + 0.5, f) = (-7.5, -5.5, f).
    f = 886.81 * 16 / 1024
    z00 = 10.0 * f / math.sqrt(7.5**2 + 5.5**2 + f**2)
    assert z00 == pytest.approx(8.30297, abs=1e-4)
    assert float(s.depth[0, 0, 0]) == pytest.approx(z00, rel=1e-5)
    # Pixel (u=8, v=6) is half a pixel off-axis in both directions.
    z86 = 10.0 * f / math.sqrt(0.5**2 + 0.5**2 + f**2)
    assert float(s.depth[0, 6, 8]) == pytest.approx(z86, rel=1e-5)
    assert not bool(s.valid[0, 5, 7]) and float(s.depth[0, 5, 7]) == 0.0  # NaN -> invalid
    assert int(s.valid.sum()) == h * w - 1
    assert s.depth_space is DepthSpace.DEPTH_METRIC and s.source == "hypersim"
    k = s.intrinsics
    assert k.fx == pytest.approx(f) and (k.cx, k.cy) == (7.5, 5.5)
    # planar=False keeps the ray distance
    raw = HypersimDataset(tmp_path, pairs=[(rgb, dep)], planar=False)[0]
    assert float(raw.depth[0, 0, 0]) == pytest.approx(10.0)


def test_hypersim_png_variant_and_hdr_tonemap(tmp_path):
    h5py = pytest.importorskip("h5py")
    io.write_png16(
        tmp_path / "depth_plane_cam_00_fr0000.png", np.array([[0, 1500], [2000, 65535]], np.uint16)
    )
    _rgb(tmp_path / "rgb_cam_00_fr0000.png", 2, 2)
    ds = HypersimDataset(tmp_path, pairs=[("rgb_cam_00_fr0000.png", "depth_plane_cam_00_fr0000.png")])
    s = ds[0]
    np.testing.assert_allclose(s.depth[0].numpy(), [[0, 1.5], [2.0, 65.535]], rtol=1e-6)
    np.testing.assert_array_equal(s.valid[0].numpy(), [[False, True], [True, True]])
    hdr = np.random.default_rng(0).gamma(2.0, 0.5, (2, 2, 3)).astype(np.float16)
    with h5py.File(tmp_path / "frame.0000.color.hdf5", "w") as f:
        f.create_dataset("dataset", data=hdr)
    s2 = HypersimDataset(tmp_path, pairs=[("frame.0000.color.hdf5", "depth_plane_cam_00_fr0000.png")])[0]
    np.testing.assert_allclose(s2.image.numpy(), hypersim_tonemap(hdr).transpose(2, 0, 1) / 255.0, atol=1e-6)


def test_tonemap_maps_90th_percentile_to_0_8():
    lin = np.random.default_rng(1).random((50, 60, 3)) * 3.0
    out = hypersim_tonemap(lin)
    lum = 0.3 * lin[..., 0] + 0.59 * lin[..., 1] + 0.11 * lin[..., 2]
    p90 = np.percentile(lum, 90)
    grey = np.full((1, 1, 3), p90)
    # a pixel whose three channels equal the 90th-percentile brightness maps to 0.8 -> 204
    assert hypersim_tonemap(np.concatenate([lin.reshape(-1, 3), grey.reshape(-1, 3)])[None])[0, -1, 0] == 204
    assert out.dtype == np.uint8


# -- Virtual KITTI 2 ------------------------------------------------------------------------------------------------


def _vkitti_tree(root: Path, raw: np.ndarray) -> tuple[str, str]:
    rgb = "Scene01/clone/frames/rgb/Camera_0/rgb_00000.jpg"
    dep = "Scene01/clone/frames/depth/Camera_0/depth_00000.png"
    _rgb(root / rgb, *raw.shape)
    io.write_png16(root / dep, raw.astype(np.uint16))
    return rgb, dep


def test_vkitti2_released_list_paths_and_sky_policies(tmp_path):
    raw = np.array(
        [[1000, 65535, 0], [20000, 250, 9999]], dtype=np.uint16
    )  # 10 m, sky, 0, 200 m, 2.5 m, 99.99
    rgb, dep = _vkitti_tree(tmp_path / "vkitti2", raw)
    # The paper's list holds absolute paths from the authors' machine.
    foreign = "/root/autodl-tmp/datasets/vkitti2/"
    lst = _list(tmp_path / "train.txt", [f"{foreign}{rgb} {foreign}{dep}"])
    s = VKITTI2Dataset(tmp_path / "vkitti2", split_file=lst)[0]
    np.testing.assert_allclose(s.depth[0].numpy(), [[10, 0, 0], [0, 2.5, 99.99]], rtol=1e-6)
    np.testing.assert_array_equal(s.valid[0].numpy(), [[True, False, False], [False, True, True]])

    far = VKITTI2Dataset(tmp_path / "vkitti2", split_file=lst, sky_policy="far_plane")[0]
    assert float(far.depth[0, 0, 1]) == 100.0 and bool(far.valid[0, 0, 1])
    assert not bool(far.valid[0, 1, 0])  # 200 m is beyond the far plane, not sky
    mx = VKITTI2Dataset(tmp_path / "vkitti2", split_file=lst, sky_policy="max_nonsky")[0]
    assert float(mx.depth[0, 0, 1]) == pytest.approx(99.99) and bool(mx.valid[0, 0, 1])
    wide = VKITTI2Dataset(tmp_path / "vkitti2", split_file=lst, max_depth=300.0)[0]
    assert float(wide.depth[0, 1, 0]) == pytest.approx(200.0)

    # explicit prefix works too, and intrinsics scale with the image size
    ex = VKITTI2Dataset(tmp_path / "vkitti2", split_file=lst, path_prefix=foreign)
    k = ex[0].intrinsics
    assert k.fx == pytest.approx(725.0087 * 3 / 1242) and k.fy == pytest.approx(725.0087 * 2 / 375)
    assert VKITTI2Dataset.options()["sky_policy"] == "invalid"


def test_vkitti2_native_intrinsics_and_bad_options(tmp_path):
    rgb, dep = _vkitti_tree(tmp_path, np.full((375, 1242), 1234, np.uint16))
    ds = VKITTI2Dataset(tmp_path, pairs=[(rgb, dep)])
    k = ds[0].intrinsics
    assert (k.fx, k.fy, k.cx, k.cy) == (725.0087, 725.0087, 620.5, 187.0)
    with pytest.raises(ValueError, match="unknown option.*valid options"):
        VKITTI2Dataset(tmp_path, pairs=[(rgb, dep)], sky="far")
    with pytest.raises(ValueError, match="sky_policy"):
        VKITTI2Dataset(tmp_path, pairs=[(rgb, dep)], sky_policy="black")
    with pytest.raises(ValueError, match="root"):
        VKITTI2Dataset(None, pairs=[(rgb, dep)])


def test_missing_and_corrupt_files_name_the_path(tmp_path):
    rgb, dep = _vkitti_tree(tmp_path, np.full((4, 5), 100, np.uint16))
    ds = VKITTI2Dataset(tmp_path, pairs=[(rgb, "Scene01/clone/frames/depth/Camera_0/depth_00001.png")])
    with pytest.raises(FileNotFoundError, match="depth_00001.png"):
        ds[0]
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(ValueError, match="bad.png"):
        VKITTI2Dataset(tmp_path, pairs=[(rgb, "bad.png")])[0]
    with pytest.raises(FileNotFoundError, match="no suffix"):
        VKITTI2Dataset(tmp_path, pairs=[("/elsewhere/x/rgb.jpg", "/elsewhere/x/d.png")])[0]
    bad_list = _list(tmp_path / "one_col.txt", [rgb])
    with pytest.raises(ValueError, match="one_col.txt:1"):
        VKITTI2Dataset(tmp_path, split_file=bad_list)


# -- BlendedMVS ------------------------------------------------------------------------------------------------------

CAM_TXT = """extrinsic
0.970263 0.00747983 0.241939 -191.02
-0.0147429 0.999493 0.0282234 3.28832
-0.241605 -0.030951 0.969881 22.5401
0.0 0.0 0.0 1.0

intrinsic
575.7 0.0 383.5
0.0 576.1 287.25
0.0 0.0 1.0

418.56 0.728578 192 558.168
"""


def test_blendedmvs_pfm_cams_and_affine_space(tmp_path):
    pid = "5a3ca9cb270f0e3f14d0eddb"
    rgb, dep = f"{pid}/blended_images/00000003.jpg", f"{pid}/rendered_depth_maps/00000003.pfm"
    depth = np.array([[450.5, 0.0, 600.0], [1000.0, 480.25, 0.0]], np.float32)
    _rgb(tmp_path / rgb, 2, 3)
    io.write_pfm(tmp_path / dep, depth)
    (tmp_path / pid / "cams").mkdir()
    (tmp_path / pid / "cams" / "00000003_cam.txt").write_text(CAM_TXT)
    ds = BlendedMVSDataset(tmp_path, split_file=_list(tmp_path / "l.txt", [f"{rgb} {dep}"]))
    s = ds[0]
    assert s.depth_space is DepthSpace.DEPTH_AFFINE_INVARIANT
    np.testing.assert_array_equal(s.depth[0].numpy(), depth)  # no metric far plane: 1000 stays valid
    np.testing.assert_array_equal(s.valid[0].numpy(), depth > 0)
    k = s.intrinsics
    assert (k.fx, k.fy, k.cx, k.cy) == (575.7, 576.1, 383.5, 287.25)
    (tmp_path / pid / "cams" / "00000003_cam.txt").unlink()
    with pytest.raises(FileNotFoundError, match="00000003_cam.txt"):
        ds[0]


# -- IRS -------------------------------------------------------------------------------------------------------------


def test_irs_disparity_to_depth_with_official_list(tmp_path):
    pytest.importorskip("OpenEXR")
    import OpenEXR

    seq = "IRSDataset/Home/ArchVizInterior03Data"
    disp = np.array([[48.0, 0.96, 0.0], [-1.0, np.nan, 0.24]], np.float32)
    _rgb(tmp_path / seq / "l_1.png", 2, 3)
    _rgb(tmp_path / seq / "r_1.png", 2, 3, seed=1)
    with OpenEXR.File({"compression": OpenEXR.ZIP_COMPRESSION}, {"R": disp, "G": disp, "B": disp}) as f:
        f.write(str(tmp_path / seq / "d_1.exr"))
    # Official list format: left right disparity, trailing tab.
    lst = _list(tmp_path / "IRS_TEST.list", [f"{seq}/l_1.png {seq}/r_1.png {seq}/d_1.exr\t"])
    s = IRSDataset(tmp_path, split_file=lst)[0]
    # depth = 48 / disp: 48 px -> 1 m, 0.96 px -> 50 m, 0.24 px -> 200 m (beyond the 100 m far plane)
    np.testing.assert_allclose(s.depth[0].numpy(), [[1.0, 50.0, 0.0], [0.0, 0.0, 0.0]], rtol=1e-6)
    np.testing.assert_array_equal(s.valid[0].numpy(), [[True, True, False], [False, False, False]])
    k = s.intrinsics
    assert k.fx == pytest.approx(480.0 * 3 / 960) and k.cx == 1.0
    # the image is the LEFT view
    np.testing.assert_array_equal(
        (s.image * 255).round().byte().numpy(), io.read_image(tmp_path / seq / "l_1.png").transpose(2, 0, 1)
    )


# -- TartanAir -------------------------------------------------------------------------------------------------------


def test_tartanair_npy_sky_and_intrinsics(tmp_path):
    rgb = "abandonedfactory/Easy/P000/image_left/000000_left.png"
    dep = "abandonedfactory/Easy/P000/depth_left/000000_left_depth.npy"
    _rgb(tmp_path / rgb, 2, 2)
    (tmp_path / dep).parent.mkdir(parents=True)
    np.save(tmp_path / dep, np.array([[5.0, 10000.0], [150.0, 2.0]], np.float32))
    s = TartanAirDataset(tmp_path, pairs=[(rgb, dep)])[0]
    np.testing.assert_allclose(s.depth[0].numpy(), [[5, 0], [0, 2]])
    far = TartanAirDataset(tmp_path, pairs=[(rgb, dep)], sky_policy="far_plane")[0]
    np.testing.assert_allclose(far.depth[0].numpy(), [[5, 100], [0, 2]])  # 150 m is not sky: invalid
    np.testing.assert_array_equal(far.valid[0].numpy(), [[True, True], [False, True]])
    k = s.intrinsics
    assert k.fx == pytest.approx(320 * 2 / 640)


# -- folder ----------------------------------------------------------------------------------------------------------


def test_folder_directory_scan_formats_and_intrinsics(tmp_path):
    pytest.importorskip("OpenEXR")
    import OpenEXR

    d = np.array([[1.0, 2.0], [0.0, 4.0]], np.float32)
    for stem, writer in [
        ("a", lambda p: io.write_png16(p.with_suffix(".png"), (d * 1000).astype(np.uint16))),
        ("b", lambda p: np.save(p.with_suffix(".npy"), d)),
        ("c", lambda p: io.write_pfm(p.with_suffix(".pfm"), d)),
    ]:
        _rgb(tmp_path / "rgb" / f"{stem}.jpg", 2, 2)
        (tmp_path / "depth").mkdir(exist_ok=True)
        writer(tmp_path / "depth" / f"{stem}_depth")
    _rgb(tmp_path / "rgb" / "d.jpg", 2, 2)
    with OpenEXR.File({"compression": OpenEXR.ZIP_COMPRESSION}, {"Z": d}) as f:
        f.write(str(tmp_path / "depth" / "d_depth.exr"))
    _rgb(tmp_path / "rgb" / "orphan.jpg", 2, 2)  # no depth: skipped
    cams = {"fx": 100.0, "fy": 101.0, "cx": 0.5, "cy": 0.5}
    (tmp_path / "K.json").write_text(json.dumps(cams))
    ds = FolderDataset(tmp_path, depth_suffix="_depth", depth_scale=1000.0, intrinsics="K.json")
    assert [ds.pair(i)[0] for i in range(len(ds))] == ["rgb/a.jpg", "rgb/b.jpg", "rgb/c.jpg", "rgb/d.jpg"]
    for i in range(len(ds)):
        s = ds[i]
        np.testing.assert_allclose(s.depth[0].numpy(), d)
        np.testing.assert_array_equal(s.valid[0].numpy(), d > 0)
        assert s.intrinsics.to_dict() == cams
    with pytest.raises(ValueError, match="scale"):
        FolderDataset(tmp_path, depth_suffix="_depth")[0]
    with pytest.raises(ValueError, match="depth_space"):
        FolderDataset(tmp_path, depth_suffix="_depth", depth_space="inverse")


def test_folder_list_with_per_sample_scale(tmp_path):
    _rgb(tmp_path / "x.png", 2, 2)
    io.write_png16(tmp_path / "x_d.png", np.array([[256, 512], [0, 1024]], np.uint16))
    lst = _list(tmp_path / "list.txt", ["x.png x_d.png 256", "x.png x_d.png 1000"])
    ds = FolderDataset(tmp_path, split_file=lst, intrinsics={"x.png": {"fx": 5, "fy": 5, "cx": 1, "cy": 1}})
    np.testing.assert_allclose(ds[0].depth[0].numpy(), [[1, 2], [0, 4]])
    np.testing.assert_allclose(ds[1].depth[0].numpy(), [[0.256, 0.512], [0, 1.024]], rtol=1e-6)
    assert ds[0].intrinsics.fx == 5.0


def test_folder_reads_real_fixture_frames(rgbd_fixtures: Path):
    manifest = json.loads((rgbd_fixtures / "manifest.json").read_text())
    by_scale: dict[float, list[dict]] = {}
    for s in manifest["samples"]:
        by_scale.setdefault(float(s["depth_scale"]), []).append(s)
    n = 0
    for scale, entries in by_scale.items():
        ds = FolderDataset(
            rgbd_fixtures,
            pairs=[(e["rgb"], e["depth"]) for e in entries],
            depth_scale=scale,
            intrinsics={e["rgb"]: e["intrinsics"] for e in entries},
        )
        for i, e in enumerate(entries):
            depth, valid = ds.load_depth(i)  # the numpy path the filtering worker uses
            s = ds[i]
            assert tuple(s.image.shape) == (3, e["height"], e["width"]) and depth.shape == (
                e["height"],
                e["width"],
            )
            assert s.intrinsics.to_dict() == pytest.approx(e["intrinsics"])
            assert np.array_equal(s.valid[0].numpy(), valid) and np.array_equal(s.depth[0].numpy(), depth)
            v = depth[valid]
            if "valid_pixels" in e:
                assert int(valid.sum()) == e["valid_pixels"]
            assert float(valid.mean()) == pytest.approx(e["valid_fraction"], abs=1e-5)
            assert float(v.min()) == pytest.approx(e["valid_min_m"], abs=1e-4)
            assert float(v.max()) == pytest.approx(e["valid_max_m"], abs=1e-4)
            assert float(np.median(v)) == pytest.approx(e["valid_median_m"], abs=2e-3)
            n += 1
    assert n == len(manifest["samples"])
