"""Known-answer tests of the data-filter scores (S_dist and its parts, S_grad, S_total, valid mask)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from anydepth.data.filtering import scores as S
from anydepth.registry import FILTERS

K = 20


def _reference_grad(depth: np.ndarray, valid: np.ndarray, q: float = 0.9) -> tuple[float, float, int]:
    """Independent slow implementation: numpy.gradient + 4-neighbour mask + numpy.quantile."""
    d = depth.astype(np.float64)
    gy, gx = np.gradient(d)
    g = np.sqrt(gx**2 + gy**2)
    h, w = d.shape
    m = np.zeros_like(valid)
    for i in range(1, h - 1):
        for j in range(1, w - 1):
            m[i, j] = (
                valid[i, j] and valid[i - 1, j] and valid[i + 1, j] and valid[i, j - 1] and valid[i, j + 1]
            )
    vals = g[m]
    thr = np.quantile(vals, q)
    smooth = vals[vals <= thr]
    cv = smooth.std() / smooth.mean() if smooth.mean() > 0 and smooth.std() > 0 else 0.0
    return 1.0 / (1.0 + cv), float(thr), int(m.sum())


# -- valid mask ----------------------------------------------------------------------------------------------
def test_valid_mask_rules() -> None:
    d = np.array([[1.0, 0.0, -1.0, np.nan], [np.inf, 100.0, 100.5, 655.35]], dtype=np.float32)
    m = S.valid_mask(d)
    assert m.tolist() == [[True, False, False, False], [False, True, False, False]]  # <= far plane inclusive
    ds_mask = np.array([[False, True, True, True], [True, True, True, True]])
    assert S.valid_mask(d, ds_mask).tolist() == [[False, False, False, False], [False, True, False, False]]
    assert S.valid_mask(d, far_plane=1000.0)[1, 3]
    with pytest.raises(ValueError, match="shape"):
        S.valid_mask(d, np.ones((3, 3), bool))
    with pytest.raises(ValueError, match="2-D"):
        S.valid_mask(np.ones(4))


# -- histogram -------------------------------------------------------------------------------------------------
def test_histogram_counts_matches_numpy_and_closes_last_bin() -> None:
    rng = np.random.default_rng(0)
    for n in (1, 7, 1000, 54321):
        v = rng.gamma(2.0, 3.0, n)
        lo, hi = float(v.min()), float(v.max())
        ref = np.histogram(v, K, range=(lo, hi))[0] if hi > lo else None
        got = S.histogram_counts(v, K, lo, hi, in_range=True)
        assert got.sum() == n
        if ref is not None:
            np.testing.assert_array_equal(got, ref)
    # exact edges: 0..20 over [0, 20] -> one value per bin, 20 (the max) in the last bin
    v = np.arange(21, dtype=np.float64)
    np.testing.assert_array_equal(S.histogram_counts(v, K, 0.0, 20.0), [1] * 19 + [2])
    np.testing.assert_array_equal(S.histogram_counts(v, K, 0.0, 20.0), np.histogram(v, K, range=(0, 20))[0])
    # fixed range: outside values are clipped into the end bins
    np.testing.assert_array_equal(S.histogram_counts(np.array([-5.0, 0.5, 99.0]), 2, 0.0, 1.0), [1, 2])
    # zero range: everything in the first bin
    np.testing.assert_array_equal(S.histogram_counts(np.full(5, 3.0), 4, 3.0, 3.0), [5, 0, 0, 0])


def test_masked_histogram_matches_numpy_on_valid_values() -> None:
    rng = np.random.default_rng(5)
    for frac in (0.0, 0.3, 0.9):
        d = rng.lognormal(1.0, 0.7, (37, 53)).astype(np.float32)
        d[rng.random(d.shape) < frac / 2] = np.nan
        m = S.valid_mask(d, rng.random(d.shape) > frac / 2)
        v = d[m].astype(np.float64)
        r = S.depth_distribution_score(d, m)
        np.testing.assert_array_equal(r.counts, np.histogram(v, K, range=(v.min(), v.max()))[0])
        rf = S.depth_distribution_score(d, m, S.ScoreParams(bin_range=(1.0, 8.0)))
        np.testing.assert_array_equal(rf.counts, np.histogram(np.clip(v, 1.0, 8.0), K, range=(1.0, 8.0))[0])
        assert (r.depth_min, r.depth_max) == (v.min(), v.max())


# -- Depth Distribution Score ---------------------------------------------------------------------------------
def test_uniform_histogram_scores_one() -> None:
    # 20 distinct depths 1..20 m, equally frequent: one value per bin of [1, 20]
    d = np.repeat(np.arange(1, 21, dtype=np.float32), 7).reshape(10, 14)
    r = S.depth_distribution_score(d)
    np.testing.assert_array_equal(r.counts, [7] * 20)
    assert r.s_chi2 == 1.0 and r.s_conc == 1.0 and r.s_range == 1.0 and r.s_dist == 1.0
    assert (r.depth_min, r.depth_max, r.n_valid) == (1.0, 20.0, 140)


def test_one_bin_histogram_constant_depth() -> None:
    r = S.depth_distribution_score(np.full((8, 8), 3.5))
    assert r.counts[0] == 64 and r.counts[1:].sum() == 0
    assert r.s_chi2 == pytest.approx(math.exp(-(K - 1)), rel=1e-12)  # chi2/N = K - 1
    assert r.s_conc == 0.0  # p_max = 1 >= 0.5
    assert r.s_range == 1 / K
    assert r.s_dist == pytest.approx(0.5 * math.exp(-19) + 0.2 / K, rel=1e-12)


def test_two_spikes_and_concentration_ramp() -> None:
    # half the pixels at 1 m, half at 2 m: bins 0 and 19, each p = 0.5
    d = np.array([[1.0, 2.0] * 4] * 4)
    r = S.depth_distribution_score(d)
    assert r.s_chi2 == pytest.approx(math.exp(-9.0))  # K * (0.25 + 0.25) - 1 = 9
    assert r.s_conc == 0.0
    assert r.s_range == pytest.approx(2 / K)
    # S_conc falls linearly from 1 at p_max = 2/K to 0 at p_max = 0.5: p_max = 0.3 -> 0.5
    counts = np.array([30] + [70 // 7] * 7 + [0] * 12)
    s_dist, s_chi2, s_conc, s_range = S.distribution_from_counts(counts)
    assert s_conc == pytest.approx(0.5)
    p = counts / counts.sum()
    assert s_chi2 == pytest.approx(math.exp(-(K * np.sum(p**2) - 1)))
    assert s_range == pytest.approx(8 / K)
    assert s_dist == pytest.approx(0.5 * s_chi2 + 0.3 * s_conc + 0.2 * s_range)
    # p_max exactly 2/K still scores 1
    assert S.distribution_from_counts(np.array([2, 2] + [1] * 16 + [0, 0]))[2] == 1.0


def test_distribution_uses_only_valid_pixels_and_options() -> None:
    d = np.repeat(np.arange(1, 21, dtype=np.float64), 5).reshape(10, 10)
    bad = d.copy()
    bad[0, :] = 0.0  # invalid
    bad[1, 0] = 500.0  # beyond the far plane
    bad[1, 1] = np.nan
    m = np.ones_like(d, bool)
    m[1, 2] = False  # the dataset's own mask
    r = S.depth_distribution_score(bad, m)
    assert r.n_valid == 100 - 10 - 3
    assert r.depth_max == 20.0
    # disparity binning of 1/u with u uniform gives a uniform histogram
    u = np.repeat(np.arange(1, 21, dtype=np.float64), 3)
    rd = S.depth_distribution_score((1.0 / u).reshape(6, 10), params=S.ScoreParams(bin_space="disparity"))
    assert rd.s_chi2 == pytest.approx(1.0) and rd.s_range == 1.0
    # a fixed [0, 100] m range puts an indoor scene into a single bin
    rf = S.depth_distribution_score(d / 10.0, params=S.ScoreParams(bin_range=(0.0, 100.0)))
    assert rf.s_range == 1 / K
    # K and the weights are parameters
    r5 = S.depth_distribution_score(d, params=S.ScoreParams(bins=5, dist_weights=(1.0, 0.0, 0.0)))
    assert r5.counts.tolist() == [20] * 5 and r5.s_dist == 1.0


def test_no_valid_pixel_scores_zero() -> None:
    q = S.quality_scores(np.zeros((16, 16)))
    assert q.valid_fraction == 0.0 and q.n_valid == 0 and q.n_grad == 0
    assert q.s_chi2 == q.s_conc == q.s_range == q.s_dist == 0.0
    assert q.s_grad == 0.0 and math.isnan(q.grad_cv)
    assert q.s_total == 0.0


# -- Gradient Continuity Score ---------------------------------------------------------------------------------
def test_linear_ramp_constant_gradient_scores_one() -> None:
    y, x = np.mgrid[0:24, 0:32]
    d = (2.0 + 0.125 * x + 0.25 * y).astype(np.float32)  # exactly representable: G is exactly constant
    g = S.gradient_continuity_score(d)
    assert g.cv == 0.0 and g.s_grad == 1.0
    assert g.mean == pytest.approx(math.sqrt(0.125**2 + 0.25**2), rel=1e-15)
    assert g.n_grad == 22 * 30  # interior pixels only: the border has no 4 neighbours
    assert g.n_smooth == g.n_grad  # all equal: none is strictly above the 90th percentile
    gm = S.gradient_magnitude(d)
    assert np.isnan(gm[0]).all() and np.isnan(gm[:, -1]).all()
    np.testing.assert_allclose(gm[1:-1, 1:-1], math.sqrt(0.125**2 + 0.25**2), rtol=1e-15)
    # with float32 rounding of a non-binary slope, CV is ~1e-7 and S_grad ~1
    d32 = (2.0 + 0.1 * x + 0.2 * y).astype(np.float32)
    assert S.gradient_continuity_score(d32).s_grad == pytest.approx(1.0, abs=1e-5)


def test_constant_depth_has_zero_mean_gradient_and_scores_one() -> None:
    g = S.gradient_continuity_score(np.full((10, 10), 4.0))
    assert g.mean == 0.0 and g.cv == 0.0 and g.s_grad == 1.0


def test_step_edge_is_excluded_as_edge() -> None:
    # two ramps with a 5 m step at column 16: the 2 x 30 step pixels (6.7%) are above the 90th percentile
    y, x = np.mgrid[0:32, 0:32]
    d = 2.0 + 0.1 * x + np.where(x >= 16, 5.0, 0.0)
    g = S.gradient_continuity_score(d)
    assert g.n_grad == 900 and g.n_smooth == 840
    assert g.s_grad == pytest.approx(1.0)
    assert g.edge_threshold == pytest.approx(0.1)  # the 90th percentile is still a smooth value
    # a staircase with steps every 4 columns has 50% "edge" pixels: the smooth region mixes gradients
    d2 = 2.0 + 0.5 * (x // 4)
    g2 = S.gradient_continuity_score(d2)
    ref, thr, n = _reference_grad(d2, np.ones_like(d2, bool))
    assert g2.s_grad == pytest.approx(ref, rel=1e-12) and g2.edge_threshold == pytest.approx(thr)
    assert g2.s_grad < 0.9 and g2.n_grad == n


def test_invalid_neighbours_are_excluded() -> None:
    y, x = np.mgrid[0:20, 0:20]
    d = 2.0 + 0.3 * x
    d[8:11, 5:9] = np.nan  # a hole; its rim must not produce gradients
    d[0, 0] = 0.0
    g = S.gradient_continuity_score(d)
    assert g.s_grad == pytest.approx(1.0)
    # interior 18x18 minus the hole (3x4) and its 4-neighbour rim (2*4 + 2*3)
    assert g.n_grad == 18 * 18 - 12 - 14
    # the dataset mask works the same way as invalid values
    m = np.ones((20, 20), bool)
    m[8:11, 5:9] = False
    d2 = 2.0 + 0.3 * x.astype(np.float64)
    d2[8:11, 5:9] = 1e6  # garbage under the mask
    assert S.gradient_continuity_score(d2, m).n_grad == g.n_grad
    assert S.gradient_continuity_score(d2, m).s_grad == pytest.approx(1.0)


def test_gradient_matches_reference_on_random_masked_data() -> None:
    rng = np.random.default_rng(3)
    for trial in range(4):
        h, w = rng.integers(5, 40, size=2)
        d = rng.uniform(0.5, 30.0, (h, w)).cumsum(axis=1) / w
        valid = rng.random((h, w)) > 0.15 * trial
        g = S.gradient_continuity_score(d, valid)
        ref, thr, n = _reference_grad(d, S.valid_mask(d, valid))
        assert g.n_grad == n
        if n:
            assert g.s_grad == pytest.approx(ref, rel=1e-12)
            assert g.edge_threshold == pytest.approx(thr, rel=1e-12)
    # ties at the threshold are smooth, not edges (G strictly above the quantile is an edge)
    d = np.zeros((6, 12))
    d[:, 6:] = 1.0  # G = 0 except the two step columns (G = 0.5), 2/10 of the interior
    g = S.gradient_continuity_score(d + 1.0)
    assert g.edge_threshold == pytest.approx(0.5) and g.n_smooth == g.n_grad


def test_forward_operator_and_quantile_options() -> None:
    y, x = np.mgrid[0:10, 0:10]
    d = 1.0 + 0.25 * x
    gf = S.gradient_continuity_score(d, params=S.ScoreParams(gradient="forward"))
    assert gf.mean == pytest.approx(0.25) and gf.s_grad == pytest.approx(1.0)
    rng = np.random.default_rng(1)
    d = rng.uniform(1, 2, (16, 16))
    g50 = S.gradient_continuity_score(d, params=S.ScoreParams(edge_quantile=0.5))
    ref, thr, _ = _reference_grad(d, np.ones_like(d, bool), q=0.5)
    assert g50.s_grad == pytest.approx(ref, rel=1e-12)


def test_tiny_image_has_no_gradient() -> None:
    g = S.gradient_continuity_score(np.ones((2, 50)))
    assert g.n_grad == 0 and g.s_grad == 0.0 and math.isnan(g.cv)


def test_percentile_linear_equals_numpy() -> None:
    rng = np.random.default_rng(0)
    for n in (1, 2, 3, 10, 1001):
        a = rng.normal(size=n)
        for q in (0.0, 0.1, 0.5, 0.9, 0.95, 1.0):
            assert S.percentile_linear(a, q) == np.quantile(a, q)
    with pytest.raises(ValueError):
        S.percentile_linear(np.array([]), 0.5)


# -- total, params, registry -----------------------------------------------------------------------------------
def test_quality_scores_total_and_fields() -> None:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:48, 0:64]
    d = (3.0 + 0.05 * x + 0.2 * rng.standard_normal((48, 64))).astype(np.float32)
    d[:5] = 0.0
    q = S.quality_scores(d)
    assert q.valid_fraction == pytest.approx(43 / 48)
    assert q.s_total == pytest.approx(0.5 * q.s_dist + 0.5 * q.s_grad)
    assert (q.height, q.width) == (48, 64)
    ds = S.depth_distribution_score(d)
    gs = S.gradient_continuity_score(d)
    assert (q.s_dist, q.s_chi2, q.s_conc, q.s_range) == (ds.s_dist, ds.s_chi2, ds.s_conc, ds.s_range)
    assert (q.s_grad, q.grad_cv, q.n_grad) == (gs.s_grad, gs.cv, gs.n_grad)
    assert S.SCORE_FIELDS[-1] == "s_total"
    # the same answer for float32 and float64 input (differences are exact in float64)
    q64 = S.quality_scores(d.astype(np.float64))
    assert q64.s_grad == q.s_grad and q64.s_dist == q.s_dist


def test_registered_score_functions() -> None:
    for name in ("depth_distribution", "gradient_continuity", "total", "valid_fraction"):
        assert name in FILTERS
    d = np.repeat(np.arange(1, 21, dtype=np.float64), 4).reshape(8, 10)
    assert FILTERS.get("depth_distribution")(d) == 1.0
    assert FILTERS.get("total")(d) == S.quality_scores(d).s_total
    assert FILTERS.get("valid_fraction")(np.array([[0.0, 1.0]])) == 0.5


def test_score_params_validation_and_round_trip() -> None:
    p = S.ScoreParams(bins=10, bin_range=(0.0, 80.0), dist_weights=(0.4, 0.4, 0.2))
    assert S.ScoreParams.from_dict(p.to_dict()) == p
    assert p.concentration_low == pytest.approx(0.2)
    for bad in (
        {"bins": 0},
        {"far_plane": 0.0},
        {"bin_range": (5.0, 1.0)},
        {"gradient": "sobel"},
        {"edge_quantile": 1.5},
        {"conc_low": 0.6},
        {"bin_space": "log"},
    ):
        with pytest.raises(ValueError):
            S.ScoreParams(**bad)
    with pytest.raises(KeyError, match="unknown"):
        S.ScoreParams.from_dict({"binz": 3})
