"""Training targets: metric (or affine) depth -> per-image normalised disparity in [0, 1].

AnyDepth regresses disparity d' = 1/d with the ground truth "normalised to [0, 1]" (paper §3.2-3.3); the exact
normalisation is SILENT in the paper. Project decision (docs/training.md):

1. valid pixels = the sample's valid mask AND finite AND depth > 0;
2. depth is clipped to the far plane (100 m by default): d_c = min(d, far_plane), so the smallest disparity is
   1/far_plane = 0.01 m^-1 (the far plane only applies to metric depth; an affine-invariant depth such as
   BlendedMVS has no metric far plane and is not clipped);
3. disparity = 1 / d_c on valid pixels;
4. per-image min-max over valid pixels: t = (disp - min) / (max - min), so t is in [0, 1] on valid pixels
   (a constant image gives t = 0); invalid pixels hold 0.

The loss is affine-invariant anyway (``losses.ssi``), so step 4 only fixes the numeric range of the target
(it matters for the least-squares variant and for logging), never the result of the robust variant.
"""

from __future__ import annotations

import torch

from anydepth.types import DepthSpace

__all__ = ["disparity_target", "DEFAULT_FAR_PLANE"]

DEFAULT_FAR_PLANE = 100.0  # metres; AnyDepth's far plane (paper §3.1, code default max_depth=100)


def _as_space(space: DepthSpace | str) -> DepthSpace:
    try:
        return DepthSpace(space)
    except ValueError:
        raise ValueError(f"unknown depth space {space!r}; valid: {[s.value for s in DepthSpace]}") from None


def disparity_target(
    depth: torch.Tensor,
    valid: torch.Tensor,
    *,
    depth_space: DepthSpace | str | list[DepthSpace | str] = DepthSpace.DEPTH_METRIC,
    far_plane: float | None = DEFAULT_FAR_PLANE,
    normalize: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Convert ground-truth depth to the (normalised) disparity training target.

    Args:
        depth: ``[B,1,H,W]`` ground truth in ``depth_space`` (metric depth in metres for most datasets).
        valid: ``[B,1,H,W]`` bool mask of usable pixels.
        depth_space: the meaning of ``depth``, one value for the batch or one per image. Depth spaces are
            inverted; disparity spaces are used as they are. ``far_plane`` clipping applies to metric depth only.
        far_plane: metres; metric depth beyond it is clipped to it (``None`` disables clipping).
        normalize: per-image min-max normalisation of the disparity to [0, 1] over valid pixels.

    Returns:
        ``(target [B,1,H,W] float32, mask [B,1,H,W] bool)``. ``mask`` is ``valid`` restricted to finite
        positive values; the target is 0 where ``mask`` is False.

    Raises:
        ValueError: shape mismatch, non-4D input, unknown depth space or a non-positive far plane.
    """
    if depth.ndim != 4 or depth.shape[1] != 1:
        raise ValueError(f"depth must be [B,1,H,W], got {tuple(depth.shape)}")
    if valid.shape != depth.shape:
        raise ValueError(
            f"valid mask shape {tuple(valid.shape)} differs from depth shape {tuple(depth.shape)}"
        )
    if far_plane is not None and not far_plane > 0:
        raise ValueError(f"far_plane must be > 0 metres or None, got {far_plane}")
    b = depth.shape[0]
    spaces = (
        [_as_space(s) for s in depth_space] if isinstance(depth_space, list) else [_as_space(depth_space)] * b
    )
    if len(spaces) != b:
        raise ValueError(f"got {len(spaces)} depth spaces for a batch of {b}")

    d = depth.float()
    mask = valid.bool() & torch.isfinite(d) & (d > 0)
    safe = torch.where(mask, d, torch.ones_like(d))
    is_disp = torch.tensor([s.is_disparity for s in spaces], device=d.device).view(b, 1, 1, 1)
    is_metric_depth = torch.tensor([s == DepthSpace.DEPTH_METRIC for s in spaces], device=d.device).view(
        b, 1, 1, 1
    )
    if far_plane is not None:
        safe = torch.where(is_metric_depth, safe.clamp(max=float(far_plane)), safe)
    disp = torch.where(is_disp, safe, 1.0 / safe)
    disp = torch.where(mask, disp, torch.zeros_like(disp))
    if not normalize:
        return disp, mask

    big = torch.finfo(disp.dtype).max
    lo = torch.where(mask, disp, torch.full_like(disp, big)).amin(dim=(1, 2, 3), keepdim=True)
    hi = torch.where(mask, disp, torch.full_like(disp, -big)).amax(dim=(1, 2, 3), keepdim=True)
    rng = hi - lo
    ok = rng > 0
    t = torch.where(ok, (disp - lo) / torch.where(ok, rng, torch.ones_like(rng)), torch.zeros_like(disp))
    t = torch.where(mask, t, torch.zeros_like(t))
    return t, mask
