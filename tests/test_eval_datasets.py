"""Evaluation-set readers on tiny files written in the true (Marigold) layouts, from folders and from tars.

The ``write_*`` helpers are also used by the other ``test_eval_*`` files.
"""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anydepth.data.datasets.diode import DIODEDataset
from anydepth.data.datasets.eth3d import ETH3DDataset
from anydepth.data.datasets.kitti import KITTIEigenDataset
from anydepth.data.datasets.nyuv2 import NYUv2Dataset
from anydepth.data.datasets.scannet import ScanNetDataset
from anydepth.registry import DATASETS


def _rgb(hw: tuple[int, int], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(*hw, 3), dtype=np.uint8)


def _save_rgb(path: Path, hw: tuple[int, int], seed: int) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = _rgb(hw, seed)
    Image.fromarray(img).save(path)
    return img


def _save_png16(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr.astype(np.uint16)).save(path)


def _depth_m(hw: tuple[int, int], seed: int, lo: float, hi: float, holes: float = 0.2) -> np.ndarray:
    rng = np.random.default_rng(seed + 100)
    d = rng.uniform(lo, hi, size=hw)
    d[rng.random(hw) < holes] = 0.0
    return d


def write_nyu(
    root: Path, n: int = 2, hw: tuple[int, int] = (48, 64), list_file: bool = True
) -> list[list[str]]:
    """NYUv2 test frames: ``test/<scene>/{rgb,depth,filled}_NNNN.png``; depth uint16 mm."""
    rows = []
    for i in range(n):
        scene = f"kitchen_{i % 2:04d}"
        r = f"test/{scene}/rgb_{i + 1:04d}.png"
        _save_rgb(root / r, hw, i)
        mm = np.round(_depth_m(hw, i, 0.5, 9.0) * 1000)
        mm[0, 0] = 12000  # 12 m: beyond the 10 m range -> invalid
        _save_png16(root / r.replace("rgb_", "depth_"), mm)
        _save_png16(root / r.replace("rgb_", "filled_"), mm)
        rows.append([r, r.replace("rgb_", "depth_"), r.replace("rgb_", "filled_")])
    # a training frame that must not be picked up by the scan
    _save_rgb(root / "train/bedroom_0001/rgb_0001.png", hw, 99)
    if list_file:
        (root / "filename_list_test.txt").write_text("\n".join(" ".join(r) for r in rows) + "\n")
    return rows


def write_kitti(root: Path, hw: tuple[int, int] = (375, 1242), list_file: bool = True) -> list[list[str]]:
    """Two KITTI frames with annotated GT and one without (listed as ``None``)."""
    rows = []
    for i, fid in enumerate(["0000000005", "0000000007", "0000000009"]):
        drive = "2011_09_26_drive_0002_sync"
        rgb = f"2011_09_26/{drive}/image_02/data/{fid}.png"
        _save_rgb(root / rgb, hw, i)
        if i < 2:
            gt = f"{drive}/proj_depth/groundtruth/image_02/{fid}.png"
            v = np.round(_depth_m(hw, i, 2.0, 79.0, holes=0.9) * 256)  # sparse, like projected LiDAR
            _save_png16(root / gt, v)
            rows.append([rgb, gt, "721.5377"])
        else:
            rows.append([rgb, "None", "721.5377"])
    if list_file:
        (root / "eigen_test_files_with_gt.txt").write_text("\n".join(" ".join(r) for r in rows) + "\n")
    return rows


def write_eth3d(root: Path, hw: tuple[int, int] = (8, 12)) -> list[list[str]]:
    """ETH3D: JPG RGB and raw float32 depth with a ``.JPG`` name; +inf where no GT."""
    rows = []
    for i, (scene, img) in enumerate([("office", "DSC_0219.JPG"), ("pipes", "DSC_0001.JPG")]):
        rgb = f"rgb/{scene}/images/dslr_images/{img}"
        dep = f"depth/{scene}_dslr_depth/{scene}/ground_truth_depth/dslr_images/{img}"
        _save_rgb(root / rgb, hw, i)
        d = _depth_m(hw, i, 0.5, 30.0).astype("<f4")
        d[d == 0] = np.inf
        (root / dep).parent.mkdir(parents=True, exist_ok=True)
        (root / dep).write_bytes(d.tobytes())
        rows.append([rgb, dep])
    return rows


