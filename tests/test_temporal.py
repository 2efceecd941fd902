"""Temporal alignment (``ops.temporal``) and the flicker benchmark's pieces (``bench.flicker``)."""

from __future__ import annotations

import numpy as np
import pytest

from anydepth.ops.temporal import TemporalAligner, align_stream, robust_fit_scale_shift
from anydepth.types import DepthSpace


def _scene(h: int = 48, w: int = 64) -> np.ndarray:
    """A smooth positive disparity map with some structure (a floor ramp and a near box)."""
    y, x = np.mgrid[0:h, 0:w] / np.array([h, w])[:, None, None]
    d = 0.1 + 0.8 * y**2 + 0.1 * x
    d[10:20, 30:45] = 0.9
    return d


def test_robust_fit_recovers_planted_affine_despite_outliers() -> None:
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 1, 2000)
    t = 2.5 * p - 0.7
    t[:300] += rng.uniform(1, 3, 300)  # 15 % gross outliers
    mask = np.ones_like(p, bool)
    for sym in (False, True):
        s, c, inl = robust_fit_scale_shift(p, t, mask, symmetric=sym)
        assert s == pytest.approx(2.5, rel=1e-6) and c == pytest.approx(-0.7, abs=1e-6)
        assert not inl[:300].any() and inl[300:].all()


def test_symmetric_fit_has_no_regression_dilution() -> None:
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, 20000)
    p = x + 0.1 * rng.standard_normal(x.size)  # both sides noisy
    t = 2.0 * x + 0.2 * rng.standard_normal(x.size)
    mask = np.ones_like(p, bool)
    s_ols, _, _ = robust_fit_scale_shift(p, t, mask, iterations=0)
    s_sym, _, _ = robust_fit_scale_shift(p, t, mask, iterations=0, symmetric=True)
    assert s_ols < 0.92 * 2.0  # least squares shrinks (var x = 1/12 vs noise var 0.01)
    assert s_sym == pytest.approx(2.0, rel=0.03)


def test_static_scene_with_random_affine_gives_stable_values() -> None:
    rng = np.random.default_rng(2)
    d = _scene()
    al = TemporalAligner()
    outs = []
    for _ in range(10):
        a, b = np.exp(0.5 * rng.standard_normal()), rng.standard_normal()
        outs.append(al.update(a * d + b))
    assert outs[0].restarted and not any(o.restarted for o in outs[1:])
    for o in outs[1:]:
        np.testing.assert_allclose(o.value, outs[0].value, rtol=1e-5, atol=1e-6)
        assert o.inliers > 0.9 and not o.metric
    # the first frame's percentiles map to init_range
    lo, hi = np.percentile(outs[0].value, (2, 98))
    assert lo == pytest.approx(0.1, abs=1e-6) and hi == pytest.approx(1.0, abs=1e-6)


def test_moving_object_does_not_pull_the_fit() -> None:
    d = _scene()
    al = TemporalAligner(renorm=0.0)
    first = al.update(d).value
    for t in range(1, 8):
        v = d.copy()
        v[30:40, 5 * t : 5 * t + 12] = 2.0  # a "moving object" disagreeing with the reference
        out = al.update(3.0 * v + 0.5)
        static = np.ones_like(d, bool)
        static[30:40, :] = False
        np.testing.assert_allclose(out.value[static], first[static], rtol=1e-4, atol=1e-5)
        assert out.inliers < 0.99


def test_scene_cut_restarts_the_reference_and_keeps_the_range() -> None:
    rng = np.random.default_rng(3)
    al = TemporalAligner()
    al.update(_scene())
    al.update(_scene() * 2.0)
    cut = al.update(rng.uniform(0, 1, (48, 64)))  # unrelated frame
    assert cut.restarted and cut.inliers == 0.0
    lo, hi = np.percentile(cut.value, (2, 98))
    assert 0.0 < lo < hi < 1.5


