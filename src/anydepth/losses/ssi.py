"""Scale-and-shift-invariant (SSI) data term of the AnyDepth loss (MiDaS / Depth Anything style).

Two ways to remove the unknown scale and shift of a prediction, per image and over valid pixels only:

* ``"robust"`` (default; MiDaS v2+ / DAv1 / DAv2): both prediction ``p`` and target ``d`` are normalised
  independently, x_hat = (x - median(x)) / mean|x - median(x)| (the mean absolute deviation clamped to
  >= 1e-6), and the data term is the (optionally trimmed) mean absolute difference
  ``L = 1/(2M) * sum |p_hat - d_hat|``. The masked median is a true masked median (invalid pixels never count
  as zeros, unlike the public MiDaS gist); for an even count it is the lower of the two middle values.
* ``"lstsq"`` (MiDaS v1 SSI-MSE): the prediction is aligned to the raw target by the closed-form
  least-squares scale and shift, p_hat = s*p + t, and ``L = 1/(2M) * sum (p_hat - d)^2``.

Trimming (``trim`` in [0, 1)) drops, per image, the largest ``trim`` fraction of the absolute residuals
(MiDaS uses 0.2); the sum is still divided by ``2M`` with ``M`` the number of valid pixels, as in MiDaS.

Reduction: ``"batch"`` (MiDaS default) sums the residuals of all images and divides by ``2 * sum_i M_i`` (images
with many valid pixels weigh more); ``"image"`` averages the per-image losses ``1/(2 M_i) sum_i`` over the images
that have at least one valid pixel. A batch without valid pixels gives 0 (with a graph to ``pred``).
All maths is done in float32 whatever the input dtype (safe under autocast).
"""

from __future__ import annotations

import torch

from anydepth.ops.alignment import fit_scale_shift

__all__ = [
    "SSI_VARIANTS",
    "REDUCTIONS",
    "masked_median",
    "robust_normalize",
    "lstsq_align",
    "normalize_pair",
    "residual_loss",
    "ssi_loss",
]

SSI_VARIANTS = ("robust", "lstsq")
REDUCTIONS = ("batch", "image")
_MAD_EPS = 1e-6


def _check(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> None:
    if pred.ndim != 4 or pred.shape[1] != 1:
        raise ValueError(f"pred must be [B,1,H,W], got {tuple(pred.shape)}")
    if target.shape != pred.shape:
        raise ValueError(f"target shape {tuple(target.shape)} differs from pred shape {tuple(pred.shape)}")
    if mask.shape != pred.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} differs from pred shape {tuple(pred.shape)}")


