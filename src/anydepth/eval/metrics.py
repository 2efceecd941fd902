"""Depth metrics of the Marigold protocol (``src/util/metric.py`` of prs-eth/Marigold), computed per image.

Every metric takes ``pred`` and ``gt`` depth in metres and a bool ``mask`` of shape ``[..., H, W]`` and returns a
tensor of shape ``[...]`` (one value per image; a 0-dim tensor for a single ``[H,W]`` image). Nothing is reduced
over images here and nothing calls ``.item()``: the caller averages per-image values once (``mean_over_images``).

Only the valid pixels of each image are gathered (once per call of ``compute_metrics``), so sparse ground truth
(KITTI) is cheap. Precision: element-wise terms are computed in the input dtype (float32 inputs give bit-identical
per-pixel terms to Marigold's torch code, including the strict ``<`` threshold tests); means are accumulated in
float64.

Definitions over the M valid pixels of an image (p = prediction, d = ground truth):

=========  =========================================================  =====================
name       definition                                                 better
=========  =========================================================  =====================
abs_rel    mean |p - d| / d                                           lower
sq_rel     mean |p - d|^2 / d                                         lower
rmse       sqrt(mean (p - d)^2)                                       lower
rmse_log   sqrt(mean (ln p - ln d)^2)                                 lower
log10      mean |log10 p - log10 d|                                   lower
delta1     fraction with max(p/d, d/p) < 1.25 (strict)                higher
delta2     fraction with max(p/d, d/p) < 1.25^2                       higher
delta3     fraction with max(p/d, d/p) < 1.25^3                       higher
i_rmse     sqrt(mean (1/p - 1/d)^2)                                   lower
silog      100 * sqrt(mean g^2 - (mean g)^2), g = ln p - ln d (lambda 1)   lower
=========  =========================================================  =====================

Images without valid pixels give NaN.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from anydepth.ops.alignment import masked_values

__all__ = [
    "MetricSpec",
    "METRICS",
    "DEFAULT_METRICS",
    "MARIGOLD_NAMES",
    "abs_rel",
    "sq_rel",
    "rmse",
    "rmse_log",
    "log10",
    "delta1",
    "delta2",
    "delta3",
    "i_rmse",
    "silog",
    "compute_metrics",
    "mean_over_images",
]

_Fn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def _check(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor) -> None:
    if pred.shape != gt.shape or mask.shape != gt.shape or pred.ndim < 2:
        raise ValueError(
            f"pred, gt and mask must have the same shape [..., H, W]; got {tuple(pred.shape)}, "
            f"{tuple(gt.shape)}, {tuple(mask.shape)}"
        )


def _valid_pairs(
    pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor
) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], tuple[int, ...]]:
    # Gather the valid pixels of every image once: [..., H, W] -> list of (p [M_i], d [M_i]).
    _check(pred, gt, mask)
    batch = tuple(pred.shape[:-2])
    p = pred.reshape(-1, *pred.shape[-2:])
    d = gt.reshape(-1, *gt.shape[-2:])
    m = mask.reshape(-1, *mask.shape[-2:]).bool()
    return [(masked_values(p[i], m[i]), masked_values(d[i], m[i])) for i in range(p.shape[0])], batch


_NAN = float("nan")


def _sum64(x: torch.Tensor) -> float:
    # float64 accumulation (numpy's pairwise sum on CPU: much faster than a torch dtype-converting reduction)
    if x.device.type == "cpu" and x.dtype != torch.bfloat16:
        a = x.detach().numpy()
        return float(np.count_nonzero(a)) if a.dtype == np.bool_ else float(np.sum(a, dtype=np.float64))
    return float(x.double().sum())


class _Terms:
    """Valid-pixel vectors of one image and the element-wise intermediates shared by several metrics.

    Element-wise terms are evaluated in the input dtype exactly as Marigold writes them (e.g. ``|p - d| / d``,
    ``max(p / d, d / p)``), so float32 inputs reproduce its per-pixel values bit for bit.
    """

    def __init__(self, p: torch.Tensor, d: torch.Tensor) -> None:
        self.p, self.d, self.n = p, d, int(p.numel())
        self._cache: dict[str, torch.Tensor] = {}

    def _get(self, key: str, fn: Callable[[], torch.Tensor]) -> torch.Tensor:
        if key not in self._cache:
            self._cache[key] = fn()
        return self._cache[key]

    @property
    def abs_diff(self) -> torch.Tensor:
        return self._get("abs_diff", lambda: torch.abs(self.p - self.d))

    @property
    def log_diff(self) -> torch.Tensor:
        return self._get("log_diff", lambda: torch.log(self.p) - torch.log(self.d))

    @property
    def ratio(self) -> torch.Tensor:
        return self._get("ratio", lambda: torch.maximum(self.p / self.d, self.d / self.p))

    def mean(self, x: torch.Tensor) -> float:
        return _sum64(x) / self.n if self.n else _NAN


def _k_abs_rel(t: _Terms) -> float:
    return t.mean(t.abs_diff / t.d)


def _k_sq_rel(t: _Terms) -> float:
    return t.mean(torch.pow(t.abs_diff, 2) / t.d)


def _k_rmse(t: _Terms) -> float:
    return math.sqrt(t.mean(torch.pow(t.p - t.d, 2)))


def _k_rmse_log(t: _Terms) -> float:
    return math.sqrt(t.mean(torch.pow(t.log_diff, 2)))


def _k_log10(t: _Terms) -> float:
    return t.mean(torch.abs(torch.log10(t.p) - torch.log10(t.d)))


def _k_delta(thr: float) -> Callable[[_Terms], float]:
    def k(t: _Terms) -> float:
        return t.mean(t.ratio < thr)

    return k


def _k_i_rmse(t: _Terms) -> float:
    return math.sqrt(t.mean(torch.pow(1.0 / t.p - 1.0 / t.d, 2)))


def _k_silog(t: _Terms) -> float:
    if not t.n:
        return _NAN
    g = t.log_diff
    if g.device.type == "cpu" and g.dtype != torch.bfloat16:
        var = float(np.var(g.detach().numpy(), dtype=np.float64))  # two-pass, centred, float64
    else:
        g64 = g.double()
        var = float(((g64 - g64.mean()) ** 2).mean())
    return math.sqrt(max(var, 0.0)) * 100.0


_KERNELS: dict[str, Callable[[_Terms], float]] = {
    "abs_rel": _k_abs_rel,
    "sq_rel": _k_sq_rel,
    "rmse": _k_rmse,
    "rmse_log": _k_rmse_log,
    "log10": _k_log10,
    "delta1": _k_delta(1.25),
    "delta2": _k_delta(1.25**2),
    "delta3": _k_delta(1.25**3),
    "i_rmse": _k_i_rmse,
    "silog": _k_silog,
}


def _evaluate(
    names: Sequence[str], pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor
) -> dict[str, torch.Tensor]:
    for name in names:
        if name not in _KERNELS:
            raise KeyError(f"unknown metric {name!r}; valid: {', '.join(_KERNELS)}")
    pairs, batch = _valid_pairs(pred, gt, mask)
    terms = [_Terms(p, d) for p, d in pairs]
    return {
        name: torch.tensor([_KERNELS[name](t) for t in terms], dtype=torch.float64).reshape(batch)
        for name in names
    }


def _metric(name: str, pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return _evaluate([name], pred, gt, mask)[name]


def abs_rel(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean absolute relative error ``|p - d| / d`` over valid pixels. Returns ``[...]`` float64."""
    return _metric("abs_rel", pred, gt, mask)