def test_anchor_makes_the_clip_metric() -> None:
    d = _scene()
    depth = 1.0 / d  # metres
    al = TemporalAligner(DepthSpace.DISPARITY_AFFINE_INVARIANT)
    before = al.update(4.0 * d - 1.0)
    assert not before.metric
    anchored = al.update(2.0 * d + 3.0, anchor_depth=depth)
    assert anchored.metric and al.metric
    np.testing.assert_allclose(anchored.value, d, rtol=1e-4)
    low = TemporalAligner().update(d, anchor_depth=depth[::2, ::2])  # lower-resolution anchor (resampled)
    np.testing.assert_allclose(low.value, d, rtol=0.05)
    later = al.update(0.5 * d + 0.1)
    np.testing.assert_allclose(later.value, d, rtol=1e-4)
    assert later.value == pytest.approx(later.scale * (0.5 * d + 0.1) + later.shift, rel=1e-5)


def test_anchor_for_a_depth_space_model_is_fitted_in_depth() -> None:
    z = 1.0 / _scene()
    al = TemporalAligner(DepthSpace.DEPTH_AFFINE_INVARIANT)
    out = al.update(0.3 * z + 2.0, anchor_depth=z)
    np.testing.assert_allclose(out.value, z, rtol=1e-4)


def test_invalid_pixels_and_errors() -> None:
    d = _scene()
    valid = np.ones_like(d, bool)
    valid[:5] = False
    al = TemporalAligner()
    out = al.update(d, valid=valid)
    assert np.isnan(out.value[:5]).all() and np.isfinite(out.value[5:]).all()
    with pytest.raises(ValueError, match="unlike the earlier frames"):
        al.update(np.ones((20, 20)))
    with pytest.raises(ValueError, match="valid mask shape"):
        al.update(d, valid=valid[:4])
    with pytest.raises(ValueError, match="aspect ratios differ"):
        al.update(d, anchor_depth=np.ones((10, 40)))
    with pytest.raises(ValueError, match="at least 10"):
        al.update(d, anchor_depth=np.zeros((48, 64)))
    for bad in (
        {"window": 0},
        {"renorm": 1.0},
        {"smooth": 1.0},
        {"min_inliers": 1.0},
        {"init_range": (1.0, 0.0)},
    ):
        with pytest.raises(ValueError):
            TemporalAligner(**bad)  # type: ignore[arg-type]


def test_smoothing_averages_agreeing_pixels_only() -> None:
    rng = np.random.default_rng(4)
    d = _scene()
    outs = {}
    for smooth in (0.0, 0.5):
        al = TemporalAligner(smooth=smooth, renorm=0.0)
        outs[smooth] = [al.update(d * (1 + 0.01 * rng.standard_normal(d.shape))).value for _ in range(8)]
    jump = {
        k: np.mean([np.abs(b - a).mean() for a, b in zip(v[:-1], v[1:], strict=True)])
        for k, v in outs.items()
    }
    assert jump[0.5] < 0.75 * jump[0.0]
    al = TemporalAligner(smooth=0.9, renorm=0.0)
    al.update(d)
    moved = d.copy()
    moved[30:40, 10:20] = 2.0  # disagrees with the previous output: not averaged
    out = al.update(moved)
    assert np.all(out.value[30:40, 10:20] > 1.5)


def test_noise_reduction_averages_jitter_but_follows_motion_and_keeps_objects() -> None:
    from anydepth.ops.temporal import reduce_temporal_noise

    rng = np.random.default_rng(5)
    h, w = 96, 128
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    truth = [0.3 + 0.5 * yy / h + 0.002 * t * xx / w for t in range(30)]  # a smooth change every frame
    noisy = [x + 0.004 * rng.standard_normal(x.shape) for x in truth]
    out, prev = [], None
    for x in noisy:
        prev = x if prev is None else reduce_temporal_noise(x, prev, 0.7)
        out.append(prev)
    err_in = np.mean([np.abs(x - t).mean() for x, t in zip(noisy[10:], truth[10:], strict=True)])
    err_out = np.mean([np.abs(x - t).mean() for x, t in zip(out[10:], truth[10:], strict=True)])
    assert err_out < 0.6 * err_in  # jitter averaged ...
    bias = np.mean([(x - t).mean() for x, t in zip(out[10:], truth[10:], strict=True)])
    assert abs(bias) < 0.1 * err_in  # ... without lagging behind the smooth change
    jump_in = np.mean([np.abs(b - a).mean() for a, b in zip(noisy[10:-1], noisy[11:], strict=True)])
    jump_out = np.mean([np.abs(b - a).mean() for a, b in zip(out[10:-1], out[11:], strict=True)])
    assert jump_out < 0.5 * jump_in
    # an object that appears is not blended with what was there before; NaN stays NaN, weight 0 is a no-op
    cur = noisy[0].copy()
    cur[40:60, 40:60] = 1.5
    cur[0, 0] = np.nan
    res = reduce_temporal_noise(cur, noisy[1], 0.9)
    assert np.all(res[40:60, 40:60] > 1.45) and np.isnan(res[0, 0])
    assert np.array_equal(reduce_temporal_noise(cur, noisy[1], 0.0), cur, equal_nan=True)


