"""The Python inference API: ``anydepth.predict`` / ``predict_iter`` with known-answer runners and a tiny model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import anydepth
from anydepth.inference import (
    PredictItem,
    RangeTracker,
    Resolution,
    TorchRunner,
    align_prediction,
    load_image,
    nominal_depth,
    predict,
    predict_iter,
)
from anydepth.ops.geometry import focal_from_35mm, focal_from_fov
from anydepth.types import DepthSpace, Intrinsics, Prediction

RGBD = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "rgbd"


class MeanRunner:
    """Known-answer runner: disparity = mean over RGB + 0.5, per pixel (no resizing effects at native size)."""

    patch_size = 16
    output_space = DepthSpace.DISPARITY_AFFINE_INVARIANT
    device = torch.device("cpu")

    def __init__(self) -> None:
        self.calls: list[tuple[int, ...]] = []

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(tuple(x.shape))
        return x.mean(1, keepdim=True) + 0.5


def _img(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return anydepth.create_model("sdt_test")


# ------------------------------------------------------------------------------------------------ resolution


def test_resolution_parse_and_sizes() -> None:
    assert Resolution.parse("768") == Resolution(short_side=768)
    assert Resolution.parse("short:512").short_side == 512
    assert Resolution.parse("long:1024") == Resolution(short_side=None, long_side=1024)
    assert Resolution.parse("480x640").size == (480, 640)
    assert Resolution.parse("native") == Resolution.native()
    assert Resolution.parse("long:1024").describe() == "long:1024"
    with pytest.raises(ValueError, match="bad resolution"):
        Resolution.parse("big")
    # 375 x 1242 (KITTI) at short side 768, patch 16: aspect kept, multiples of 16
    assert Resolution().processing_size((375, 1242), 16) == (768, 2544)
    assert Resolution.parse("long:640").processing_size((375, 1242), 16) == (192, 640)
    assert Resolution.native().processing_size((375, 1242), 14) == (378, 1246)


# ------------------------------------------------------------------------------------------------ known answers


def test_predict_returns_input_size_and_exact_values_at_native_size() -> None:
    runner = MeanRunner()
    img = _img(32, 48)
    p = predict(runner, img, resolution="native")
    assert isinstance(p, Prediction)
    assert p.value.shape == (32, 48) and p.value.dtype == np.float32
    np.testing.assert_allclose(p.value, img.astype(np.float32).mean(-1) / 255.0 + 0.5, atol=1e-6)
    assert p.space == DepthSpace.DISPARITY_AFFINE_INVARIANT and p.metric is False
    assert p.meta["proc_hw"] == [32, 48] and p.meta["depth"]["mapping"] == "nominal"


def test_flip_tta_unflips_the_flipped_prediction() -> None:
    img = _img(32, 48, seed=3)
    plain = predict(MeanRunner(), img, resolution="native")
    runner = MeanRunner()
    tta = predict(runner, img, resolution="native", flip_tta=True)
    assert runner.calls == [(2, 3, 32, 48)]  # original and flipped in one batch
    np.testing.assert_allclose(tta.value, plain.value, atol=1e-6)


def test_batching_groups_consecutive_same_size_inputs_and_keeps_order() -> None:
    runner = MeanRunner()
    imgs = [_img(32, 32, 1), _img(32, 32, 2), _img(32, 32, 3), _img(48, 32, 4), _img(32, 32, 5)]
    preds = predict(runner, imgs, resolution="native", batch_size=2)
    assert runner.calls == [(2, 3, 32, 32), (1, 3, 32, 32), (1, 3, 48, 32), (1, 3, 32, 32)]
    for img, p in zip(imgs, preds, strict=True):
        np.testing.assert_allclose(p.value, img.mean(-1) / 255.0 + 0.5, atol=1e-6)
    # a fixed size batches everything and restores each prediction to its own size
    runner = MeanRunner()
    preds = predict(runner, imgs, resolution="64x64", batch_size=8)
    assert runner.calls == [(5, 3, 64, 64)]
    assert [p.value.shape for p in preds] == [(32, 32)] * 3 + [(48, 32), (32, 32)]


def test_input_kinds_arrays_tensors_pil_and_paths(tmp_path: Path) -> None:
    rgb = _img(32, 32)
    gray8 = rgb[..., 0]
    rgba = np.concatenate([rgb, np.full((32, 32, 1), 7, np.uint8)], axis=-1)
    u16 = rgb.astype(np.uint16) * 257
    f32 = rgb.astype(np.float32) / 255.0
    chw = torch.from_numpy(f32).permute(2, 0, 1)
    Image.fromarray(rgb).save(tmp_path / "x.png")
    Image.fromarray(gray8).save(tmp_path / "g.png")
    inputs = [rgb, rgba, u16, f32, chw, Image.fromarray(rgb), tmp_path / "x.png", str(tmp_path / "x.png")]
    preds = predict(MeanRunner(), inputs, resolution="native")
    ref = rgb.mean(-1) / 255.0 + 0.5
    for p in preds:
        np.testing.assert_allclose(p.value, ref, atol=1e-5)
    g = predict(MeanRunner(), [gray8, tmp_path / "g.png", Image.fromarray(gray8)], resolution="native")
    for p in g:
        np.testing.assert_allclose(p.value, gray8 / 255.0 + 0.5, atol=1e-5)
    # a [B,H,W,C] batch array is a list of images
    assert len(predict(MeanRunner(), np.stack([rgb, rgb]), resolution="native")) == 2
    assert preds[-1].meta["source"] == str(tmp_path / "x.png")


def test_bad_inputs_raise_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        load_image(np.full((8, 8, 3), 200.0, dtype=np.float32))
    with pytest.raises(ValueError, match="C in"):
        load_image(np.zeros((8, 8, 5), np.uint8))
    with pytest.raises(FileNotFoundError, match="nope.png"):
        load_image(tmp_path / "nope.png")
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match="bad.jpg"):
        predict(MeanRunner(), tmp_path / "bad.jpg")
    with pytest.raises(ValueError, match="device/dtype"):
        predict(MeanRunner(), _img(16, 16), device=torch.device("cpu"))
    with pytest.raises(ValueError, match="entries for 2 images"):
        predict(MeanRunner(), [_img(16, 16), _img(16, 16)], intrinsics=[None])


def test_exif_orientation_and_35mm_focal_from_path(tmp_path: Path) -> None:
    stored = _img(32, 48)  # stored landscape, EXIF says rotate 90 degrees clockwise for display
    exif = Image.Exif()
    exif[0x0112] = 6
    exif.get_ifd(0x8769)[0xA405] = 26
    Image.fromarray(stored).save(tmp_path / "phone.jpg", exif=exif, quality=95)
    p = predict(MeanRunner(), tmp_path / "phone.jpg", resolution="native")
    assert p.value.shape == (48, 32)  # upright portrait
    assert p.meta["intrinsics_source"] == "exif_35mm" and p.meta["focal_35mm"] == 26.0
    assert p.intrinsics.fx == pytest.approx(focal_from_35mm(48, 32, 26.0))
    assert (p.intrinsics.cx, p.intrinsics.cy) == (15.5, 23.5)
    # --fov beats EXIF; explicit intrinsics beat both
    p2 = predict(MeanRunner(), tmp_path / "phone.jpg", resolution="native", fov_deg=90.0)
    assert p2.meta["intrinsics_source"] == "fov" and p2.intrinsics.fx == pytest.approx(16.0)
    k = Intrinsics(10.0, 11.0, 12.0, 13.0)
    p3 = predict(MeanRunner(), tmp_path / "phone.jpg", resolution="native", fov_deg=90.0, intrinsics=k)
    assert p3.intrinsics == k and p3.meta["intrinsics_source"] == "intrinsics"
    p4 = predict(MeanRunner(), _img(20, 40), resolution="native")
    assert p4.meta["intrinsics_source"] == "default_fov"
    assert p4.intrinsics.fx == pytest.approx(focal_from_fov(40, 60.0))


# ------------------------------------------------------------------------------------------------ depth


def test_nominal_depth_maps_percentiles_to_the_nominal_range() -> None:
    disp = np.linspace(0.0, 1.0, 1001, dtype=np.float32).reshape(7, 143)
    depth, info = nominal_depth(disp, DepthSpace.DISPARITY_AFFINE_INVARIANT, (1.0, 10.0))
    assert info["mapping"] == "nominal" and depth.dtype == np.float32
    assert depth.min() == pytest.approx(1.0) and depth.max() == pytest.approx(10.0)
    flat = depth.ravel()
    assert np.all(np.diff(flat) <= 1e-6)  # more disparity -> nearer
    # the mid value maps to the middle of the *inverse* depth range
    lo, hi = info["range"]
    mid = (lo + hi) / 2
    d_mid, _ = nominal_depth(np.array([[lo, mid, hi]]), DepthSpace.DISPARITY_AFFINE_INVARIANT, (1.0, 10.0))
    assert 1.0 / d_mid[0, 1] == pytest.approx((1.0 + 0.1) / 2, rel=1e-5)
    metric, info = nominal_depth(np.array([[2.0, 4.0]]), DepthSpace.DISPARITY_METRIC)
    np.testing.assert_allclose(metric, [[0.5, 0.25]])
    assert info["mapping"] == "metric"


def test_alignment_recovers_planted_metric_depth_from_sparse_reference() -> None:
    img = _img(32, 48, seed=7)
    disp = img.astype(np.float64).mean(-1) / 255.0 + 0.5
    true_depth = 1.0 / (2.0 * disp + 0.1)  # metres; the runner's disparity is affine in 1/z
    sparse = np.zeros_like(true_depth)
    rng = np.random.default_rng(0)
    idx = rng.choice(true_depth.size, size=60, replace=False)
    sparse.flat[idx] = true_depth.flat[idx]
    p = predict(MeanRunner(), img, resolution="native", align_to=sparse)
    assert p.metric is True and p.meta["depth"]["mapping"] == "aligned"
    assert p.meta["depth"]["scale"] == pytest.approx(2.0, rel=1e-4)
    assert p.meta["depth"]["shift"] == pytest.approx(0.1, abs=1e-4)
    assert p.meta["depth"]["fit_pixels"] == 60
    np.testing.assert_allclose(p.depth, true_depth, rtol=1e-4)
    with pytest.raises(ValueError, match="valid pixels"):
        predict(MeanRunner(), img, resolution="native", align_to=np.zeros_like(true_depth))
    with pytest.raises(ValueError, match="aspect ratios differ"):
        predict(MeanRunner(), img, resolution="native", align_to=np.ones((48, 48)))


def _nyu() -> tuple[np.ndarray, Intrinsics]:
    if not (RGBD / "manifest.json").is_file():
        pytest.skip("real RGB-D fixtures not available")
    from anydepth.data.io import read_depth

    return read_depth(RGBD / "nyu/depth/sync_depth_00000.png", scale=1000.0), Intrinsics(
        518.8579, 519.46961, 325.58245, 253.73617
    )


def test_align_noisy_disparity_to_sparse_real_depth_nyu() -> None:
    gt, _ = _nyu()
    valid = gt > 0
    rng = np.random.default_rng(1)
    # an affine-invariant "prediction": unknown scale/shift of true disparity, 2% multiplicative noise, holes filled
    pred = (0.7 / np.where(valid, gt, 1.0) + 0.2) * (1.0 + 0.02 * rng.standard_normal(gt.shape))
    pred[~valid] = np.median(pred[valid])
    sparse = np.zeros_like(gt)
    ids = rng.choice(np.flatnonzero(valid), size=500, replace=False)  # LiDAR-like sparse samples
    sparse.flat[ids] = gt.flat[ids]
    depth, info = align_prediction(pred.astype(np.float32), DepthSpace.DISPARITY_AFFINE_INVARIANT, sparse)
    assert info["fit_pixels"] == 500 and info["fit_space"] == "disparity"
    assert info["scale"] == pytest.approx(1 / 0.7, rel=0.05)
    abs_rel = np.mean(np.abs(depth[valid] - gt[valid]) / gt[valid])
    # the best possible: the true scale and shift applied to the noisy prediction
    oracle = 1.0 / ((pred - 0.2) / 0.7)
    oracle_abs_rel = np.mean(np.abs(oracle[valid] - gt[valid]) / gt[valid])
    assert abs_rel < oracle_abs_rel + 0.005 and abs_rel < 0.05
    # a reference at half the resolution (nearest subsampled) also works (the prediction is resampled to it)
    depth2, info2 = align_prediction(
        pred.astype(np.float32), DepthSpace.DISPARITY_AFFINE_INVARIANT, gt[::2, ::2]
    )
    assert info2["reference_hw"] == [240, 320]
    assert np.mean(np.abs(depth2[valid] - gt[valid]) / gt[valid]) < 0.05


def test_align_to_kitti_lidar_held_out_points() -> None:
    if not (RGBD / "manifest.json").is_file():
        pytest.skip("real RGB-D fixtures not available")
    from anydepth.data.io import read_depth

    gt = read_depth(RGBD / "kitti/depth/0000000050.png", scale=256.0)
    valid = gt > 0
    pred = np.where(valid, 5.0 / np.where(valid, gt, 1.0) + 1.0, 1.0).astype(np.float32)
    ids = np.flatnonzero(valid)
    fit, held = ids[::2], ids[1::2]
    ref = np.zeros_like(gt)
    ref.flat[fit] = gt.flat[fit]
    depth, info = align_prediction(pred, DepthSpace.DISPARITY_AFFINE_INVARIANT, ref)
    assert info["scale"] == pytest.approx(0.2, rel=1e-4) and info["shift"] == pytest.approx(-0.2, abs=1e-4)
    np.testing.assert_allclose(depth.flat[held], gt.flat[held], rtol=1e-3)


def test_range_tracker_smooths_jumps() -> None:
    frames = [np.full((4, 4), 1.0), np.full((4, 4), 1.0)]
    frames[0][0, 0], frames[1][0, 0] = 0.0, 0.0
    frames.append(np.linspace(0, 10, 16).reshape(4, 4))  # sudden range jump
    t0, t9 = RangeTracker(0.0), RangeTracker(0.9)
    r0 = [t0.update(f) for f in frames]
    r9 = [t9.update(f) for f in frames]
    assert r0[0] == r9[0]  # first frame initialises
    hi_jump = np.percentile(frames[2], 99)
    assert r0[2][1] == pytest.approx(hi_jump)  # momentum 0 = per-frame range
    assert r9[2][1] == pytest.approx(0.9 * r9[1][1] + 0.1 * hi_jump)
    with pytest.raises(ValueError):
        RangeTracker(1.0)


def test_predict_iter_streams_items_with_meta() -> None:
    def gen():
        for i in range(5):
            yield PredictItem(_img(16, 32, i), meta={"i": i})

    out = list(predict_iter(MeanRunner(), gen(), resolution="native", batch_size=2, compute_depth=False))
    assert [p.meta["i"] for p in out] == list(range(5))
    assert all(p.depth is None for p in out)


# ------------------------------------------------------------------------------------------------ real model


def test_tiny_model_batched_equals_single_and_is_finite(tiny_model: torch.nn.Module) -> None:
    imgs = [_img(40, 56, s) for s in range(3)]
    batched = predict(tiny_model, imgs, resolution="64", batch_size=3, device=torch.device("cpu"))
    singles = [predict(tiny_model, im, resolution="64", batch_size=1) for im in imgs]
    for b, s in zip(batched, singles, strict=True):
        assert b.value.shape == (40, 56) and np.isfinite(b.value).all()
        np.testing.assert_allclose(b.value, s.value, rtol=1e-4, atol=1e-5)
        assert b.meta["proc_hw"] == [64, 96]
    assert isinstance(anydepth.predict, type(predict)) and anydepth.predict is predict


class _ProbeModel(torch.nn.Module):
    """A minimal DepthModel stand-in recording the dtype its conv computes in."""

    patch_size = 16
    output_space = DepthSpace.DISPARITY_AFFINE_INVARIANT

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 1, 1)
        self.seen: list[torch.dtype] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        self.seen.append(y.dtype)
        return y


def test_torch_runner_uses_autocast_for_bf16_and_returns_float32() -> None:
    model = _ProbeModel()
    img = _img(32, 32)
    a = predict(TorchRunner(model, dtype=torch.float32), img, resolution="native").value
    b = predict(TorchRunner(model, dtype=torch.bfloat16), img, resolution="native").value
    assert model.seen == [torch.float32, torch.bfloat16]
    assert b.dtype == np.float32
    np.testing.assert_allclose(a, b, atol=0.02 * max(1.0, float(np.abs(a).max())))
    with pytest.raises(ValueError, match="dtype"):
        TorchRunner(model, dtype=torch.int8)
    with pytest.raises(ValueError, match="DepthModel"):
        TorchRunner(torch.nn.Linear(2, 2))