def write_scannet(root: Path, hw: tuple[int, int] = (48, 64)) -> list[list[str]]:
    rows = []
    for i, (scene, fid) in enumerate([("scene0406_02", "000300"), ("scene0088_02", "001100")]):
        rgb = f"{scene}/color/{fid}.jpg"
        _save_rgb(root / rgb, hw, i)
        _save_png16(root / f"{scene}/depth/{fid}.png", np.round(_depth_m(hw, i, 0.5, 9.0) * 1000))
        rows.append([rgb, f"{scene}/depth/{fid}.png"])
    return rows


def write_diode(root: Path, hw: tuple[int, int] = (48, 64)) -> list[list[str]]:
    rows = []
    for i, (kind, sid) in enumerate(
        [("indoors", "00021_00189_indoors_200_010"), ("outdoor", "00022_00196_outdoor_350_020")]
    ):
        stem = f"{kind}/scene_000{21 + i}/scan_00{189 + i}/{sid}"
        _save_rgb(root / f"{stem}.png", hw, i)
        d = _depth_m(hw, i, 0.7, 300.0).astype(np.float32)
        mask = (d > 0).astype(np.float32)
        mask[0, :3] = 0.0  # masked although the depth is positive
        d[1, 1] = 0.0
        mask[1, 1] = 1.0  # mask says valid, depth is 0 -> still excluded (non-positive)
        np.save(root / f"{stem}_depth.npy", d[..., None])
        np.save(root / f"{stem}_depth_mask.npy", mask)
        rows.append([f"{stem}.png", f"{stem}_depth.npy", f"{stem}_depth_mask.npy"])
    return rows


def make_tar(src: Path, tar_path: Path) -> Path:
    """Pack ``src`` like Marigold's tars (member names ``./<relative path>``)."""
    tar_path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tar_path, "w") as tf:
        for p in sorted(src.rglob("*")):
            if p.is_file():
                tf.add(p, arcname="./" + p.relative_to(src).as_posix())
    return tar_path


# ------------------------------------------------------------------------------------------------------------
def test_readers_are_registered() -> None:
    for name in ("nyuv2", "kitti", "eth3d", "scannet", "diode"):
        assert name in DATASETS


def test_nyu_reader_list_and_scan(tmp_path: Path) -> None:
    rows = write_nyu(tmp_path)
    ds = NYUv2Dataset(tmp_path)
    assert ds.split_source.startswith("list:") and ds.split_sha256 is not None
    assert len(ds) == 2 and ds.rows == rows
    img = ds.load_image(0)
    assert img.shape == (48, 64, 3) and img.dtype == np.uint8
    assert np.array_equal(img, _rgb((48, 64), 0))
    depth, valid = ds.load_depth(0)
    raw = np.asarray(Image.open(tmp_path / rows[0][1]))
    assert depth.dtype == np.float32
    assert depth[valid][0] == np.float32(raw[valid][0] / 1000.0)
    assert not valid[0, 0] and depth[0, 0] == 0.0  # 12 m is outside (1e-3, 10)
    assert np.array_equal(valid, (raw > 1) & (raw < 10000))
    (tmp_path / "filename_list_test.txt").unlink()
    scanned = NYUv2Dataset(tmp_path)
    assert scanned.split_source.startswith("scan:") and sorted(scanned.rows) == sorted(rows)
    s = scanned.load(0)
    assert tuple(s.image.shape) == (3, 48, 64) and s.source == "nyuv2"


def test_kitti_reader_drops_rows_without_gt(tmp_path: Path) -> None:
    write_kitti(tmp_path, hw=(20, 30))
    ds = KITTIEigenDataset(tmp_path)
    assert len(ds) == 2 and ds.extra(0) == {"focal": 721.5377}
    depth, valid = ds.load_depth(1)
    raw = np.asarray(Image.open(tmp_path / ds.pair(1)[1]))
    np.testing.assert_array_equal(depth, np.where(valid, raw / 256.0, 0).astype(np.float32))
    (tmp_path / "eigen_test_files_with_gt.txt").unlink()
    scanned = KITTIEigenDataset(tmp_path)
    assert [r[:2] for r in scanned.rows] == sorted([r[:2] for r in ds.rows])


