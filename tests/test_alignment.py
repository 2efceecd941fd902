"""Known-answer tests of ``anydepth.ops.alignment`` (least squares, median scaling, protocol alignment)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from anydepth.ops.alignment import (
    align_to_depth,
    downsample_for_fit,
    fit_median_scale,
    fit_scale,
    fit_scale_shift,
    masked_median,
    resolve_alignment,
    to_inverse,
)
from anydepth.types import DepthSpace

DISP = DepthSpace.DISPARITY_AFFINE_INVARIANT
DEPTH = DepthSpace.DEPTH_AFFINE_INVARIANT


def _gt(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g, dtype=torch.float64) * 9.0 + 0.5  # metres in [0.5, 9.5]


def test_fit_scale_shift_recovers_planted_parameters_batched() -> None:
    d = _gt((3, 1, 17, 23))
    s_true = torch.tensor([0.5, 2.0, -1.5], dtype=torch.float64)
    t_true = torch.tensor([0.1, -3.0, 7.0], dtype=torch.float64)
    p = (d - t_true.view(3, 1, 1, 1)) / s_true.view(3, 1, 1, 1)  # so that s*p + t == d exactly
    s, t = fit_scale_shift(p, d)
    assert torch.allclose(s, s_true, rtol=1e-12, atol=1e-12)
    assert torch.allclose(t, t_true, rtol=1e-12, atol=1e-10)


def test_fit_scale_shift_ignores_masked_outliers_and_nonfinite_values() -> None:
    d = _gt((1, 40, 30))
    p = 3.0 * d - 1.0
    mask = torch.ones_like(d, dtype=torch.bool)
    mask[0, :5] = False
    p = p.clone()
    p[0, :4] = float("inf")  # garbage under the mask must not leak (0 * inf = NaN)
    p[0, 4] = 1e9
    s, t = fit_scale_shift(p, d, mask)
    assert torch.allclose(s, torch.tensor([1 / 3], dtype=torch.float64), rtol=1e-12)
    assert torch.allclose(t, torch.tensor([1 / 3], dtype=torch.float64), rtol=1e-11)


def test_fit_scale_shift_matches_numpy_lstsq_on_noisy_data() -> None:
    rng = np.random.default_rng(3)
    d = rng.uniform(1, 5, size=(1, 50, 60))
    p = 0.7 * d + 0.2 + rng.normal(0, 0.3, size=d.shape)
    m = rng.random(d.shape) < 0.6
    s, t = fit_scale_shift(p, d, m)  # numpy in, numpy out
    assert isinstance(s, np.ndarray) and s.shape == (1,)
    a = np.stack([p[m], np.ones(m.sum())], axis=1)
    ref = np.linalg.lstsq(a, d[m], rcond=None)[0]
    np.testing.assert_allclose([s[0], t[0]], ref, rtol=1e-12)


def test_fit_scale_shift_degenerate_cases() -> None:
    d = _gt((2, 4, 4))
    p = torch.ones_like(d)  # constant prediction: no scale information
    mask = torch.ones_like(d, dtype=torch.bool)
    mask[1] = False  # no valid pixel at all
    s, t = fit_scale_shift(p, d, mask)
    assert s.tolist() == [0.0, 0.0]
    assert t[0] == pytest.approx(float(d[0].mean()))
    assert t[1] == 0.0


def test_fit_scale_shift_is_differentiable() -> None:
    d = _gt((2, 8, 8)).float()
    p = torch.rand(2, 8, 8, requires_grad=True)
    s, t = fit_scale_shift(p, d)
    ((s[:, None, None] * p + t[:, None, None] - d) ** 2).sum().backward()
    assert p.grad is not None and torch.isfinite(p.grad).all()


def test_fit_scale_only_and_median_scaling() -> None:
    d = _gt((2, 9, 11))
    p = d / torch.tensor([4.0, 0.25], dtype=torch.float64).view(2, 1, 1)
    assert torch.allclose(fit_scale(p, d), torch.tensor([4.0, 0.25], dtype=torch.float64), rtol=1e-12)
    assert torch.allclose(fit_median_scale(p, d), torch.tensor([4.0, 0.25], dtype=torch.float64), rtol=1e-12)


def test_masked_median_even_and_odd_counts() -> None:
    x = torch.tensor([[1.0, 5.0, 3.0, 100.0], [4.0, 2.0, 8.0, 6.0]])
    m = torch.tensor([[True, True, True, False], [True, True, True, True]])
    assert masked_median(x, m).tolist() == [3.0, 5.0]  # odd: middle; even: mean of the two middle values
    assert torch.isnan(masked_median(x, torch.zeros_like(m)))[0]


def test_to_inverse_zero_for_nonpositive() -> None:
    x = torch.tensor([2.0, 0.0, -1.0, 0.5])
    assert to_inverse(x).tolist() == [0.5, 0.0, 0.0, 2.0]
    assert to_inverse(np.array([4.0, 0.0])).tolist() == [0.25, 0.0]


def test_align_least_square_depth_recovers_gt() -> None:
    gt = _gt((1, 30, 40), seed=1).float()
    valid = torch.ones_like(gt, dtype=torch.bool)
    pred = (gt - 0.5) / 2.5  # affine depth
    res = align_to_depth(pred, DEPTH, gt, valid, "least_square")
    assert torch.allclose(res.depth, gt, rtol=1e-5)
    assert float(res.scale[0]) == pytest.approx(2.5, rel=1e-6)
    assert float(res.shift[0]) == pytest.approx(0.5, rel=1e-5)


def test_align_least_square_disparity_recovers_gt_from_planted_disparity() -> None:
    gt = _gt((2, 25, 35), seed=2)
    valid = torch.rand(gt.shape, generator=torch.Generator().manual_seed(0)) < 0.7
    gt = torch.where(valid, gt, torch.zeros_like(gt))  # invalid pixels carry 0 like real GT
    disp = 1.0 / gt.clamp(min=1e-9)
    pred = 0.3 * disp + 0.05  # affine-invariant disparity
    res = align_to_depth(pred, DISP, gt, valid, "auto")
    assert torch.allclose(res.depth[valid], gt[valid], rtol=1e-10)
    assert torch.allclose(res.scale, torch.full((2,), 1 / 0.3, dtype=torch.float64), rtol=1e-10)
    assert torch.allclose(res.shift, torch.full((2,), -0.05 / 0.3, dtype=torch.float64), rtol=1e-9)


def test_align_disparity_excludes_nonpositive_predictions_and_clips() -> None:
    gt = torch.tensor([[[1.0, 2.0, 4.0, 8.0, 3.0]]]).double()
    valid = torch.ones_like(gt, dtype=torch.bool)
    pred = 1.0 / gt
    pred[0, 0, 4] = -5.0  # excluded from the fit (p <= 0), then its aligned disparity is clipped to 1e-3
    res = align_to_depth(pred, DISP, gt, valid, "least_square_disparity")
    assert int(res.fit_pixels[0]) == 4
    assert torch.allclose(res.depth[0, 0, :4], gt[0, 0, :4], rtol=1e-10)
    assert float(res.depth[0, 0, 4]) == pytest.approx(1000.0)


def test_align_depth_method_on_disparity_prediction_inverts_first() -> None:
    gt = _gt((1, 10, 10), seed=4)
    valid = torch.ones_like(gt, dtype=torch.bool)
    pred = 2.0 / gt  # disparity proportional to 1/gt -> inverted depth is gt/2, a pure scale
    res = align_to_depth(pred, DISP, gt, valid, "least_square")
    assert torch.allclose(res.depth, gt, rtol=1e-10)
    med = align_to_depth(pred, DISP, gt, valid, "median")
    assert torch.allclose(med.depth, gt, rtol=1e-10)
    none = align_to_depth(pred, DISP, gt, valid, "none")
    assert torch.allclose(none.depth, gt / 2, rtol=1e-12)


def test_resolve_alignment() -> None:
    assert resolve_alignment("auto", DISP) == "least_square_disparity"
    assert resolve_alignment("auto", DEPTH) == "least_square"
    assert resolve_alignment("median", DISP) == "median"
    with pytest.raises(ValueError, match="unknown alignment"):
        resolve_alignment("lsq", DEPTH)


def test_downsample_for_fit_marigold_mode_only_shrinks_width() -> None:
    x = torch.arange(40 * 60, dtype=torch.float32).view(1, 40, 60)
    y = downsample_for_fit(x, 30, "marigold")
    # factor min(30/40, 30/60) = 0.5, applied to W only (torch resamples [1,H,W] as a 1-D signal)
    assert tuple(y.shape) == (1, 40, 30)
    assert torch.equal(y, x[:, :, ::2])
    z = downsample_for_fit(x, 30, "nearest2d")
    assert tuple(z.shape) == (1, 20, 30) and torch.equal(z, x[:, ::2, ::2])
    m = downsample_for_fit(torch.ones(1, 40, 60, dtype=torch.bool), 30)
    assert m.dtype == torch.bool
    assert downsample_for_fit(x, 100) is x


def test_align_with_max_res_applies_fit_at_full_resolution() -> None:
    gt = _gt((1, 64, 96), seed=5).float()
    valid = torch.ones_like(gt, dtype=torch.bool)
    pred = 1.0 / gt * 0.5 + 0.01
    res = align_to_depth(pred, DISP, gt, valid, "auto", max_res=32)
    assert tuple(res.depth.shape) == (1, 64, 96)
    assert int(res.fit_pixels[0]) == 64 * 32
    assert torch.allclose(res.depth, gt, rtol=1e-4)


def test_shape_errors() -> None:
    with pytest.raises(ValueError, match="shape"):
        fit_scale_shift(torch.ones(2, 3), torch.ones(2, 4))
    with pytest.raises(ValueError, match="equal shape"):
        align_to_depth(torch.ones(1, 3, 3), DEPTH, torch.ones(1, 3, 4), torch.ones(1, 3, 4, dtype=torch.bool))
