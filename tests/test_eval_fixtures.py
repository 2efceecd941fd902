"""End to end on real frames: the NYU and KITTI fixtures laid out (in tmp_path) as the NYUv2 and KITTI benchmarks.

(a) predictions derived from the ground truth (affine disparity, resp. affine depth) score perfectly after
alignment; (b) the tiny ``sdt_test`` model runs through the model adapter (processing resolution, restore).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anydepth.eval.benchmarks import apply_crop, kb_crop_box, open_dataset
from anydepth.eval.evaluate import ModelPredictor, PrecomputedPredictions, evaluate

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "rgbd"
pytestmark = pytest.mark.skipif(
    not (FIXTURES / "manifest.json").is_file(), reason="RGB-D fixtures not available"
)


def _samples(dataset: str) -> list[dict]:
    return [
        s for s in json.loads((FIXTURES / "manifest.json").read_text())["samples"] if s["dataset"] == dataset
    ]


@pytest.fixture(scope="module")
def bench_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("benchmarks")
    nyu_rows = []
    for i, s in enumerate(_samples("nyu")):
        d = root / "nyuv2" / "test" / "fixture_0001"
        d.mkdir(parents=True, exist_ok=True)
        Image.open(FIXTURES / s["rgb"]).convert("RGB").save(
            d / f"rgb_{i:04d}.png"
        )  # Marigold's tar holds PNGs
        shutil.copy(FIXTURES / s["depth"], d / f"depth_{i:04d}.png")
        rel = f"test/fixture_0001/rgb_{i:04d}.png"
        nyu_rows.append(f"{rel} {rel.replace('rgb_', 'depth_')} {rel.replace('rgb_', 'filled_')}")
    (root / "nyuv2" / "filename_list_test.txt").write_text("\n".join(nyu_rows) + "\n")
    kitti_rows = []
    for s in _samples("kitti"):
        fid = Path(s["rgb"]).stem
        rgb = f"2011_09_26/2011_09_26_drive_0001_sync/image_02/data/{fid}.png"
        gt = f"2011_09_26_drive_0001_sync/proj_depth/groundtruth/image_02/{fid}.png"
        for rel, src in ((rgb, s["rgb"]), (gt, s["depth"])):
            (root / "kitti" / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(FIXTURES / src, root / "kitti" / rel)
        kitti_rows.append(f"{rgb} {gt} 721.5377")
    kitti_rows.append("2011_09_26/2011_09_26_drive_0001_sync/image_02/data/0000000999.png None 721.5377")
    (root / "kitti" / "eigen_test_files_with_gt.txt").write_text("\n".join(kitti_rows) + "\n")
    return root


def _write_gt_predictions(root: Path, bench: str, out: Path, space: str) -> None:
    ds = open_dataset(bench, root)
    for i in range(len(ds)):
        gt, valid = ds.load_depth(i)
        box = kb_crop_box(gt.shape) if bench == "kitti" else None
        gt, valid = apply_crop(gt, box), apply_crop(valid, box)
        if space == "disparity":
            pred = np.where(valid, 0.8 / np.where(valid, gt, 1.0) + 0.03, 0.0)  # affine disparity, 0 on holes
        else:
            pred = np.where(valid, 0.25 * gt - 0.4, 7.0)  # affine depth
        p = out / Path(ds.sample_name(i)).with_suffix(".npy")
        p.parent.mkdir(parents=True, exist_ok=True)
        np.save(p, pred.astype(np.float32))


@pytest.mark.parametrize("bench", ["nyuv2", "kitti"])
@pytest.mark.parametrize("space", ["disparity", "depth"])
def test_gt_derived_predictions_are_perfect(bench_root: Path, tmp_path: Path, bench: str, space: str) -> None:
    _write_gt_predictions(bench_root / bench, bench, tmp_path, space)
    res = evaluate(PrecomputedPredictions(tmp_path, space), bench, bench_root / bench)
    assert res.num_samples == 3 and not res.failures
    assert res.meta["alignment"] == ("least_square_disparity" if space == "disparity" else "least_square")
    assert res.metrics["abs_rel"] == pytest.approx(0.0, abs=2e-6)
    assert res.metrics["delta1"] == 1.0
    assert res.metrics["rmse"] == pytest.approx(0.0, abs=1e-4)
    # the scored pixel count, computed independently from the raw PNGs
    by_name = {r["name"]: r["n_valid"] for r in res.per_sample}
    ds = open_dataset(bench, bench_root / bench)
    for i in range(len(ds)):
        raw = np.asarray(Image.open(bench_root / bench / ds.pair(i)[1])).astype(np.float64)
        if bench == "kitti":
            d = raw[23:375, 13:1229] / 256.0  # KB crop of the 375x1242 frame
            ok = (d > 1e-5) & (d < 80)
            expected = int(ok[117:321, 43:1172].sum())  # Marigold's "eigen" box of the cropped frame
        else:
            d = raw / 1000.0
            expected = int(((d > 1e-3) & (d < 10))[45:471, 41:601].sum())  # Eigen mask
        assert by_name[ds.sample_name(i)] == expected > 0
    assert res.meta["input_sizes"] == ([[352, 1216]] if bench == "kitti" else [[480, 640]])


def test_sdt_test_model_runs_through_the_harness(bench_root: Path) -> None:
    anydepth = pytest.importorskip("anydepth")
    model = anydepth.create_model("sdt_test").eval()
    for bench, res_px, proc, n in (("nyuv2", 96, [64, 96], 3), ("kitti", 128, [32, 128], 1)):
        res = evaluate(
            ModelPredictor(model, processing_res=res_px),
            bench,
            bench_root / bench,
            limit=n,
            allow_missing=True,
        )
        assert res.num_samples == n and res.meta["processing_sizes"] == [proc]
        assert res.meta["pred_space"] == "disparity_affine_invariant"
        m = res.metrics
        assert all(np.isfinite(v) for v in m.values())
        assert m["abs_rel"] > 0 and 0.0 <= m["delta1"] <= 1.0 and m["delta1"] <= m["delta2"] <= m["delta3"]