def sq_rel(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared relative error ``|p - d|^2 / d`` (metres) over valid pixels. Returns ``[...]`` float64."""
    return _metric("sq_rel", pred, gt, mask)


def rmse(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Root mean squared error in metres over valid pixels. Returns ``[...]`` float64."""
    return _metric("rmse", pred, gt, mask)


def rmse_log(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Root mean squared error of natural logs over valid pixels. Returns ``[...]`` float64."""
    return _metric("rmse_log", pred, gt, mask)


def log10(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean absolute error of base-10 logs over valid pixels. Returns ``[...]`` float64."""
    return _metric("log10", pred, gt, mask)


def delta1(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Fraction of valid pixels with ``max(p/d, d/p) < 1.25`` (strict). Returns ``[...]`` float64 in [0, 1]."""
    return _metric("delta1", pred, gt, mask)


def delta2(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Fraction of valid pixels with ``max(p/d, d/p) < 1.25**2`` (strict). Returns ``[...]`` float64."""
    return _metric("delta2", pred, gt, mask)


def delta3(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Fraction of valid pixels with ``max(p/d, d/p) < 1.25**3`` (strict). Returns ``[...]`` float64."""
    return _metric("delta3", pred, gt, mask)


def i_rmse(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Root mean squared error of inverse depth (1/m) over valid pixels. Returns ``[...]`` float64."""
    return _metric("i_rmse", pred, gt, mask)


def silog(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Scale-invariant log error ×100 with lambda = 1: ``100 * sqrt(Var(g))``, ``g = ln p - ln d``.

    The variance is computed on centred values in float64 (Marigold evaluates ``mean g^2 - (mean g)^2`` in
    float32; both are the same quantity). Returns ``[...]`` float64.
    """
    return _metric("silog", pred, gt, mask)


@dataclass(frozen=True)
class MetricSpec:
    """A metric's name, direction and function (``fn(pred, gt, mask) -> [...]``).

    Attributes:
        name: key used in results (``abs_rel``, ``delta1``, ...).
        lower_is_better: direction, for tables and model selection.
        fn: the metric function.
        percent: True for metrics papers print ×100 (AbsRel, deltas).
        marigold_name: the function name in Marigold's ``src/util/metric.py``.
    """

    name: str
    lower_is_better: bool
    fn: _Fn
    percent: bool
    marigold_name: str


METRICS: dict[str, MetricSpec] = {
    m.name: m
    for m in (
        MetricSpec("abs_rel", True, abs_rel, True, "abs_relative_difference"),
        MetricSpec("sq_rel", True, sq_rel, False, "squared_relative_difference"),
        MetricSpec("rmse", True, rmse, False, "rmse_linear"),
        MetricSpec("rmse_log", True, rmse_log, False, "rmse_log"),
        MetricSpec("log10", True, log10, False, "log10"),
        MetricSpec("delta1", False, delta1, True, "delta1_acc"),
        MetricSpec("delta2", False, delta2, True, "delta2_acc"),
        MetricSpec("delta3", False, delta3, True, "delta3_acc"),
        MetricSpec("i_rmse", True, i_rmse, False, "i_rmse"),
        MetricSpec("silog", True, silog, False, "silog_rmse"),
    )
}

#: All ten metrics in Marigold's order.
DEFAULT_METRICS: tuple[str, ...] = tuple(METRICS)

#: our name -> Marigold function name
MARIGOLD_NAMES: dict[str, str] = {k: v.marigold_name for k, v in METRICS.items()}


def compute_metrics(
    pred: torch.Tensor | np.ndarray,
    gt: torch.Tensor | np.ndarray,
    mask: torch.Tensor | np.ndarray,
    names: Sequence[str] | None = None,
) -> dict[str, torch.Tensor]:
    """Compute several metrics per image.

    Args:
        pred: ``[..., H, W]`` predicted depth in metres (> 0 on valid pixels).
        gt: ``[..., H, W]`` ground-truth depth in metres.
        mask: ``[..., H, W]`` bool valid pixels.
        names: metric names (default: all of ``DEFAULT_METRICS``).

    Returns:
        ``{name: tensor [...]}`` float64, one value per image.

    Raises:
        KeyError: unknown metric name (lists the valid ones).
    """
    return _evaluate(
        list(names or DEFAULT_METRICS),
        torch.as_tensor(pred),
        torch.as_tensor(gt),
        torch.as_tensor(mask).bool(),
    )


def mean_over_images(per_image: Mapping[str, Iterable[float] | torch.Tensor]) -> dict[str, float]:
    """Average per-image metric values over images (float64), the protocol's reduction.

    Args:
        per_image: ``{name: values}`` with one value per image.

    Returns:
        ``{name: mean}``; NaN for an empty list.
    """
    out: dict[str, float] = {}
    for k, v in per_image.items():
        arr = v if isinstance(v, torch.Tensor) else torch.as_tensor(list(v), dtype=torch.float64)
        arr = arr.double().reshape(-1)
        out[k] = float(arr.mean()) if arr.numel() else float("nan")
    return out
