"""Resizing images to the model's patch multiple and restoring predictions to the input size.

Shapes: images ``[B,C,H,W]`` float tensors. ``ResizeInfo`` records what was done so it can be undone.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["ResizeInfo", "processing_size", "fit_to_patch_multiple", "restore"]


@dataclass(frozen=True)
class ResizeInfo:
    """Input size ``(H, W)`` and the processing size ``(H', W')`` it was resized to."""

    input_hw: tuple[int, int]
    proc_hw: tuple[int, int]


def _round_to(v: float, m: int) -> int:
    return max(m, int(round(v / m)) * m)


def processing_size(
    hw: tuple[int, int],
    patch: int,
    *,
    short_side: int | None = 768,
    long_side: int | None = None,
    size: tuple[int, int] | None = None,
) -> tuple[int, int]:
    """Choose the processing size for an image of size ``hw``.

    Exactly one policy applies, in this order: ``size`` (fixed ``(H', W')``, rounded to the patch multiple),
    ``long_side`` (longest side scaled to it, aspect kept), ``short_side`` (shortest side scaled to it, aspect
    kept), or the native size when all are None. The result is always rounded to a multiple of ``patch``.
    """
    h, w = hw
    if h <= 0 or w <= 0:
        raise ValueError(f"image size must be positive, got {hw}")
    if size is not None:
        return _round_to(size[0], patch), _round_to(size[1], patch)
    if long_side is not None:
        s = long_side / max(h, w)
    elif short_side is not None:
        s = short_side / min(h, w)
    else:
        s = 1.0
    return _round_to(h * s, patch), _round_to(w * s, patch)


def fit_to_patch_multiple(
    image: torch.Tensor,
    patch: int,
    *,
    short_side: int | None = 768,
    long_side: int | None = None,
    size: tuple[int, int] | None = None,
) -> tuple[torch.Tensor, ResizeInfo]:
    """Resize ``image`` ``[B,C,H,W]`` (bilinear, antialiased when shrinking) to a patch-multiple size.

    See ``processing_size`` for the policies. Returns the resized tensor and a ``ResizeInfo``.
    """
    if image.ndim != 4:
        raise ValueError(f"expected [B,C,H,W], got {tuple(image.shape)}")
    hw = (int(image.shape[-2]), int(image.shape[-1]))
    proc = processing_size(hw, patch, short_side=short_side, long_side=long_side, size=size)
    if proc == hw:
        return image, ResizeInfo(hw, proc)
    shrink = proc[0] < hw[0] or proc[1] < hw[1]
    out = F.interpolate(image, size=proc, mode="bilinear", align_corners=False, antialias=shrink)
    return out, ResizeInfo(hw, proc)


def restore(pred: torch.Tensor, info: ResizeInfo) -> torch.Tensor:
    """Resize a prediction ``[B,C,H',W']`` back to the input size ``info.input_hw`` (bilinear)."""
    if tuple(pred.shape[-2:]) == info.input_hw:
        return pred
    return F.interpolate(pred, size=info.input_hw, mode="bilinear", align_corners=False)