def test_eth3d_raw_float_depth_with_inf(tmp_path: Path) -> None:
    rows = write_eth3d(tmp_path)
    ds = ETH3DDataset(tmp_path, depth_hw=(8, 12))
    assert ds.split_source.startswith("scan:") and len(ds) == 2
    raw = np.frombuffer((tmp_path / rows[0][1]).read_bytes(), dtype="<f4").reshape(8, 12)
    by_name = {ds.pair(i)[0]: i for i in range(len(ds))}
    depth, valid = ds.load_depth(by_name[rows[0][0]])
    assert np.array_equal(valid, np.isfinite(raw))
    np.testing.assert_array_equal(depth[valid], raw[np.isfinite(raw)])
    assert (depth[~valid] == 0).all()
    assert ds.load_image(0).shape == (8, 12, 3)
    with pytest.raises(ValueError, match=r"expected raw float32 depth of 4032x6048"):
        ETH3DDataset(tmp_path).load_depth(0)  # default full-size raster: the tiny file is rejected by size


def test_scannet_reader(tmp_path: Path) -> None:
    write_scannet(tmp_path)
    ds = ScanNetDataset(tmp_path)
    assert len(ds) == 2 and ds.rows[0][0] == "scene0088_02/color/001100.jpg"  # scanned, sorted
    depth, valid = ds.load_depth(0)
    assert depth.shape == (48, 64) and valid.any() and (depth[valid] < 10).all()


def test_diode_mask_file_only_and_subsets(tmp_path: Path) -> None:
    rows = write_diode(tmp_path)
    ds = DIODEDataset(tmp_path)
    assert len(ds) == 2
    depth, valid = ds.load_depth(0)
    mask = np.load(tmp_path / rows[0][2]).astype(bool)
    d = np.load(tmp_path / rows[0][1])[..., 0]
    assert np.array_equal(valid, mask & (d > 0))
    assert not valid[0, :3].any() and not valid[1, 1]
    assert (
        depth[valid] > 250
    ).any()  # no range mask: far outdoor values kept (the scanner range only clips preds)
    outdoor = DIODEDataset(tmp_path, subset="outdoor")
    assert [r[0].split("/")[0] for r in outdoor.rows] == ["outdoor"]
    assert (ds.expected_num_samples, outdoor.expected_num_samples) == (771, 446)
    with pytest.raises(ValueError, match="subset"):
        DIODEDataset(tmp_path, subset="garden")


def test_reading_directly_from_tar(tmp_path: Path) -> None:
    src = tmp_path / "extracted"
    rows = write_nyu(src, list_file=False)
    tar = make_tar(src, tmp_path / "nyuv2" / "nyu_labeled_extracted.tar")
    direct = NYUv2Dataset(tar)
    assert direct.source.kind == "tar" and len(direct) == 2
    folder = NYUv2Dataset(tmp_path / "nyuv2")  # a folder holding only the tar -> the tar is used
    assert folder.source.kind == "tar"
    (tmp_path / "nyuv2" / "filename_list_test.txt").write_text("\n".join(" ".join(r) for r in rows))
    listed = NYUv2Dataset(tmp_path / "nyuv2")
    assert listed.split_source.startswith("list:")
    ref = NYUv2Dataset(src)
    for i in range(2):
        j = [r[0] for r in ref.rows].index(listed.pair(i)[0])
        assert np.array_equal(listed.load_image(i), ref.load_image(j))
        for a, b in zip(listed.load_depth(i), ref.load_depth(j), strict=True):
            assert np.array_equal(a, b)


def test_missing_and_corrupt_files_are_named(tmp_path: Path) -> None:
    rows = write_scannet(tmp_path)
    ds = ScanNetDataset(tmp_path)
    (tmp_path / rows[0][1]).unlink()
    i = [r[0] for r in ds.rows].index(rows[0][0])
    with pytest.raises(FileNotFoundError, match=rows[0][1].replace("/", ".")):
        ds.load_depth(i)
    (tmp_path / rows[1][0]).write_bytes(b"not a jpeg")
    j = [r[0] for r in ds.rows].index(rows[1][0])
    with pytest.raises(ValueError, match="cannot decode image .*001100.jpg"):
        ds.load_image(j)


def test_empty_layout_and_missing_root(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no samples found"):
        NYUv2Dataset(tmp_path)
    with pytest.raises(FileNotFoundError, match="not found"):
        NYUv2Dataset(tmp_path / "nope")
