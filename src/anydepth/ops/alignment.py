"""Per-image alignment of a relative prediction to a reference: least-squares scale / scale-and-shift, median
scaling, and the evaluation-protocol alignment to metric depth (Marigold ``least_square``, Lotus
``least_square_disparity``).

This is the one implementation used by the training losses and by the evaluation harness.

Conventions:
    * Batched: the first dimension of every input is the batch ``B``; all remaining dimensions (e.g. ``[1,H,W]``
      or ``[H,W]``) are reduced per image. For a single image pass ``x[None]``.
    * Masked: ``mask`` (bool, same shape as ``pred``) selects the pixels used in the fit; ``None`` = all pixels.
    * Torch or numpy: functions accept ``torch.Tensor`` or ``np.ndarray`` inputs and return the same kind.
    * Precision: fits are computed in the promoted dtype of ``pred`` and ``target`` (pass float64 for evaluation;
      float32 keeps training losses differentiable and fast). They are differentiable w.r.t. ``pred``.

Depth spaces: "depth" means depth in metres (or depth up to scale/shift); "disparity" means inverse depth. The
conversion ``to_inverse`` maps ``x > 0`` to ``1/x`` and every other value to 0, as Marigold's
``depth2disparity``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from anydepth.types import DepthSpace

__all__ = [
    "ALIGNMENT_METHODS",
    "DOWNSAMPLE_MODES",
    "AlignmentResult",
    "fit_scale_shift",
    "fit_scale",
    "fit_median_scale",
    "masked_median",
    "masked_values",
    "to_inverse",
    "downsample_for_fit",
    "resolve_alignment",
    "align_to_depth",
]

#: Evaluation alignment methods (names as in Marigold's ``eval.py`` where they exist).
#: ``least_square``: scale+shift fitted in depth space; ``least_square_disparity``: scale+shift fitted in
#: disparity space, aligned disparity clipped to >= ``min_disparity`` and inverted; ``median``: depth-space scale
#: median(gt)/median(pred) (monodepth2 convention); ``none``: the prediction is used as metric depth.
ALIGNMENT_METHODS: tuple[str, ...] = ("least_square", "least_square_disparity", "median", "none")

#: How ``max_res`` subsamples the fitting pixels: ``marigold`` reproduces Marigold's/Lotus'
#: ``align_depth_least_square`` literally (nearest resampling of an ``[1,H,W]`` tensor, which torch treats as a
#: 1-D signal: only the columns are subsampled, every row is kept); ``nearest2d`` subsamples rows and columns.
DOWNSAMPLE_MODES: tuple[str, ...] = ("marigold", "nearest2d")

_Array = Any  # torch.Tensor | np.ndarray


def _to_torch(x: _Array | None) -> torch.Tensor | None:
    if x is None or isinstance(x, torch.Tensor):
        return x
    return torch.from_numpy(np.ascontiguousarray(x))


def _like(x: torch.Tensor, numpy_out: bool) -> _Array:
    return x.detach().cpu().numpy() if numpy_out else x


def _flat(x: torch.Tensor) -> torch.Tensor:
    if x.ndim == 0:
        raise ValueError("expected a batched input [B, ...], got a scalar")
    return x.reshape(x.shape[0], -1)


def _prep(
    pred: _Array, target: _Array, mask: _Array | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, bool]:
    numpy_out = isinstance(pred, np.ndarray)
    p, d, m = _to_torch(pred), _to_torch(target), _to_torch(mask)
    assert p is not None and d is not None
    if p.shape != d.shape:
        raise ValueError(f"pred shape {tuple(p.shape)} differs from target shape {tuple(d.shape)}")
    if m is None:
        m = torch.ones(p.shape, dtype=torch.bool, device=p.device)
    elif m.shape != p.shape:
        raise ValueError(f"mask shape {tuple(m.shape)} differs from pred shape {tuple(p.shape)}")
    dtype = torch.promote_types(p.dtype, d.dtype)
    if not dtype.is_floating_point:
        dtype = torch.float32
    m = _flat(m.bool())
    # zero the masked-out values so that inf/NaN there cannot leak into sums (0 * inf = NaN)
    p = torch.where(m, _flat(p.to(dtype)), torch.zeros((), dtype=dtype, device=p.device))
    d = torch.where(m, _flat(d.to(dtype)), torch.zeros((), dtype=dtype, device=d.device))
    return p, d, m, numpy_out


def fit_scale_shift(pred: _Array, target: _Array, mask: _Array | None = None) -> tuple[_Array, _Array]:
    """Least-squares scale and shift per image: ``argmin_{s,t} sum_mask (s * pred + t - target)^2``.

    Closed form, computed on centred values for numerical stability (two passes):
    ``s = sum (p - p_mean)(d - d_mean) / sum (p - p_mean)^2``, ``t = d_mean - s * p_mean``. This is the same
    solution as ``numpy.linalg.lstsq`` on ``[p, 1]`` (Marigold's solver) whenever the problem is well posed.

    Args:
        pred: ``[B, ...]`` prediction (any space; the fit is in the space of ``target``).
        target: ``[B, ...]`` reference in the space to fit (depth or disparity).
        mask: ``[B, ...]`` bool, pixels used in the fit; None = all.

    Returns:
        ``(scale [B], shift [B])`` in the dtype of the fit. Degenerate images (fewer than 2 valid pixels or a
        constant prediction over the mask) get ``scale = 0`` and ``shift = mean(target)`` (0 with no valid pixel).
    """
    p, d, m, numpy_out = _prep(pred, target, mask)
    w = m.to(p.dtype)
    n = w.sum(1)
    n_safe = n.clamp(min=1)
    p_mean = (w * p).sum(1) / n_safe
    d_mean = (w * d).sum(1) / n_safe
    pc = torch.where(m, p - p_mean[:, None], torch.zeros_like(p))
    dc = torch.where(m, d - d_mean[:, None], torch.zeros_like(d))
    var = (pc * pc).sum(1)
    cov = (pc * dc).sum(1)
    ok = (var > 0) & (n >= 2)
    scale = torch.where(ok, cov / torch.where(ok, var, torch.ones_like(var)), torch.zeros_like(var))
    shift = d_mean - scale * p_mean
    return _like(scale, numpy_out), _like(shift, numpy_out)


def fit_scale(pred: _Array, target: _Array, mask: _Array | None = None) -> _Array:
    """Least-squares scale only per image: ``argmin_s sum_mask (s * pred - target)^2 = sum p d / sum p^2``.

    Args:
        pred, target, mask: as in ``fit_scale_shift``.

    Returns:
        ``scale [B]``; 0 for images whose masked prediction is all zero.
    """
    p, d, m, numpy_out = _prep(pred, target, mask)
    w = m.to(p.dtype)
    num = (w * p * d).sum(1)
    den = (w * p * p).sum(1)
    ok = den > 0
    scale = torch.where(ok, num / torch.where(ok, den, torch.ones_like(den)), torch.zeros_like(den))
    return _like(scale, numpy_out)


def masked_median(x: _Array, mask: _Array | None = None) -> _Array:
    """True per-image median over masked values (mean of the two middle values for an even count).

    Args:
        x: ``[B, ...]`` values; mask: ``[B, ...]`` bool or None.

    Returns:
        ``[B]`` medians (NaN for an image without valid values). Works for any image size (uses ``kthvalue``,
        not ``torch.quantile``, which is limited to 16M elements).
    """
    xt, _, m, numpy_out = _prep(x, x, mask)
    out = []
    for b in range(xt.shape[0]):
        v = xt[b][m[b]]
        k = int(v.numel())
        if k == 0:
            out.append(torch.full((), float("nan"), dtype=xt.dtype, device=xt.device))
        elif k % 2 == 1:
            out.append(torch.kthvalue(v, k // 2 + 1).values)
        else:
            lo = torch.kthvalue(v, k // 2).values
            hi = torch.kthvalue(v, k // 2 + 1).values
            out.append((lo + hi) / 2)
    return _like(torch.stack(out), numpy_out)


def fit_median_scale(pred: _Array, target: _Array, mask: _Array | None = None) -> _Array:
    """Median scaling per image: ``scale = median_mask(target) / median_mask(pred)`` (monodepth2 convention).

    Returns:
        ``scale [B]`` (NaN/inf when the masked prediction median is 0 or there is no valid pixel).
    """
    p, d, m, numpy_out = _prep(pred, target, mask)
    return _like(masked_median(d, m) / masked_median(p, m), numpy_out)


def to_inverse(x: _Array) -> _Array:
    """Depth <-> disparity: ``1/x`` where ``x > 0``, 0 elsewhere (NaN -> 0). Same dtype and kind as ``x``."""
    if isinstance(x, np.ndarray):
        out = np.zeros_like(x)
        pos = x > 0
        out[pos] = 1.0 / x[pos]
        return out
    # 1/x for x <= 0 gives +-inf/NaN, which the where() discards
    return torch.where(x > 0, 1.0 / x, torch.zeros((), dtype=x.dtype, device=x.device))


def masked_values(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``x[mask]`` as a 1-D tensor (row-major order); uses numpy's faster boolean gather for CPU tensors without
    autograd history."""
    if (
        x.device.type == "cpu"
        and mask.device.type == "cpu"
        and not x.requires_grad
        and x.dtype != torch.bfloat16
    ):
        return torch.from_numpy(x.numpy()[mask.numpy()])
    return x[mask]


def downsample_for_fit(x: torch.Tensor, max_res: int | None, mode: str = "marigold") -> torch.Tensor:
    """Nearest-neighbour subsampling of ``[B,H,W]`` maps used only to *fit* an alignment on huge images.

    The factor is ``min(max_res / H, max_res / W)``; nothing happens when it is >= 1 or ``max_res`` is None.

    Args:
        x: ``[B,H,W]`` tensor (float or bool).
        max_res: target maximum side in pixels.
        mode: ``"marigold"`` (default, parity with Marigold/Lotus: torch resamples a 3-D tensor as a 1-D signal,
            so only the width shrinks, to ``floor(W * factor)``; all rows are kept) or ``"nearest2d"`` (both sides).

    Returns:
        The subsampled ``[B,H',W']`` tensor (same dtype).
    """
    if mode not in DOWNSAMPLE_MODES:
        raise ValueError(f"unknown downsample mode {mode!r}; expected one of {DOWNSAMPLE_MODES}")
    if x.ndim != 3:
        raise ValueError(f"expected [B,H,W], got {tuple(x.shape)}")
    if max_res is None:
        return x
    h, w = int(x.shape[-2]), int(x.shape[-1])
    factor = min(max_res / h, max_res / w)
    if factor >= 1:
        return x
    is_bool = x.dtype == torch.bool
    y = x.float() if is_bool else x
    if mode == "marigold":
        y = F.interpolate(y, scale_factor=factor, mode="nearest")
    else:
        y = F.interpolate(y[:, None], scale_factor=factor, mode="nearest")[:, 0]
    return y.bool() if is_bool else y


def resolve_alignment(method: str, pred_space: DepthSpace) -> str:
    """Resolve ``"auto"`` to the protocol default for ``pred_space``; validate other names.

    ``auto`` gives ``least_square_disparity`` for disparity predictions (Lotus ``--disparity``) and
    ``least_square`` for depth predictions (Marigold). Raises ``ValueError`` for unknown names.
    """
    if method == "auto":
        return "least_square_disparity" if DepthSpace(pred_space).is_disparity else "least_square"
    if method not in ALIGNMENT_METHODS:
        raise ValueError(f"unknown alignment {method!r}; expected 'auto' or one of {ALIGNMENT_METHODS}")
    return method


@dataclass
class AlignmentResult:
    """Output of ``align_to_depth``.

    Attributes:
        depth: ``[B,H,W]`` aligned depth in metres, dtype of the prediction (not yet clipped to a range).
        scale, shift: ``[B]`` fitted parameters in the fit space (shift 0 for ``median``; 1 and 0 for ``none``).
        fit_pixels: ``[B]`` number of pixels the fit used (after subsampling).
    """

    depth: torch.Tensor
    scale: torch.Tensor
    shift: torch.Tensor
    fit_pixels: torch.Tensor


def align_to_depth(
    pred: torch.Tensor,
    pred_space: DepthSpace | str,
    gt_depth: torch.Tensor,
    valid: torch.Tensor,
    method: str = "auto",
    *,
    max_res: int | None = None,
    downsample: str = "marigold",
    min_disparity: float = 1e-3,
    solve_dtype: torch.dtype = torch.float64,
) -> AlignmentResult:
    """Align a relative prediction to ground-truth depth, per image, as the Marigold/Lotus protocol does.

    Steps (``least_square``): convert the prediction to depth if it is disparity (``1/p`` for ``p > 0``; pixels
    with ``p <= 0`` are left out of the fit), fit ``s, t`` on ``valid`` pixels by least squares in depth space,
    return ``s * p + t``. (``least_square_disparity``): ground-truth disparity ``1/d`` (0 where ``d <= 0``),
    prediction converted to disparity if it is depth, fit on ``valid & d > 0 & p > 0``, aligned disparity
    clipped to ``>= min_disparity`` and inverted. (``median``): depth-space scale only. (``none``): the prediction
    converted to depth. ``max_res`` fits on a subsampled copy (see ``downsample_for_fit``) and applies the
    parameters at full resolution.

    The fit runs in ``solve_dtype`` (float64 by default, like ``numpy.linalg.lstsq``); the fitted parameters are
    then cast to the prediction's dtype and applied element-wise in that dtype, so a float32 prediction gives the
    same per-pixel values as Marigold's numpy code.

    Args:
        pred: ``[B,H,W]`` raw prediction in ``pred_space``.
        pred_space: ``DepthSpace`` of ``pred``.
        gt_depth: ``[B,H,W]`` ground-truth depth in metres (invalid pixels any value).
        valid: ``[B,H,W]`` bool evaluation mask.
        method: ``"auto"`` or one of ``ALIGNMENT_METHODS``.
        max_res: fit on a copy subsampled to this maximum side (ETH3D: 1024); None = full resolution.
        downsample: ``"marigold"`` or ``"nearest2d"`` (see ``DOWNSAMPLE_MODES``).
        min_disparity: lower clip of the aligned disparity before inversion (Lotus: 1e-3, i.e. <= 1000 m).
        solve_dtype: dtype of the least-squares solve.

    Returns:
        ``AlignmentResult`` with ``depth [B,H,W]`` in metres.
    """
    space = DepthSpace(pred_space)
    method = resolve_alignment(method, space)
    if pred.ndim != 3 or gt_depth.shape != pred.shape or valid.shape != pred.shape:
        raise ValueError(
            f"expected pred, gt_depth and valid of equal shape [B,H,W]; got {tuple(pred.shape)}, "
            f"{tuple(gt_depth.shape)}, {tuple(valid.shape)}"
        )
    if not pred.dtype.is_floating_point:
        pred = pred.float()
    valid = valid.bool()
    b = pred.shape[0]
    ones = torch.ones(b, dtype=pred.dtype, device=pred.device)

    if method == "least_square_disparity":
        gt_fit = to_inverse(gt_depth.to(pred.dtype))
        p_fit = pred if space.is_disparity else to_inverse(pred)
        fit_mask = valid & (gt_depth > 0) & (p_fit > 0)
    else:
        gt_fit = gt_depth.to(pred.dtype)
        p_fit = to_inverse(pred) if space.is_disparity else pred
        fit_mask = valid & (pred > 0) if space.is_disparity else valid

    if method == "none":
        return AlignmentResult(p_fit, ones, torch.zeros_like(ones), fit_mask.flatten(1).sum(1))

    gt_s = downsample_for_fit(gt_fit, max_res, downsample)
    p_s = downsample_for_fit(p_fit, max_res, downsample)
    m_s = downsample_for_fit(fit_mask, max_res, downsample)
    n_fit = m_s.flatten(1).sum(1)
    # gather the fitting pixels per image first (cheap for sparse GT), then solve on [1, M] vectors
    pairs = [
        (
            masked_values(p_s[i], m_s[i])[None].to(solve_dtype),
            masked_values(gt_s[i], m_s[i])[None].to(solve_dtype),
        )
        for i in range(b)
    ]

    if method == "median":
        scale = torch.cat([fit_median_scale(p, d) for p, d in pairs]).to(pred.dtype)
        return AlignmentResult(p_fit * scale[:, None, None], scale, torch.zeros_like(scale), n_fit)

    st = [fit_scale_shift(p, d) for p, d in pairs]
    scale = torch.cat([x[0] for x in st]).to(pred.dtype)
    shift = torch.cat([x[1] for x in st]).to(pred.dtype)
    aligned = p_fit * scale[:, None, None] + shift[:, None, None]
    if method == "least_square_disparity":
        aligned = to_inverse(aligned.clamp(min=min_disparity))
    return AlignmentResult(aligned, scale, shift, n_fit)
