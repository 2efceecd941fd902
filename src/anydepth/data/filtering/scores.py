"""Per-sample depth-quality scores of the AnyDepth data filter (paper Appendix A.2, Eqs. 7-10).

Every function here is pure: it takes a depth map ``[H,W]`` in metres (any float dtype; computed in float64) and
an optional valid mask ``[H,W]`` (bool) and returns plain Python floats. No IO, no logging, no global state.

Scores (defaults are the paper's; every open choice is a field of :class:`ScoreParams`):

* **Valid pixels**: finite, ``> min_depth`` (0) and ``<= far_plane`` (100 m), and inside the dataset's own mask
  (its sky/invalid codes). ``valid_fraction = n_valid / (H*W)``.
* **Depth Distribution Score** ``S_dist = 0.5 S_chi2 + 0.3 S_conc + 0.2 S_range`` over ``K = 20`` equal-width bins
  spanning the sample's own ``[min, max]`` valid depth (the last bin closed, as ``numpy.histogram``):
  ``S_chi2 = exp(-chi2/N)`` with ``chi2 = sum_k (n_k - N/K)^2 / (N/K)``;
  ``S_conc = 1`` if ``p_max <= 2/K`` else ``1 - min(1, (p_max - 2/K) / (0.5 - 2/K))``;
  ``S_range = (non-empty bins) / K``.
* **Gradient Continuity Score** ``S_grad = 1 / (1 + CV)``: ``G = sqrt(dx^2 + dy^2)`` with central differences in
  pixel units (the interior values of ``numpy.gradient``) of depth in metres, evaluated only at valid pixels whose
  4 neighbours are valid (pixels on the image border have no 4 neighbours and are never evaluated); edge pixels
  are those with ``G`` strictly above the 90th percentile (``numpy.percentile`` "linear" method) of ``G``; over
  the remaining "smooth" pixels ``CV = std(G) / mean(G)`` (population std).
* ``S_total = 0.5 S_dist + 0.5 S_grad``.

Degenerate cases (all documented in docs/filtering.md):

* no valid pixel: ``S_chi2 = S_conc = S_range = S_dist = 0`` (nothing can be assessed; such a sample has
  ``valid_fraction = 0`` and is removed by the valid-fraction rule anyway);
* a single valid depth value (zero range): all pixels fall in the first bin, i.e. the one-bin histogram:
  ``S_chi2 = exp(-(K-1))``, ``S_conc = 0``, ``S_range = 1/K``;
* no pixel with a gradient (no valid pixel has 4 valid neighbours): ``S_grad = 0`` and ``grad_cv = nan``;
* all smooth-region gradients equal (including all zero, i.e. ``mean(G) = 0``): ``CV = 0`` and ``S_grad = 1``.
"""

from __future__ import annotations

import math
import threading
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

import numpy as np

from anydepth.registry import FILTERS

__all__ = [
    "ScoreParams",
    "DistributionScore",
    "GradientScore",
    "QualityScores",
    "valid_mask",
    "histogram_counts",
    "distribution_from_counts",
    "depth_distribution_score",
    "gradient_magnitude",
    "percentile_linear",
    "gradient_continuity_score",
    "quality_scores",
    "SCORE_FIELDS",
]