def masked_median(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-image median over masked pixels (the lower middle value for even counts).

    Args:
        x: ``[B,1,H,W]`` values.
        mask: ``[B,1,H,W]`` bool.

    Returns:
        ``[B,1,1,1]`` medians; 0 for images without valid pixels. Differentiable w.r.t. ``x``.
    """
    flat = torch.where(mask, x, torch.full_like(x, float("nan"))).flatten(1)
    med = torch.nanmedian(flat, dim=1).values
    med = torch.nan_to_num(med, nan=0.0)
    return med.view(-1, 1, 1, 1)


def robust_normalize(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Median / mean-absolute-deviation normalisation per image over valid pixels.

    Args:
        x: ``[B,1,H,W]`` values (any affine-invariant space).
        mask: ``[B,1,H,W]`` bool.

    Returns:
        ``[B,1,H,W]`` float32 ``(x - median) / max(mean|x - median|, 1e-6)``; 0 where ``mask`` is False.
    """
    x = x.float()
    m = mask.float()
    t = masked_median(x, mask)
    n = m.sum(dim=(1, 2, 3), keepdim=True).clamp(min=1.0)
    s = ((x - t).abs() * m).sum(dim=(1, 2, 3), keepdim=True) / n
    out = (x - t) / s.clamp(min=_MAD_EPS)
    return torch.where(mask, out, torch.zeros_like(out))


def lstsq_align(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Align ``pred`` to ``target`` per image by least-squares scale and shift over valid pixels.

    Solves ``min_{s,t} sum_mask (s*pred + t - target)^2`` in closed form with the shared
    ``anydepth.ops.alignment.fit_scale_shift`` (the same solver the evaluation uses; differentiable w.r.t.
    ``pred``). Degenerate images (fewer than 2 valid pixels or a constant prediction) get ``s=0``,
    ``t=mean(target)``.

    Args:
        pred: ``[B,1,H,W]``; target: ``[B,1,H,W]`` (same space, e.g. disparity); mask: ``[B,1,H,W]`` bool.

    Returns:
        ``[B,1,H,W]`` float32 aligned prediction ``s*pred + t`` (0 where ``mask`` is False).
    """
    s, t = fit_scale_shift(pred.float(), target.float(), mask)  # [B] each, differentiable w.r.t. pred
    p = pred.float()
    s = s.view(-1, 1, 1, 1)
    t = t.view(-1, 1, 1, 1)
    out = s * p + t
    return torch.where(mask, out, torch.zeros_like(out))


def normalize_pair(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, variant: str = "robust"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Remove scale and shift: return ``(pred_hat, target_hat)`` on which the residual is computed.

    ``"robust"`` normalises both maps independently; ``"lstsq"`` aligns the prediction to the target and
    leaves the target as it is. Both outputs are float32 ``[B,1,H,W]``, zero outside ``mask``.

    Raises:
        ValueError: unknown ``variant`` or mismatching shapes.
    """
    _check(pred, target, mask)
    mask = mask.bool()
    if variant == "robust":
        return robust_normalize(pred, mask), robust_normalize(target, mask)
    if variant == "lstsq":
        d = torch.where(mask, target.float(), torch.zeros_like(target, dtype=torch.float32))
        return lstsq_align(pred, target, mask), d
    raise ValueError(f"unknown SSI variant {variant!r}; valid: {list(SSI_VARIANTS)}")


def residual_loss(
    pred_hat: torch.Tensor,
    target_hat: torch.Tensor,
    mask: torch.Tensor,
    *,
    power: int = 1,
    trim: float = 0.0,
    reduction: str = "batch",
) -> torch.Tensor:
    """``1/(2M) * sum |pred_hat - target_hat|^power`` over valid pixels, with optional per-image trimming.

    Args:
        pred_hat, target_hat: ``[B,1,H,W]`` normalised / aligned maps.
        mask: ``[B,1,H,W]`` bool.
        power: 1 (absolute error, robust variant) or 2 (squared error, least-squares variant).
        trim: fraction in [0, 1) of the largest residuals dropped per image (MiDaS: 0.2).
        reduction: ``"batch"`` or ``"image"`` (module docstring).

    Returns:
        Scalar float32 tensor.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"unknown reduction {reduction!r}; valid: {list(REDUCTIONS)}")
    if not 0.0 <= trim < 1.0:
        raise ValueError(f"trim must be in [0, 1), got {trim}")
    if power not in (1, 2):
        raise ValueError(f"power must be 1 or 2, got {power}")
    mask = mask.bool()
    r = (pred_hat.float() - target_hat.float()).abs()
    if power == 2:
        r = r * r
    b = r.shape[0]
    n = mask.flatten(1).sum(dim=1)  # [B]
    if trim > 0.0:
        flat = torch.where(mask, r, torch.full_like(r, float("inf"))).flatten(1)
        srt, _ = torch.sort(flat, dim=1)
        keep = torch.floor((1.0 - trim) * n.float()).long()  # [B]
        idx = torch.arange(srt.shape[1], device=r.device).unsqueeze(0)
        srt = torch.where(idx < keep.unsqueeze(1), srt, torch.zeros_like(srt))
        per_sum = srt.sum(dim=1)
    else:
        per_sum = torch.where(mask, r, torch.zeros_like(r)).flatten(1).sum(dim=1)
    has = n > 0
    if not bool(has.any()):
        return pred_hat.sum() * 0.0
    if reduction == "batch":
        return per_sum.sum() / (2.0 * n.sum().float())
    per_img = per_sum[has] / (2.0 * n[has].float())
    return per_img.sum() / float(int(has.sum())) if b else per_img.sum()


def ssi_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    *,
    variant: str = "robust",
    trim: float = 0.0,
    reduction: str = "batch",
) -> torch.Tensor:
    """Scale-and-shift-invariant loss between a prediction and a target.

    Args:
        pred: ``[B,1,H,W]`` predicted affine-invariant disparity (any scale/shift).
        target: ``[B,1,H,W]`` ground-truth disparity (e.g. ``targets.disparity_target``).
        mask: ``[B,1,H,W]`` bool valid pixels; other pixels never influence the value or the gradient.
        variant: ``"robust"`` (median/MAD, L1) or ``"lstsq"`` (least-squares alignment, L2).
        trim: fraction of largest residuals dropped per image.
        reduction: ``"batch"`` or ``"image"``.

    Returns:
        Scalar float32 tensor; 0 when ``pred`` is an exact positive affine function of ``target``
        (``"robust"``) or any affine function of it (``"lstsq"``).
    """
    p_hat, d_hat = normalize_pair(pred, target, mask, variant)
    return residual_loss(
        p_hat, d_hat, mask, power=1 if variant == "robust" else 2, trim=trim, reduction=reduction
    )