def test_memory_is_bounded_by_the_window() -> None:
    al = TemporalAligner(window=3, fit_size=16)
    frames = align_stream((_scene(96, 128) * (1 + 0.01 * i) for i in range(12)), al)
    outs = list(frames)
    assert len(outs) == 12 and outs[-1].index == 11
    assert len(al._refs) == 3 and al._refs[0].shape == (12, 16)


def test_flicker_benchmark_small_clip() -> None:
    from anydepth.bench.flicker import (
        FLICKER_METHODS,
        clip_outputs,
        covisible_pairs,
        evaluate_clip,
        flicker_strip,
        run_flicker_benchmark,
        synthetic_clip,
    )

    static = list(synthetic_clip(frames=3, size=(24, 32), seed=0, travel=(0.0, 0.0), pan_deg=0.0))
    i0, i1, _ = covisible_pairs(static)[0]
    assert len(i0) > 0.5 * 24 * 32 and np.array_equal(i0, i1)  # static camera: identity where static
    exact = [1.0 / np.where(f.render.depth > 0, f.render.depth, np.nan) for f in static]
    m = evaluate_clip(exact, static, covisible_pairs(static))
    assert m["flicker"] < 1e-6 and m["abs_rel_clip"] < 1e-6

    r = run_flicker_benchmark(seeds=(0,), frames=12, size=(48, 64))
    mean = r["mean"]
    assert set(mean) == set(FLICKER_METHODS)
    assert mean["oracle"]["excess_flicker"] == 0.0
    assert mean["temporal_smooth"]["flicker"] < mean["temporal"]["flicker"]
    assert mean["exact_motion_bound"]["flicker"] < mean["per_frame"]["flicker"]
    assert mean["temporal"]["excess_flicker"] < 0.5 * mean["per_frame"]["excess_flicker"]
    assert mean["temporal"]["abs_rel_clip"] < mean["per_frame"]["abs_rel_clip"]
    frames, outputs, _ = clip_outputs(0, frames=6, size=(24, 32))
    strip = flicker_strip(frames, outputs, columns=3)
    assert strip.shape == (4 * 24, 3 * 32, 3) and strip.dtype == np.uint8