@dataclass(frozen=True)
class ScoreParams:
    """Every tunable choice of the scores. Defaults reproduce the paper (and this project's readings of it).

    Attributes:
        far_plane: valid depth must be ``<= far_plane`` metres (100 m; VKITTI2 sky is 655.35 m).
        min_depth: valid depth must be ``> min_depth`` metres.
        bins: number of equal-width histogram bins ``K``.
        bin_range: ``None`` for the sample's own ``[min, max]`` valid depth (default), or a fixed ``(lo, hi)`` in
            metres; with a fixed range, values outside it are clipped into the first/last bin.
        bin_space: ``"depth"`` (bin metric depth, default) or ``"disparity"`` (bin ``1/depth``; a fixed
            ``bin_range`` is then in 1/metres).
        conc_low: ``p_max`` at or below which ``S_conc = 1``; ``None`` means ``2/K``.
        conc_high: ``p_max`` at or above which ``S_conc = 0`` (0.5).
        dist_weights: weights of ``(S_chi2, S_conc, S_range)`` in ``S_dist``.
        gradient: ``"central"`` (``numpy.gradient`` interior central differences, default) or ``"forward"``
            (``D[i, j+1] - D[i, j]`` and ``D[i+1, j] - D[i, j]``); both need all 4 neighbours valid.
        edge_quantile: pixels with ``G`` strictly above this quantile of ``G`` are edges (0.9, the top 10%).
        total_weights: weights of ``(S_dist, S_grad)`` in ``S_total``.
    """

    far_plane: float = 100.0
    min_depth: float = 0.0
    bins: int = 20
    bin_range: tuple[float, float] | None = None
    bin_space: str = "depth"
    conc_low: float | None = None
    conc_high: float = 0.5
    dist_weights: tuple[float, float, float] = (0.5, 0.3, 0.2)
    gradient: str = "central"
    edge_quantile: float = 0.9
    total_weights: tuple[float, float] = field(default=(0.5, 0.5))

    def __post_init__(self) -> None:
        if not self.bins >= 1:
            raise ValueError(f"bins must be >= 1, got {self.bins}")
        if not self.far_plane > self.min_depth:
            raise ValueError(f"far_plane ({self.far_plane}) must exceed min_depth ({self.min_depth})")
        if self.bin_range is not None:
            lo, hi = self.bin_range
            if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
                raise ValueError(f"bin_range must be a finite (lo, hi) with hi > lo, got {self.bin_range}")
        if self.bin_space not in ("depth", "disparity"):
            raise ValueError(f"bin_space must be 'depth' or 'disparity', got {self.bin_space!r}")
        low = self.concentration_low
        if not 0.0 <= low < self.conc_high <= 1.0:
            raise ValueError(f"need 0 <= conc_low ({low}) < conc_high ({self.conc_high}) <= 1")
        if len(self.dist_weights) != 3 or len(self.total_weights) != 2:
            raise ValueError("dist_weights needs 3 values and total_weights 2")
        if self.gradient not in ("central", "forward"):
            raise ValueError(f"gradient must be 'central' or 'forward', got {self.gradient!r}")
        if not 0.0 <= self.edge_quantile <= 1.0:
            raise ValueError(f"edge_quantile must be in [0, 1], got {self.edge_quantile}")

    @property
    def concentration_low(self) -> float:
        """The ``p_max`` threshold below which ``S_conc = 1`` (``2/K`` unless set)."""
        return 2.0 / self.bins if self.conc_low is None else float(self.conc_low)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (tuples become lists)."""
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ScoreParams:
        """Inverse of :meth:`to_dict`.

        Raises:
            KeyError: an unknown field name.
        """
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise KeyError(f"unknown score parameter(s) {sorted(unknown)}; valid: {sorted(known)}")
        kw: dict[str, Any] = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()}
        return cls(**kw)


DEFAULT_PARAMS = ScoreParams()

# Per-thread scratch buffers, reused between calls: allocating fresh multi-megabyte arrays for every sample costs
# more (page faults) than the arithmetic. Results never alias these buffers (only Python floats and fresh arrays
# are returned), so the functions stay pure from the caller's point of view.
_SCRATCH = threading.local()


def _scratch(name: str, n: int, dtype: Any) -> np.ndarray:
    """A 1-D scratch array of ``n`` elements (contents undefined), private to this thread."""
    bufs: dict[str, np.ndarray] | None = getattr(_SCRATCH, "bufs", None)
    if bufs is None:
        bufs = _SCRATCH.bufs = {}
    b = bufs.get(name)
    if b is None or b.size < n or b.dtype != np.dtype(dtype):
        b = bufs[name] = np.empty(max(n, 1), dtype=dtype)
    return b[:n]


class DistributionScore(NamedTuple):
    """Depth Distribution Score and its parts (all in [0, 1]); ``counts`` is the ``[K]`` histogram."""

    s_dist: float
    s_chi2: float
    s_conc: float
    s_range: float
    n_valid: int
    depth_min: float
    depth_max: float
    counts: np.ndarray


class GradientScore(NamedTuple):
    """Gradient Continuity Score and its statistics (``G`` in metres per pixel)."""

    s_grad: float
    cv: float
    mean: float
    std: float
    edge_threshold: float
    n_grad: int
    n_smooth: int


class QualityScores(NamedTuple):
    """Every per-sample quantity written to the scores table."""

    height: int
    width: int
    n_valid: int
    valid_fraction: float
    depth_min: float
    depth_max: float
    s_chi2: float
    s_conc: float
    s_range: float
    s_dist: float
    n_grad: int
    edge_threshold: float
    grad_mean: float
    grad_cv: float
    s_grad: float
    s_total: float


SCORE_FIELDS: tuple[str, ...] = QualityScores._fields


# -- valid mask ---------------------------------------------------------------------------------------------
def valid_mask(
    depth: np.ndarray,
    valid: np.ndarray | None = None,
    *,
    far_plane: float = DEFAULT_PARAMS.far_plane,
    min_depth: float = DEFAULT_PARAMS.min_depth,
) -> np.ndarray:
    """Valid pixels: finite, ``> min_depth``, ``<= far_plane`` and inside ``valid`` (if given).

    Args:
        depth: ``[H,W]`` depth in metres.
        valid: optional ``[H,W]`` bool mask from the dataset reader (its own sky/invalid codes).
        far_plane: largest valid depth in metres (inclusive).
        min_depth: valid depth must be strictly greater than this (metres).

    Returns:
        ``[H,W]`` bool mask.

    Raises:
        ValueError: ``depth`` is not 2-D or ``valid`` has another shape.
    """
    d = np.asarray(depth)
    if d.ndim != 2:
        raise ValueError(f"depth must be a 2-D [H,W] array, got shape {d.shape}")
    with np.errstate(invalid="ignore"):
        # NaN compares False, +-inf fail one of the two bounds (far_plane is finite in practice; isfinite for safety)
        m = (d > min_depth) & (d <= far_plane)
    if not math.isfinite(far_plane):
        m &= np.isfinite(d)
    if valid is not None:
        v = np.asarray(valid)
        if v.shape != d.shape:
            raise ValueError(f"valid mask shape {v.shape} differs from depth shape {d.shape}")
        m &= v.astype(bool, copy=False)
    return m


# -- Depth Distribution Score --------------------------------------------------------------------------------
def histogram_counts(
    values: np.ndarray, bins: int, lo: float, hi: float, *, in_range: bool = False
) -> np.ndarray:
    """Counts of ``bins`` equal-width bins over ``[lo, hi]`` with the last bin closed, via ``bincount``.

    The bin of a value ``v`` is ``min(floor((v - lo) * bins / (hi - lo)), bins - 1)`` computed in float64: the
    same bins as ``numpy.histogram(values, bins, range=(lo, hi))`` (which can differ only for a value within a
    rounding error of an interior edge), several times faster. Values outside ``[lo, hi]`` are clipped into
    the first/last bin. If ``hi <= lo`` (a single depth value) every value is counted in the first bin.

    Args:
        values: 1-D values (any float dtype; the arithmetic is float64).
        bins: number of bins ``K``.
        lo, hi: range of the bins.
        in_range: the caller guarantees ``lo <= values <= hi`` (skips the clipping pass).

    Returns:
        ``[K]`` int64 counts summing to ``len(values)``.
    """
    v = np.asarray(values).ravel()
    n = v.size
    if n == 0:
        return np.zeros(bins, dtype=np.int64)
    if not hi > lo:
        out = np.zeros(bins, dtype=np.int64)
        out[0] = n
        return out
    f = np.subtract(v, lo, dtype=np.float64, out=_scratch("hist_f", n, np.float64))
    f *= bins / (hi - lo)
    if not in_range:
        np.clip(f, 0.0, float(bins), out=f)
    idx = _scratch("hist_i", n, np.intp)
    np.copyto(idx, f, casting="unsafe")  # truncation == floor for f >= 0
    counts = np.bincount(idx, minlength=bins + 1).astype(np.int64, copy=False)
    counts[bins - 1] += counts[bins]  # v == hi lands in the last bin (closed)
    return counts[:bins].copy()


def distribution_from_counts(counts: np.ndarray, params: ScoreParams = DEFAULT_PARAMS) -> tuple[float, ...]:
    """``(S_dist, S_chi2, S_conc, S_range)`` from a ``[K]`` histogram (Eqs. 7-9).

    A histogram with no samples (``N = 0``) scores 0 on every part.
    """
    n = np.asarray(counts, dtype=np.float64).ravel()
    k = n.size
    total = float(n.sum())
    if total <= 0:
        return 0.0, 0.0, 0.0, 0.0
    nbar = total / k
    chi2 = float(np.sum((n - nbar) ** 2) / nbar)
    s_chi2 = math.exp(-chi2 / total)
    p_max = float(n.max()) / total
    low, high = params.concentration_low, params.conc_high
    if p_max <= low:
        s_conc = 1.0
    else:
        s_conc = 1.0 - min(1.0, (p_max - low) / (high - low))
    s_range = float(np.count_nonzero(n)) / k
    w1, w2, w3 = params.dist_weights
    s_dist = w1 * s_chi2 + w2 * s_conc + w3 * s_range
    return s_dist, s_chi2, s_conc, s_range


def _valid_values(depth: np.ndarray, mask: np.ndarray, params: ScoreParams) -> np.ndarray:
    """The valid values (1-D, in a scratch buffer): depth, or 1/depth for ``bin_space="disparity"``."""
    d = np.asarray(depth)
    if not np.issubdtype(d.dtype, np.floating):
        d = d.astype(np.float64)
    n = int(np.count_nonzero(mask))
    v = np.compress(mask.ravel(), d.ravel(), out=_scratch(f"vals_{d.dtype.str}", n, d.dtype))
    if params.bin_space == "disparity":
        v = np.divide(1.0, v, dtype=np.float64, out=_scratch("vals_disp", n, np.float64))
    return v


def depth_distribution_score(
    depth: np.ndarray, valid: np.ndarray | None = None, params: ScoreParams = DEFAULT_PARAMS
) -> DistributionScore:
    """Depth Distribution Score ``S_dist`` of one depth map (paper Eqs. 7-9).

    Args:
        depth: ``[H,W]`` depth in metres.
        valid: optional ``[H,W]`` bool mask of the dataset's valid pixels (combined with :func:`valid_mask`).
        params: score parameters.

    Returns:
        :class:`DistributionScore` (``depth_min``/``depth_max`` in metres; nan when there is no valid pixel).
    """
    mask = valid_mask(depth, valid, far_plane=params.far_plane, min_depth=params.min_depth)
    return _distribution(np.asarray(depth), mask, params)


def _masked_counts(
    d: np.ndarray, mask: np.ndarray, n: int, bins: int, lo: float, hi: float, clip: bool
) -> np.ndarray:
    """``histogram_counts(d[mask], ...)`` without compressing ``d``: masked pixels go to a discarded bin."""
    if not hi > lo:
        out = np.zeros(bins, dtype=np.int64)
        out[0] = n
        return out
    f = np.subtract(d, lo, dtype=np.float64, out=_scratch("hist_f", d.size, np.float64).reshape(d.shape))
    f *= bins / (hi - lo)
    if clip:
        np.clip(f, 0.0, float(bins), out=f)
    if n < d.size:
        inv = np.logical_not(mask, out=_scratch("hist_inv", d.size, np.bool_).reshape(d.shape))
        np.copyto(f, float(bins + 1), where=inv)  # also replaces nan/inf of invalid pixels
    idx = _scratch("hist_i", d.size, np.intp)
    np.copyto(idx, f.ravel(), casting="unsafe")  # truncation == floor for f >= 0
    counts = np.bincount(idx, minlength=bins + 2).astype(np.int64, copy=False)
    counts[bins - 1] += counts[bins]  # the maximum lands in the last bin (closed)
    return counts[:bins].copy()


def _distribution(depth: np.ndarray, mask: np.ndarray, params: ScoreParams) -> DistributionScore:
    d = np.asarray(depth)
    if not np.issubdtype(d.dtype, np.floating):
        d = d.astype(np.float64)
    n = int(np.count_nonzero(mask))
    if n == 0:
        return DistributionScore(0.0, 0.0, 0.0, 0.0, 0, math.nan, math.nan, np.zeros(params.bins, np.int64))
    if params.bin_space == "disparity":
        v = _valid_values(d, mask, params)
        vmin, vmax = float(v.min()), float(v.max())
        if params.bin_range is None:
            counts = histogram_counts(v, params.bins, vmin, vmax, in_range=True)
        else:
            counts = histogram_counts(v, params.bins, *params.bin_range)
        dmin, dmax = 1.0 / vmax, 1.0 / vmin
    else:
        # depth: bin the whole map and drop the masked pixels (cheaper than compressing the valid values)
        if n == d.size:
            vmin, vmax = float(d.min()), float(d.max())
        else:
            vmin = float(np.min(d, where=mask, initial=np.inf))
            vmax = float(np.max(d, where=mask, initial=-np.inf))
        if params.bin_range is None:
            counts = _masked_counts(d, mask, n, params.bins, vmin, vmax, clip=False)
        else:
            counts = _masked_counts(d, mask, n, params.bins, *params.bin_range, clip=True)
        dmin, dmax = vmin, vmax
    s_dist, s_chi2, s_conc, s_range = distribution_from_counts(counts, params)
    return DistributionScore(s_dist, s_chi2, s_conc, s_range, n, dmin, dmax, counts)


# -- Gradient Continuity Score ------------------------------------------------------------------------------
def _gradient_interior(
    depth: np.ndarray, mask: np.ndarray, operator: str, *, scratch: bool = True
) -> tuple[np.ndarray | None, np.ndarray | None, float]:
    """Squared (unscaled) gradient magnitude on the image interior ``[H-2, W-2]`` and its evaluation mask.

    Returns ``(g2, m, scale)`` with ``G = scale * sqrt(g2)`` (float64); ``(None, None, 1)`` if the image has no
    interior (``H < 3`` or ``W < 3``). With ``scratch`` the arrays live in this thread's scratch buffers.
    """
    h, w = mask.shape
    if h < 3 or w < 3:
        return None, None, 1.0
    d = np.asarray(depth)
    if not np.issubdtype(d.dtype, np.floating):
        d = d.astype(np.float64)
    shp = (h - 2, w - 2)
    n = shp[0] * shp[1]

    def buf(name: str, dtype: type) -> np.ndarray:
        return _scratch(name, n, dtype).reshape(shp) if scratch else np.empty(shp, dtype)

    c = (slice(1, -1), slice(1, -1))
    m = np.logical_and(mask[c], mask[:-2, 1:-1], out=buf("grad_m", np.bool_))
    m &= mask[2:, 1:-1]
    m &= mask[1:-1, :-2]
    m &= mask[1:-1, 2:]
    # differences in float64 (exact for float32 input); the cast happens inside the ufunc loop
    gx, gy = buf("grad_x", np.float64), buf("grad_y", np.float64)
    if operator == "central":
        np.subtract(d[1:-1, 2:], d[1:-1, :-2], dtype=np.float64, out=gx)
        np.subtract(d[2:, 1:-1], d[:-2, 1:-1], dtype=np.float64, out=gy)
        scale = 0.5
    else:  # forward
        np.subtract(d[1:-1, 2:], d[c], dtype=np.float64, out=gx)
        np.subtract(d[2:, 1:-1], d[c], dtype=np.float64, out=gy)
        scale = 1.0
    with np.errstate(invalid="ignore", over="ignore"):  # invalid pixels may hold inf/nan; they are masked
        np.multiply(gx, gx, out=gx)
        np.multiply(gy, gy, out=gy)
        gx += gy
    return gx, m, scale


def gradient_magnitude(
    depth: np.ndarray, valid: np.ndarray | None = None, params: ScoreParams = DEFAULT_PARAMS
) -> np.ndarray:
    """Gradient magnitude map ``G`` ``[H,W]`` (metres per pixel), nan where it is not evaluated.

    ``G`` is defined at valid pixels whose 4 neighbours are valid (never on the image border); elsewhere nan.
    Used for galleries; :func:`gradient_continuity_score` computes the same values without building the map.
    """
    d = np.asarray(depth)
    mask = valid_mask(d, valid, far_plane=params.far_plane, min_depth=params.min_depth)
    out = np.full(d.shape, np.nan, dtype=np.float64)
    g2, m, scale = _gradient_interior(d, mask, params.gradient, scratch=False)
    if g2 is not None and m is not None:
        g = np.sqrt(g2) * scale
        g[~m] = np.nan
        out[1:-1, 1:-1] = g
    return out


def _lerp(a: float, b: float, t: float) -> float:
    # numpy's _lerp: symmetric form that is exact at t = 0 and t = 1
    diff = b - a
    return b - diff * (1.0 - t) if t >= 0.5 else a + diff * t


def percentile_linear(values: np.ndarray, q: float) -> float:
    """The ``q`` quantile (``0 <= q <= 1``) with linear interpolation, equal to ``numpy.quantile(values, q)``.

    Uses ``numpy.partition`` (linear time) instead of a full sort.

    Raises:
        ValueError: ``values`` is empty.
    """
    a = np.asarray(values, dtype=np.float64).ravel()
    n = a.size
    if n == 0:
        raise ValueError("percentile of an empty array")
    pos = q * (n - 1)
    k = int(math.floor(pos))
    t = pos - k
    if k >= n - 1:
        return float(np.partition(a, n - 1)[n - 1])
    p = np.partition(a, [k, k + 1])
    return _lerp(float(p[k]), float(p[k + 1]), t)


def gradient_continuity_score(
    depth: np.ndarray, valid: np.ndarray | None = None, params: ScoreParams = DEFAULT_PARAMS
) -> GradientScore:
    """Gradient Continuity Score ``S_grad = 1/(1 + CV)`` of one depth map (paper Eq. 10).

    Args:
        depth: ``[H,W]`` depth in metres.
        valid: optional ``[H,W]`` bool mask of the dataset's valid pixels.
        params: score parameters (``gradient``, ``edge_quantile``, ``far_plane``, ``min_depth``).

    Returns:
        :class:`GradientScore`; ``mean``, ``std`` and ``edge_threshold`` in metres per pixel.
    """
    d = np.asarray(depth)
    mask = valid_mask(d, valid, far_plane=params.far_plane, min_depth=params.min_depth)
    return _gradient(d, mask, params)


def _gradient(depth: np.ndarray, mask: np.ndarray, params: ScoreParams) -> GradientScore:
    g2full, m, scale = _gradient_interior(depth, mask, params.gradient)
    if g2full is None or m is None:
        return GradientScore(0.0, math.nan, math.nan, math.nan, math.nan, 0, 0)
    # squared magnitudes; pixels that are not evaluated are set to +inf, which ranks them above every real
    # value, so the first n entries of the partition below are exactly the evaluated pixels' order statistics
    # (cheaper than compressing the array)
    g2 = g2full.ravel()
    n = int(np.count_nonzero(m))
    if n == 0:
        return GradientScore(0.0, math.nan, math.nan, math.nan, math.nan, 0, 0)
    if n < g2.size:
        inv = np.logical_not(m, out=_scratch("grad_inv", m.size, np.bool_).reshape(m.shape))
        np.copyto(g2full, np.inf, where=inv)
    # Work with r = sqrt(g2), G = scale * r: scale is 1 or 1/2, so scaling is exact and commutes with every
    # comparison and with the interpolation below; mean and std are scaled at the end.
    # The edge_quantile of G with linear interpolation (numpy.quantile "linear"), from a partition, not a sort.
    pos = params.edge_quantile * (n - 1)
    k = min(int(math.floor(pos)), n - 1)
    t = pos - k
    g2.partition(k)
    rk = math.sqrt(float(g2[k]))
    upper = g2[k + 1 :]  # every value here is >= g2[k]; not-evaluated pixels are +inf
    if k + 1 < n:
        rk1 = math.sqrt(float(upper.min()))
        qr = _lerp(rk, rk1, t)
    else:
        rk1 = qr = rk
    # everything at or below the k-th value is <= q; grad_y is free again and large enough for the smooth values
    smooth = np.sqrt(g2[: k + 1], out=_scratch("grad_y", k + 1, np.float64))
    if k + 1 < n and qr >= rk1:  # values in the upper part equal to the threshold are not edges either
        tail = np.sqrt(upper)
        tail = tail[tail <= qr]
        if tail.size:
            smooth = np.concatenate([smooth, tail])
    ns = smooth.size
    mean = float(smooth.sum()) / ns
    dev = np.subtract(smooth, mean, out=_scratch("grad_dev", ns, np.float64))
    std = math.sqrt(float(np.einsum("i,i->", dev, dev)) / ns)  # not np.dot: BLAS threads cost more
    if std == 0.0 or mean <= 0.0:
        cv = 0.0  # all smooth gradients equal (including all zero): perfectly continuous
    else:
        cv = std / mean
    return GradientScore(1.0 / (1.0 + cv), cv, scale * mean, scale * std, scale * qr, n, ns)


# -- all scores ---------------------------------------------------------------------------------------------
def quality_scores(
    depth: np.ndarray, valid: np.ndarray | None = None, params: ScoreParams = DEFAULT_PARAMS
) -> QualityScores:
    """All per-sample scores: valid fraction, ``S_dist`` (with parts), ``S_grad`` and ``S_total``.

    Args:
        depth: ``[H,W]`` depth in metres (invalid pixels may hold anything; they are masked).
        valid: optional ``[H,W]`` bool mask from the dataset reader.
        params: score parameters.

    Returns:
        :class:`QualityScores` (field order = columns of the scores table).
    """
    d = np.asarray(depth)
    mask = valid_mask(d, valid, far_plane=params.far_plane, min_depth=params.min_depth)
    h, w = mask.shape
    ds = _distribution(d, mask, params)
    gs = _gradient(d, mask, params)
    wd, wg = params.total_weights
    return QualityScores(
        height=h,
        width=w,
        n_valid=ds.n_valid,
        valid_fraction=ds.n_valid / float(h * w) if h * w else 0.0,
        depth_min=ds.depth_min,
        depth_max=ds.depth_max,
        s_chi2=ds.s_chi2,
        s_conc=ds.s_conc,
        s_range=ds.s_range,
        s_dist=ds.s_dist,
        n_grad=gs.n_grad,
        edge_threshold=gs.edge_threshold,
        grad_mean=gs.mean,
        grad_cv=gs.cv,
        s_grad=gs.s_grad,
        s_total=wd * ds.s_dist + wg * gs.s_grad,
    )


def _score_dist(
    depth: np.ndarray, valid: np.ndarray | None = None, params: ScoreParams = DEFAULT_PARAMS
) -> float:
    """``S_dist`` as a float (registered as ``depth_distribution``)."""
    return depth_distribution_score(depth, valid, params).s_dist


def _score_grad(
    depth: np.ndarray, valid: np.ndarray | None = None, params: ScoreParams = DEFAULT_PARAMS
) -> float:
    """``S_grad`` as a float (registered as ``gradient_continuity``)."""
    return gradient_continuity_score(depth, valid, params).s_grad


def _score_total(
    depth: np.ndarray, valid: np.ndarray | None = None, params: ScoreParams = DEFAULT_PARAMS
) -> float:
    """``S_total`` as a float (registered as ``total``)."""
    return quality_scores(depth, valid, params).s_total


def _score_valid(
    depth: np.ndarray, valid: np.ndarray | None = None, params: ScoreParams = DEFAULT_PARAMS
) -> float:
    """Valid fraction as a float (registered as ``valid_fraction``)."""
    m = valid_mask(depth, valid, far_plane=params.far_plane, min_depth=params.min_depth)
    return float(m.mean()) if m.size else 0.0


# name -> score(depth [H,W] metres, valid [H,W] | None, params) -> float; higher is better
for _name, _fn in (
    ("depth_distribution", _score_dist),
    ("gradient_continuity", _score_grad),
    ("total", _score_total),
    ("valid_fraction", _score_valid),
):
    if _name not in FILTERS:
        FILTERS.add(_name, _fn)
