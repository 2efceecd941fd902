"""Each metric of ``anydepth.eval.metrics`` against a hand computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from anydepth.eval.metrics import DEFAULT_METRICS, METRICS, compute_metrics, mean_over_images

# one image, 2x3; the last pixel is invalid and holds garbage that must be ignored (including gt = 0)
P = torch.tensor([[1.0, 2.0, 4.0], [3.0, 1.2, 7.0]])
D = torch.tensor([[1.0, 1.0, 5.0], [2.0, 1.0, 0.0]])
M = torch.tensor([[True, True, True], [True, True, False]])
pv = [1.0, 2.0, 4.0, 3.0, 1.2]
dv = [1.0, 1.0, 5.0, 2.0, 1.0]
N = 5


def _m(name: str) -> float:
    return float(METRICS[name].fn(P, D, M))


def test_abs_rel() -> None:
    assert _m("abs_rel") == pytest.approx((0 + 1 + 0.2 + 0.5 + 0.2) / N, rel=1e-6)


def test_sq_rel() -> None:
    assert _m("sq_rel") == pytest.approx((0 + 1 + 1 / 5 + 1 / 2 + 0.04) / N, rel=1e-6)


def test_rmse() -> None:
    assert _m("rmse") == pytest.approx(math.sqrt((0 + 1 + 1 + 1 + 0.04) / N), rel=1e-6)


def test_rmse_log() -> None:
    ref = math.sqrt(sum((math.log(p) - math.log(d)) ** 2 for p, d in zip(pv, dv, strict=True)) / N)
    assert _m("rmse_log") == pytest.approx(ref, rel=1e-6)


def test_log10() -> None:
    ref = sum(abs(math.log10(p) - math.log10(d)) for p, d in zip(pv, dv, strict=True)) / N
    assert _m("log10") == pytest.approx(ref, rel=1e-6)


def test_deltas_strict_threshold() -> None:
    # ratios: 1, 2, 1.25, 1.5, 1.2 -> delta1 counts 1 and 1.2 (1.25 itself is NOT < 1.25)
    assert _m("delta1") == pytest.approx(2 / 5)
    assert _m("delta2") == pytest.approx(4 / 5)  # 1.5625 > 1.5
    assert _m("delta3") == pytest.approx(4 / 5)  # 1.953125 < 2


def test_i_rmse() -> None:
    ref = math.sqrt(sum((1 / p - 1 / d) ** 2 for p, d in zip(pv, dv, strict=True)) / N)
    assert _m("i_rmse") == pytest.approx(ref, rel=1e-6)


def test_silog_lambda_one_times_100() -> None:
    g = [math.log(p) - math.log(d) for p, d in zip(pv, dv, strict=True)]
    mean = sum(g) / N
    ref = 100 * math.sqrt(sum(x * x for x in g) / N - mean * mean)
    assert _m("silog") == pytest.approx(ref, rel=1e-6)
    # scale invariance: a global scale leaves SILog unchanged and is 0 for a scaled-perfect prediction
    assert float(METRICS["silog"].fn(P * 3.0, D, M)) == pytest.approx(ref, rel=1e-5)
    assert float(METRICS["silog"].fn(D[:1] * 2.0, D[:1], M[:1])) == pytest.approx(0.0, abs=1e-5)


def test_perfect_prediction() -> None:
    out = compute_metrics(D, D, M)
    for k in ("abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "i_rmse", "silog"):
        assert float(out[k]) == pytest.approx(0.0, abs=1e-12)
    for k in ("delta1", "delta2", "delta3"):
        assert float(out[k]) == 1.0


def test_batched_shapes_and_float64_result() -> None:
    p = torch.stack([P, D])
    d = torch.stack([D, D])
    m = torch.stack([M, M])
    out = compute_metrics(p, d, m)
    assert set(out) == set(DEFAULT_METRICS)
    for v in out.values():
        assert v.shape == (2,) and v.dtype == torch.float64
    assert float(out["abs_rel"][0]) == pytest.approx(_m("abs_rel"))
    assert float(out["abs_rel"][1]) == 0.0
    single = compute_metrics(P.numpy(), D.numpy(), M.numpy(), ["abs_rel"])  # numpy inputs, 0-dim result
    assert single["abs_rel"].shape == ()


def test_no_valid_pixel_gives_nan() -> None:
    out = compute_metrics(P, D, torch.zeros_like(M), ["abs_rel", "delta1"])
    assert math.isnan(float(out["abs_rel"])) and math.isnan(float(out["delta1"]))


def test_mean_over_images_is_per_image_average() -> None:
    assert mean_over_images({"abs_rel": [0.1, 0.3], "delta1": torch.tensor([1.0, 0.5])}) == {
        "abs_rel": pytest.approx(0.2),
        "delta1": pytest.approx(0.75),
    }
    assert math.isnan(mean_over_images({"x": []})["x"])


def test_unknown_metric_and_shape_errors() -> None:
    with pytest.raises(KeyError, match="unknown metric"):
        compute_metrics(P, D, M, ["absrel"])
    with pytest.raises(ValueError, match="same shape"):
        compute_metrics(P, D[:, :2], M)


def test_metric_directions() -> None:
    assert [k for k, v in METRICS.items() if not v.lower_is_better] == ["delta1", "delta2", "delta3"]
    assert np.all([METRICS[k].percent for k in ("abs_rel", "delta1")])
