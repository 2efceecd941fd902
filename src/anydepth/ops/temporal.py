"""Temporal alignment of per-frame affine-invariant predictions (video depth without flicker).

A relative depth model predicts each frame up to its own scale and shift (``v_t ~ a_t x_t + b_t`` with ``x_t``
the true disparity and ``a_t, b_t`` unknown per frame), so per-frame normalisation makes the values of a static
scene jump from frame to frame. ``TemporalAligner`` removes that ambiguity *in the model's output space*: it
fits one scale and shift per frame that map the new prediction onto a running reference built from the previous
aligned frames, robustly, so that pixels that disagree with the reference (moving objects, disocclusions, model
outliers) do not pull the fit.

Method, per frame ``t`` (all fits on a small grid of at most ``fit_size`` pixels per side, area-downsampled):

1. Reference ``R``: the per-pixel median of the last ``window`` aligned frames (a sliding window, so memory is
   bounded: ``window`` maps of ``fit_size**2`` floats).
2. Robust fit of ``R ~ s v_t + c``, iterated ``iterations`` times; after each fit the inliers are the pixels whose
   residual is below ``inlier_k`` robust standard deviations (``1.4826 * MAD``) and below ``agree_tol`` times the
   reference's robust range, so pixels of moving objects,
   which violate the reference, drop out. The line is the symmetric (reduced-major-axis) fit, not least squares:
   both sides are noisy, and least squares would shrink the scale a little at every frame (see
   ``robust_fit_scale_shift``).
3. Output ``s v_t + c`` at full resolution, in the clip's units (the first frame's percentiles
   ``percentiles`` map to ``init_range``, by default the nominal disparity ``[0.1, 1]`` of depths 10..1).
4. Scene cuts: when fewer than ``min_inliers`` of the pixels agree (or the fitted scale is not positive), the
   reference restarts from this frame, matched to the previous output's robust range so colours stay stable.
5. Optional ``renorm`` in [0, 1): pulls each frame's parameters a little towards per-frame normalisation
   (geometric blend), which bounds slow drift at the cost of a little flicker (0 = off; default 0.05).
6. Optional ``smooth`` in [0, 1) (temporal noise reduction, 0 = off): the change of each pixel since the previous
   output is split into its local mean over a window of ~1/24 of the frame (camera motion, global changes) and
   the fine-scale rest; where the rest is within ``inlier_k`` robust standard deviations (1.4826 * MAD over the
   frame) it is attenuated by ``smooth``, elsewhere (moving edges and objects) the frame is left as predicted.
   Independent per-pixel jitter is thus averaged over time (a recursive filter: about ``(1 + smooth) / (1 -
   smooth)`` frames) without lagging behind smooth motion.

Metric anchoring: ``update(value, anchor_depth=...)`` with metric depth (metres; sparse allowed, 0 = none) for one
or a few frames fits a global scale and shift ``G`` from the clip's units to the anchor space (metric disparity
``1/z`` for disparity models, metric depth for depth models), pooled over all anchors seen so far; every
later output is ``G`` applied to the aligned frame and flagged ``metric``. Frames before the first anchor stay
in clip units (anchor the first frame to get a wholly metric clip).

Limits: the method cannot tell a real global change of scale (the camera moving forward makes every disparity
grow) from the model's scale ambiguity, so such changes are partly absorbed; ``renorm`` bounds the resulting
drift, and metric anchors at several frames correct it. Large fast motion leaves few pixels agreeing with the
reference (no optical flow is used) and triggers restarts.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from anydepth.types import DepthSpace

__all__ = [
    "AlignedFrame",
    "TemporalAligner",
    "align_stream",
    "reduce_temporal_noise",
    "robust_fit_scale_shift",
]

_MAD_TO_STD = 1.4826


@dataclass(frozen=True)
class AlignedFrame:
    """One output of ``TemporalAligner.update``.

    Attributes:
        value: ``[H, W]`` float32 aligned prediction in the model's output space (clip units, or metric disparity /
            depth when ``metric``); NaN where the input was not finite or not valid.
        scale, shift: the affine map applied to the raw prediction (``value = scale * raw + shift``, exactly when
            ``smooth`` is 0; the noise reduction then moves pixels by a small fine-scale correction).
        inliers: fraction of fit pixels that agreed with the reference (1.0 on the first frame).
        restarted: the reference was (re)started at this frame (first frame or scene cut).
        metric: ``value`` is in metric units (an anchor has been seen).
        index: frame number in the stream (0-based).
    """

    value: np.ndarray
    scale: float
    shift: float
    inliers: float
    restarted: bool
    metric: bool
    index: int


def _fit_grid(x: np.ndarray, fit_size: int) -> np.ndarray:
    """``[H,W]`` -> ``[h,w]`` block average with ``max(h, w) <= fit_size``, NaN-aware (all-NaN blocks stay NaN)."""
    h, w = x.shape
    f = max(1, int(np.ceil(max(h, w) / fit_size)))
    if f == 1:
        return x
    hp, wp = -(-h // f) * f, -(-w // f) * f
    v = np.full((hp, wp), np.nan)
    v[:h, :w] = x
    blocks = v.reshape(hp // f, f, wp // f, f)
    ok = np.isfinite(blocks)
    n = ok.sum(axis=(1, 3))
    total = np.where(ok, blocks, 0.0).sum(axis=(1, 3))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n * 2 > f * f, total / n, np.nan)


def robust_fit_scale_shift(
    pred: np.ndarray,
    target: np.ndarray,
    mask: np.ndarray,
    *,
    iterations: int = 3,
    inlier_k: float = 3.0,
    symmetric: bool = False,
    max_residual: float | None = None,
) -> tuple[float, float, np.ndarray]:
    """Iteratively trimmed line fit ``target ~ s pred + c``: least squares, or symmetric.

    Least squares (``argmin sum (s pred + c - target)^2``) assumes an exact ``pred``; when both sides are noisy
    or slightly misregistered (two video frames) its scale is biased towards 0 ("regression dilution"), and a
    chain of such fits shrinks the values frame after frame. ``symmetric=True`` fits the reduced-major-axis line
    instead: ``s = std(target) / std(pred)`` (sign of the correlation), ``c = mean(target) - s mean(pred)``, which
    treats both sides alike and has no such bias.

    Args:
        pred, target: ``[N]`` float64 values (any space; ``target`` defines the output space).
        mask: ``[N]`` bool, pixels allowed in the fit.
        iterations: refits after the first one; each keeps ``|residual| <= inlier_k * 1.4826 * MAD``.
        inlier_k: inlier threshold in robust standard deviations.
        symmetric: reduced-major-axis line instead of least squares.
        max_residual: cap on the inlier threshold (absolute, in ``target`` units); None = no cap.

    Returns:
        ``(scale, shift, inliers [N] bool)``; ``scale = 0`` when fewer than 2 pixels or a constant ``pred``.
    """
    inl = mask.copy()
    s, c = 0.0, 0.0
    for it in range(iterations + 1):
        if int(inl.sum()) < 2:
            return 0.0, float(target[mask].mean()) if mask.any() else 0.0, inl
        p, d = pred[inl], target[inl]
        pm, dm = p.mean(), d.mean()
        var = float(((p - pm) ** 2).sum())
        if not var > 0:
            return 0.0, float(dm), inl
        cov = float(((p - pm) * (d - dm)).sum())
        if symmetric:
            s = math.copysign(math.sqrt(float(((d - dm) ** 2).sum()) / var), cov)
        else:
            s = cov / var
        c = float(dm - s * pm)
        if it == iterations:
            break
        r = np.abs(s * pred + c - target)
        mad = float(np.median(r[mask]))
        thr = inlier_k * _MAD_TO_STD * max(mad, 1e-12)
        if max_residual is not None:
            thr = min(thr, max_residual)
        new = mask & (r <= thr)
        if int(new.sum()) < 2 or np.array_equal(new, inl):
            break
        inl = new
    return s, c, inl


class TemporalAligner:
    """Streaming temporal alignment of a video's predictions (see the module docstring for the method).

    One frame in, one aligned frame out; memory is bounded by ``window`` maps of at most ``fit_size**2`` values.

    Args:
        space: ``DepthSpace`` of the raw predictions (the fit is in this space; anchors are converted to it).
        window: number of previous aligned frames whose per-pixel median is the reference.
        fit_size: longest side of the grid the fits run on (pixels).
        iterations: robust refits per frame.
        inlier_k: inlier threshold in robust standard deviations of the residual.
        min_inliers: below this inlier fraction the frame is treated as a scene cut (reference restarts).
        agree_tol: a pixel agrees with the reference only if its residual is below this fraction of the
            reference's robust range (caps the MAD threshold, so an unrelated frame has few inliers).
        init_range: values the first frame's ``percentiles`` are mapped to (clip units).
        percentiles: robust range (percent) used to initialise and to restart the reference.
        renorm: weight in [0, 1) of per-frame normalisation blended into each frame's parameters (drift bound).
        smooth: weight in [0, 1) of temporal noise reduction (0 = off): the fine-scale part of each pixel's change
            since the previous output (the change minus its local mean) is attenuated by this factor where it is
            within ``inlier_k`` robust standard deviations of that frame's fine-scale changes, so independent
            per-pixel jitter is averaged over time while smooth changes (camera motion) pass unchanged and large
            ones (moving edges, objects) are left alone. Keeps one full-resolution map in memory.
    """

    def __init__(
        self,
        space: DepthSpace | str = DepthSpace.DISPARITY_AFFINE_INVARIANT,
        *,
        window: int = 3,
        fit_size: int = 96,
        iterations: int = 3,
        inlier_k: float = 3.0,
        min_inliers: float = 0.3,
        agree_tol: float = 0.1,
        init_range: tuple[float, float] = (0.1, 1.0),
        percentiles: tuple[float, float] = (2.0, 98.0),
        renorm: float = 0.05,
        smooth: float = 0.0,
    ) -> None:
        self.space = DepthSpace(space)
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        if fit_size < 8:
            raise ValueError(f"fit_size must be >= 8 pixels, got {fit_size}")
        if iterations < 0:
            raise ValueError(f"iterations must be >= 0, got {iterations}")
        if not inlier_k > 0:
            raise ValueError(f"inlier_k must be > 0, got {inlier_k}")
        if not agree_tol > 0:
            raise ValueError(f"agree_tol must be > 0, got {agree_tol}")
        if not 0.0 <= min_inliers < 1.0:
            raise ValueError(f"min_inliers must be in [0, 1), got {min_inliers}")
        if not init_range[1] > init_range[0]:
            raise ValueError(f"init_range must be (low, high) with high > low, got {init_range}")
        if not 0.0 <= percentiles[0] < percentiles[1] <= 100.0:
            raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {percentiles}")
        if not 0.0 <= renorm < 1.0:
            raise ValueError(f"renorm must be in [0, 1), got {renorm}")
        self.window = int(window)
        self.fit_size = int(fit_size)
        self.iterations = int(iterations)
        self.inlier_k = float(inlier_k)
        self.min_inliers = float(min_inliers)
        self.agree_tol = float(agree_tol)
        self.init_range = (float(init_range[0]), float(init_range[1]))
        self.percentiles = (float(percentiles[0]), float(percentiles[1]))
        self.renorm = float(renorm)
        if not 0.0 <= smooth < 1.0:
            raise ValueError(f"smooth must be in [0, 1), got {smooth}")
        self.smooth = float(smooth)
        self.reset()

    def reset(self) -> None:
        """Forget the reference, the anchors and the frame counter (start a new clip)."""
        self._refs: deque[np.ndarray] = deque(maxlen=self.window)
        self._grid: tuple[int, int] | None = None
        self._index = 0
        self._last_range: tuple[float, float] | None = None
        # pooled normal-equation sums of the anchor fit: n, sum x, sum y, sum xx, sum xy
        self._anchor_sums = np.zeros(5, dtype=np.float64)
        self._global: tuple[float, float] | None = None
        self._prev: np.ndarray | None = None

    @property
    def metric(self) -> bool:
        """True once an anchor has set the metric mapping."""
        return self._global is not None

    def _normalise_params(self, v: np.ndarray, target: tuple[float, float]) -> tuple[float, float] | None:
        ok = v[np.isfinite(v)]
        if ok.size < 2:
            return None
        lo, hi = (float(x) for x in np.percentile(ok, self.percentiles))
        if not hi > lo:
            return None
        s = (target[1] - target[0]) / (hi - lo)
        return s, target[0] - s * lo

    def update(
        self, value: np.ndarray, *, valid: np.ndarray | None = None, anchor_depth: np.ndarray | None = None
    ) -> AlignedFrame:
        """Align one frame.

        Args:
            value: ``[H, W]`` raw prediction in ``space``. All frames of a clip must have one size.
            valid: optional ``[H, W]`` bool, pixels allowed in the fit (e.g. not sky); None = all finite pixels.
            anchor_depth: optional ``[H_a, W_a]`` metric depth in metres (same aspect ratio; <= 0 or non-finite =
                no data) for this frame: updates the metric mapping (see the module docstring).

        Returns:
            The ``AlignedFrame``.

        Raises:
            ValueError: wrong shapes, a frame size that changed, or an anchor with too few valid pixels.
        """
        v = np.asarray(value, dtype=np.float64)
        if v.ndim != 2:
            raise ValueError(f"value must be an [H, W] map, got shape {v.shape}")
        if valid is not None:
            vm = np.asarray(valid, dtype=bool)
            if vm.shape != v.shape:
                raise ValueError(f"valid mask shape {vm.shape} differs from the frame's {v.shape}")
            v = np.where(vm, v, np.nan)
        small = _fit_grid(v, self.fit_size)
        if self._grid is not None and tuple(small.shape) != self._grid:
            raise ValueError(
                f"frame {self._index} has size {tuple(v.shape)}, unlike the earlier frames of this clip"
            )
        self._grid = (int(small.shape[0]), int(small.shape[1]))
        restarted, inliers = False, 1.0
        params: tuple[float, float] | None = None
        if self._refs:
            stack = np.stack(list(self._refs))
            ref = stack[0] if len(stack) == 1 else _nanmedian0(stack)
            mask = np.isfinite(small) & np.isfinite(ref)
            spread = np.diff(np.percentile(ref[mask], self.percentiles)) if mask.sum() > 1 else [0.0]
            s, c, inl = robust_fit_scale_shift(
                small.ravel(),
                ref.ravel(),
                mask.ravel(),
                iterations=self.iterations,
                inlier_k=self.inlier_k,
                symmetric=True,
                max_residual=max(self.agree_tol * float(spread[0]), 1e-12),
            )
            inliers = float(inl.sum()) / max(int(mask.sum()), 1)
            if s > 0 and inliers >= self.min_inliers:
                params = (s, c)
                if self.renorm > 0:
                    params = self._blend(params, small)
        if params is None:
            # first frame or scene cut: (re)start the reference, keeping the previous output's range if any
            restarted = True
            target = self._last_range if self._last_range is not None else self.init_range
            params = self._normalise_params(small, target) or (1.0, 0.0)
            self._refs.clear()
            if self._index > 0:
                inliers = 0.0
        s, c = params
        aligned_small = s * small + c
        self._refs.append(aligned_small)
        rng = self._normalise_params(aligned_small, (0.0, 1.0))
        if rng is not None:  # robust range of this output: x = (y - c') / s' at y = 0 and 1
            self._last_range = (-rng[1] / rng[0], (1.0 - rng[1]) / rng[0])
        out = s * v + c
        if self.smooth > 0:
            out = self._denoise(out, restarted)
        if anchor_depth is not None:
            self._add_anchor(out, anchor_depth)
        if self._global is not None:
            gs, gc = self._global
            out = gs * out + gc
            s, c = gs * s, gs * c + gc
        frame = AlignedFrame(
            value=out.astype(np.float32),
            scale=float(s),
            shift=float(c),
            inliers=float(inliers),
            restarted=restarted,
            metric=self._global is not None,
            index=self._index,
        )
        self._index += 1
        return frame

    def _denoise(self, out: np.ndarray, restarted: bool) -> np.ndarray:
        """Temporal noise reduction of the aligned frame ``out`` against the previous output (``smooth``)."""
        if self._prev is not None and not restarted and self._prev.shape == out.shape:
            out = reduce_temporal_noise(out, self._prev, self.smooth, inlier_k=self.inlier_k)
        self._prev = out
        return out

    def _blend(self, params: tuple[float, float], small: np.ndarray) -> tuple[float, float]:
        """Pull ``(s, c)`` towards the per-frame normalisation onto ``init_range`` (geometric in the scale)."""
        norm = self._normalise_params(small, self.init_range)
        if norm is None:
            return params
        (s, c), (sn, cn) = params, norm
        w = self.renorm
        s_new = float(np.exp((1 - w) * np.log(s) + w * np.log(sn)))
        # keep the median where the blend of the two maps puts it
        med = float(np.median(small[np.isfinite(small)]))
        m_new = (1 - w) * (s * med + c) + w * (sn * med + cn)
        return s_new, m_new - s_new * med

    def _add_anchor(self, aligned: np.ndarray, anchor_depth: np.ndarray) -> None:
        ref = np.asarray(anchor_depth, dtype=np.float64)
        if ref.ndim != 2:
            raise ValueError(f"anchor depth must be [H, W], got shape {ref.shape}")
        h, w = aligned.shape
        hd, wd = ref.shape
        if abs((w / h) / (wd / hd) - 1.0) > 0.02:
            raise ValueError(f"anchor depth is {wd}x{hd} but the frame is {w}x{h}: aspect ratios differ")
        x = aligned
        if (hd, wd) != (h, w):
            t = torch.from_numpy(aligned)[None, None]
            x = F.interpolate(t, size=(hd, wd), mode="bilinear", align_corners=False)[0, 0].numpy()
        ok = np.isfinite(ref) & (ref > 0)
        y = np.where(ok, 1.0 / np.where(ok, ref, 1.0), 0.0) if self.space.is_disparity else ref
        xt, yt = x.ravel(), y.ravel()
        mask = ok.ravel() & np.isfinite(xt)
        if int(mask.sum()) < 10:
            raise ValueError(f"anchor depth has {int(mask.sum())} valid pixels; at least 10 are needed")
        _, _, inl = robust_fit_scale_shift(xt, yt, mask, iterations=self.iterations, inlier_k=self.inlier_k)
        xs, ys = xt[inl], yt[inl]
        self._anchor_sums += [len(xs), xs.sum(), ys.sum(), (xs * xs).sum(), (xs * ys).sum()]
        n, sx, sy, sxx, sxy = self._anchor_sums
        var = sxx - sx * sx / n
        if not var > 0:
            raise ValueError(
                "anchor fit is degenerate: the aligned prediction is constant on the anchor pixels"
            )
        gs = (sxy - sx * sy / n) / var
        if not gs > 0:
            raise ValueError(
                f"anchor fit gave a non-positive scale {gs:.4g} (anchor inconsistent with the video?)"
            )
        self._global = (float(gs), float((sy - gs * sx) / n))


def reduce_temporal_noise(
    current: np.ndarray, previous: np.ndarray, weight: float, *, inlier_k: float = 3.0
) -> np.ndarray:
    """Attenuate the fine-scale, noise-sized part of each pixel's change between two aligned frames.

    The change ``current - previous`` is split into its local mean over a square window of side ~1/24 of the
    frame (camera motion and global changes pass through) and the fine-scale rest; where the rest is within
    ``inlier_k`` robust standard deviations (1.4826 * MAD over the frame) it is scaled by ``1 - weight``,
    elsewhere (moving edges and objects) ``current`` is kept. Applied recursively (``previous`` = the last output)
    this is a temporal average of independent per-pixel jitter over about ``(1 + weight) / (1 - weight)`` frames.

    Args:
        current, previous: ``[H, W]`` aligned maps in one space and one pixel grid (NaN = no data).
        weight: attenuation in [0, 1) (0 returns ``current``).
        inlier_k: gate in robust standard deviations.

    Returns:
        ``[H, W]`` float64 map.
    """
    out = np.asarray(current, dtype=np.float64)
    change = out - np.asarray(previous, dtype=np.float64)
    radius = max(1, round(max(out.shape) / 48))
    quiet = np.isfinite(change)
    for _ in range(2):  # the second pass leaves the large changes (moving objects) out of the local mean
        fine = change - _box_mean(np.where(quiet, change, np.nan), radius)
        ok = np.isfinite(fine)
        step = max(1, int(math.sqrt(fine.size / 65536)))  # the robust scale from at most ~64k pixels
        sample = np.abs(fine[::step, ::step][ok[::step, ::step]])
        sigma = _MAD_TO_STD * float(np.median(sample)) if sample.size else 0.0
        if not (weight > 0 and sigma > 0):
            return out
        quiet = ok & (np.abs(fine) <= inlier_k * sigma)
    return np.where(quiet, out - weight * fine, out)


def _box_mean(x: np.ndarray, radius: int) -> np.ndarray:
    """NaN-aware mean of ``x`` [H, W] over a ``(2 radius + 1)``-pixel square window (cumulative sums: O(H W) for any
    radius; the window is clipped at the borders)."""
    ok = np.isfinite(x)
    out = []
    for a in (np.where(ok, x, 0.0), ok.astype(np.float64)):
        for axis in (0, 1):
            n = a.shape[axis]
            c = np.cumsum(a, axis=axis)
            c = np.concatenate([np.zeros_like(np.take(c, [0], axis=axis)), c], axis=axis)
            hi = np.minimum(np.arange(n) + radius + 1, n)
            lo = np.maximum(np.arange(n) - radius, 0)
            a = np.take(c, hi, axis=axis) - np.take(c, lo, axis=axis)
        out.append(a)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(out[1] > 0, out[0] / out[1], np.nan)


def _nanmedian0(stack: np.ndarray) -> np.ndarray:
    """Per-pixel median over axis 0 ignoring NaN (NaN where all are NaN), without numpy's all-NaN warning."""
    with np.errstate(all="ignore"):
        s = np.sort(stack, axis=0)  # NaN sort last
    n = np.isfinite(stack).sum(axis=0)
    lo = np.take_along_axis(s, np.maximum((n - 1) // 2, 0)[None], axis=0)[0]
    hi = np.take_along_axis(s, np.maximum(n // 2, 0)[None], axis=0)[0]
    return np.where(n > 0, (lo + hi) / 2.0, np.nan)


def align_stream(
    values: Iterable[np.ndarray], aligner: TemporalAligner | None = None
) -> Iterator[AlignedFrame]:
    """Align an iterable of ``[H, W]`` raw predictions frame by frame (lazy; bounded memory)."""
    al = aligner if aligner is not None else TemporalAligner()
    for v in values:
        yield al.update(v)
