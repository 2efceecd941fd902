"""Multi-scale gradient-matching loss (MiDaS ``L_reg``; ``L_gm`` in DAv2 / AnyDepth).

With the residual R = pred - target (both already normalised or aligned, see ``losses.ssi``), at scale k
(k = 0..scales-1) the maps and the mask are subsampled by strided slicing with step 2^k (no averaging), and the
forward differences |R(i, j+1) - R(i, j)| and |R(i+1, j) - R(i, j)| are summed over the pairs whose BOTH pixels
are valid. Each scale is normalised by its number of valid pixels M_k; the loss is the SUM over scales:

    L_gm = sum_k ( sum_pairs |grad_x R_k| + |grad_y R_k| ) / M_k

``reduction="batch"`` (MiDaS gist) divides the batch sum by the batch total ``sum_i M_k,i`` at each scale;
``reduction="image"`` averages per-image values over images with valid pixels at that scale. A constant residual
(a prediction off by a constant after normalisation) has zero gradient loss. All maths in float32.
"""

from __future__ import annotations

import torch

from anydepth.losses.ssi import REDUCTIONS

__all__ = ["gradient_loss"]


def _one_scale(r: torch.Tensor, m: torch.Tensor, reduction: str) -> torch.Tensor | None:
    mf = m.float()
    gx = (r[..., :, 1:] - r[..., :, :-1]).abs() * (mf[..., :, 1:] * mf[..., :, :-1])
    gy = (r[..., 1:, :] - r[..., :-1, :]).abs() * (mf[..., 1:, :] * mf[..., :-1, :])
    per_sum = gx.flatten(1).sum(1) + gy.flatten(1).sum(1)  # [B]
    n = mf.flatten(1).sum(1)  # [B]
    has = n > 0
    if not bool(has.any()):
        return None
    if reduction == "batch":
        return per_sum.sum() / n.sum()
    return (per_sum[has] / n[has]).mean()


def gradient_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    *,
    scales: int = 4,
    reduction: str = "batch",
) -> torch.Tensor:
    """Multi-scale gradient-matching loss of ``pred - target`` over valid pixels.

    Args:
        pred: ``[B,1,H,W]`` normalised / aligned prediction.
        target: ``[B,1,H,W]`` normalised target in the same space.
        mask: ``[B,1,H,W]`` bool valid pixels (pairs with an invalid pixel are ignored).
        scales: number of scales (steps 1, 2, 4, ..., 2^(scales-1)); AnyDepth/MiDaS use 4.
        reduction: ``"batch"`` or ``"image"`` (module docstring).

    Returns:
        Scalar float32 tensor (0 for a constant residual; 0 with a graph when nothing is valid).

    Raises:
        ValueError: bad shapes, ``scales < 1`` or an unknown reduction.
    """
    if pred.ndim != 4 or pred.shape[1] != 1:
        raise ValueError(f"pred must be [B,1,H,W], got {tuple(pred.shape)}")
    if target.shape != pred.shape or mask.shape != pred.shape:
        raise ValueError(
            f"shapes differ: pred {tuple(pred.shape)}, target {tuple(target.shape)}, mask {tuple(mask.shape)}"
        )
    if scales < 1:
        raise ValueError(f"scales must be >= 1, got {scales}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"unknown reduction {reduction!r}; valid: {list(REDUCTIONS)}")
    mask = mask.bool()
    r = torch.where(mask, pred.float() - target.float(), torch.zeros_like(pred, dtype=torch.float32))
    total = pred.float().sum() * 0.0
    for k in range(scales):
        step = 2**k
        term = _one_scale(r[..., ::step, ::step], mask[..., ::step, ::step], reduction)
        if term is not None:
            total = total + term
    return total