def test_infer_video_is_temporally_aligned_and_anchored(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    import torch

    import anydepth
    from anydepth.bench.flicker import synthetic_clip
    from anydepth.cli.main import main
    from anydepth.data.io import write_png16

    pytest.importorskip("av")
    from anydepth.data.video import VideoWriter

    torch.manual_seed(0)
    model = anydepth.create_model("sdt_test")
    with torch.no_grad():  # a map that varies over the image (random init alone gives a constant map)
        model.decoder.head.conv_out.weight.mul_(20.0)
        model.decoder.head.conv_out.bias.fill_(1.3)
    ckpt = tmp_path / "tiny.safetensors"
    anydepth.save_model(model, ckpt, contents="full")
    clip = list(synthetic_clip(frames=5, size=(48, 64), seed=0))
    with VideoWriter(tmp_path / "clip.mp4", 10) as vw:
        for f in clip:
            vw.write(f.render.rgb)
    base = [str(tmp_path / "clip.mp4"), "--checkpoint", str(ckpt), "--size", "native", "--save", "npy", "-q"]
    assert main(["infer", *base, "-o", str(tmp_path / "t")]) == 0
    index = json.loads((tmp_path / "t" / "clip_frames" / "index.json").read_text())
    assert index["values"].startswith("temporally aligned") and index["frames"][0]["restarted"]
    assert all("scale" in f for f in index["frames"])
    # an anchor that is a positive affine map of the model's own (aligned) disparity: the fit is exact
    clip_units = np.load(tmp_path / "t" / "clip_frames" / "000000_pred.npy").astype(np.float64)
    disp = 2.0 * (clip_units - clip_units.min()) / np.ptp(clip_units) + 0.2  # 1/m, depths 0.45 m to 5 m
    write_png16(tmp_path / "clip_depth.png", np.round(1000.0 / disp).astype(np.uint16))
    anchored = ["--align-to", str(tmp_path / "clip_depth.png"), "--align-scale", "1000"]
    assert main(["infer", *base, *anchored, "-o", str(tmp_path / "a")]) == 0
    summary = json.loads(next((tmp_path / "a").glob("summary*.json")).read_text())
    assert "metric anchor on frame 0" in summary["inputs"][0]["normalisation"]
    v0 = np.load(
        tmp_path / "a" / "clip_frames" / "000000_pred.npy"
    )  # metric disparity (1/m) after the anchor
    assert np.median(np.abs(v0 - disp) / disp) < 0.01
    # several anchors: refs/clip/<frame>.<ext>, here frames 2 and 3 (the same affine map of the clip units)
    refs = tmp_path / "refs" / "clip"
    refs.mkdir(parents=True)
    lo, span = clip_units.min(), np.ptp(clip_units)
    later = {
        i: np.load(tmp_path / "t" / "clip_frames" / f"{i:06d}_pred.npy").astype(np.float64) for i in (2, 3)
    }
    metric = {i: 2.0 * (u - lo) / span + 0.2 for i, u in later.items()}
    write_png16(refs / "000002.png", np.round(1000.0 / np.clip(metric[2], 0.2, None)).astype(np.uint16))
    np.save(refs / "3.npy", (1.0 / np.clip(metric[3], 0.2, None)).astype(np.float32) * 1000.0)
    multi = ["--align-to", str(tmp_path / "refs"), "--align-scale", "1000"]
    assert main(["infer", *base, *multi, "-o", str(tmp_path / "m")]) == 0
    rec = json.loads(next((tmp_path / "m").glob("summary*.json")).read_text())["inputs"][0]
    assert "metric anchor on frames 2, 3" in rec["normalisation"] and set(rec["reference"]) == {"2", "3"}
    frames = json.loads((tmp_path / "m" / "clip_frames" / "index.json").read_text())["frames"]
    assert [f["metric"] for f in frames] == [False, False, True, True, True]
    assert [f["anchor"] for f in frames] == [False, False, True, True, False]
    v2 = np.load(tmp_path / "m" / "clip_frames" / "000002_pred.npy")
    ok = metric[2] > 0.2
    assert np.median(np.abs(v2[ok] - metric[2][ok]) / metric[2][ok]) < 0.01
    np.save(refs / "000099.npy", np.ones((48, 64), np.float32))  # beyond the clip: a warning, not a failure
    assert main(["infer", *base, *multi, "-o", str(tmp_path / "m2")]) == 0
    rec = json.loads(next((tmp_path / "m2").glob("summary*.json")).read_text())["inputs"][0]
    assert "[99] not used" in rec["warning"]
    (refs / "first.png").write_bytes((refs / "000002.png").read_bytes())  # not a frame index: the video fails
    assert main(["infer", *base, *multi, "-o", str(tmp_path / "m3")]) == 1
    assert not (tmp_path / "m3" / "clip_frames").exists()  # refused before any output
    assert main(["infer", *base, "--video-smooth", "0.7", "-o", str(tmp_path / "s")]) == 0
    smoothed = json.loads(next((tmp_path / "s").glob("summary*.json")).read_text())
    assert smoothed["settings"]["video_smooth"] == 0.7
    assert main(["infer", *base, "--video-smooth", "1.5", "-o", str(tmp_path / "bad")]) != 0
    per_frame_smooth = ["--video-smooth", "0.5", "--video-align", "per-frame"]  # smoothing needs alignment
    assert main(["infer", *base, *per_frame_smooth, "-o", str(tmp_path / "bad2")]) == 2
    assert main(["infer", *base, "--video-align", "per-frame", "-o", str(tmp_path / "p")]) == 0
    index = json.loads((tmp_path / "p" / "clip_frames" / "index.json").read_text())
    assert index["values"] == "per frame" and "scale" not in index["frames"][0]
