"""Pinhole camera geometry: intrinsics from FOV / focal length / 35 mm equivalent, unprojection, projection.

Conventions (used everywhere in ``anydepth``):

* Camera frame: OpenCV, x right, y down, z forward (into the scene). Depth is planar z in metres (or in
  the unit of the depth map given), not the distance along the ray.
* Pixel-centre convention: integer pixel coordinates ``(u, v)`` are pixel *centres*. Pixel ``(0, 0)`` covers
  ``[-0.5, 0.5]^2``; an image of width ``W`` spans ``u`` in ``[-0.5, W - 0.5]``. The principal point of an ideal
  centred camera is therefore ``cx = (W - 1) / 2``, ``cy = (H - 1) / 2`` (the TUM/PrimeSense value 319.5 for
  640 px), and a horizontal field of view covers the full width ``W``: ``fx = W / (2 tan(fov / 2))``.
* Unprojection of pixel ``(u, v)`` with depth ``z``: ``x = (u - cx) z / fx``, ``y = (v - cy) z / fy``.

Functions accept numpy arrays or torch tensors and return the same kind. No IO, no device choice.
"""

from __future__ import annotations

import math
from typing import Literal, TypeVar

import numpy as np
import torch
import torch.nn.functional as F

from anydepth.types import Intrinsics

__all__ = [
    "DEFAULT_FOV_DEG",
    "FULL_FRAME_DIAGONAL_MM",
    "principal_point",
    "focal_from_fov",
    "fov_from_focal",
    "focal_from_35mm",
    "intrinsics_from_fov",
    "intrinsics_from_focal",
    "intrinsics_from_35mm",
    "intrinsics_from_dict",
    "resolve_intrinsics",
    "pixel_grid",
    "unproject_depth",
    "project_points",
    "depth_edge_mask",
]

#: Horizontal field of view (degrees) assumed when nothing else is known about the camera. 60 degrees is
#: between a phone's main camera (about 65-70 degrees, 26 mm equivalent) and a typical webcam/dashcam crop.
DEFAULT_FOV_DEG = 60.0
#: Diagonal of the 36 x 24 mm full frame; the "35 mm equivalent focal length" is defined against it.
FULL_FRAME_DIAGONAL_MM = math.hypot(36.0, 24.0)

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)
FovAxis = Literal["horizontal", "vertical", "diagonal"]


def principal_point(height: int, width: int) -> tuple[float, float]:
    """Image centre ``(cx, cy) = ((W - 1) / 2, (H - 1) / 2)`` in pixels (pixel-centre convention)."""
    return (width - 1) / 2.0, (height - 1) / 2.0


def focal_from_fov(size_px: float, fov_deg: float) -> float:
    """Focal length in pixels for a field of view ``fov_deg`` spanning ``size_px`` pixels.

    Raises:
        ValueError: ``fov_deg`` not in (0, 180) or ``size_px`` not positive.
    """
    if not 0.0 < fov_deg < 180.0:
        raise ValueError(f"field of view must be in (0, 180) degrees, got {fov_deg}")
    if size_px <= 0:
        raise ValueError(f"image size must be positive, got {size_px}")
    return size_px / (2.0 * math.tan(math.radians(fov_deg) / 2.0))


def fov_from_focal(size_px: float, focal_px: float) -> float:
    """Field of view in degrees covered by ``size_px`` pixels with focal length ``focal_px`` pixels."""
    if focal_px <= 0:
        raise ValueError(f"focal length must be positive, got {focal_px}")
    return math.degrees(2.0 * math.atan(size_px / (2.0 * focal_px)))


def focal_from_35mm(height: int, width: int, focal_35mm: float) -> float:
    """Focal length in pixels from the EXIF ``FocalLengthIn35mmFilm`` value (mm).

    The 35 mm equivalent focal length scales the 36 x 24 mm frame diagonal (43.27 mm) to the image diagonal
    (CIPA DC-008 defines it by the angle of view; the diagonal convention is the one cameras use and it does
    not depend on the aspect ratio): ``f_px = f35 * hypot(W, H) / 43.27``.
    """
    if focal_35mm <= 0:
        raise ValueError(f"35 mm equivalent focal length must be positive, got {focal_35mm}")
    return float(focal_35mm) * math.hypot(width, height) / FULL_FRAME_DIAGONAL_MM


def intrinsics_from_focal(height: int, width: int, focal_px: float) -> Intrinsics:
    """Square-pixel intrinsics with focal ``focal_px`` (pixels) and the principal point at the image centre."""
    if focal_px <= 0:
        raise ValueError(f"focal length must be positive, got {focal_px}")
    cx, cy = principal_point(height, width)
    return Intrinsics(float(focal_px), float(focal_px), cx, cy)


def intrinsics_from_fov(height: int, width: int, fov_deg: float, axis: FovAxis = "horizontal") -> Intrinsics:
    """Square-pixel, centred intrinsics for an image of ``height x width`` pixels and a field of view.

    Args:
        height, width: image size in pixels.
        fov_deg: field of view in degrees along ``axis``.
        axis: ``"horizontal"`` (default; across the width), ``"vertical"`` or ``"diagonal"``.
    """
    span = {"horizontal": width, "vertical": height, "diagonal": math.hypot(width, height)}.get(axis)
    if span is None:
        raise ValueError(f"axis must be 'horizontal', 'vertical' or 'diagonal', got {axis!r}")
    return intrinsics_from_focal(height, width, focal_from_fov(span, fov_deg))


def intrinsics_from_35mm(height: int, width: int, focal_35mm: float) -> Intrinsics:
    """Centred intrinsics from a 35 mm equivalent focal length (see ``focal_from_35mm``)."""
    return intrinsics_from_focal(height, width, focal_from_35mm(height, width, focal_35mm))


def intrinsics_from_dict(d: dict[str, float], height: int, width: int) -> Intrinsics:
    """Intrinsics from a mapping with ``fx, fy, cx, cy`` (pixels), optionally for another image size.

    If ``d`` also holds ``width`` and ``height`` and they differ from the image's, the intrinsics are rescaled
    to the image (pixel-centre convention, ``Intrinsics.scaled``). ``cx``/``cy`` default to the image centre.

    Raises:
        ValueError: missing ``fx``, a value that is not a finite number (NaN, inf, text), non-positive focal
            lengths or size, or unknown keys.
    """
    known = {"fx", "fy", "cx", "cy", "width", "height"}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"unknown intrinsics key(s) {unknown}; expected {sorted(known)}")
    if "fx" not in d:
        raise ValueError(f"intrinsics need at least 'fx' (pixels), got keys {sorted(d)}")
    vals: dict[str, float] = {}
    for key, v in d.items():
        try:
            vals[key] = float(v)
        except (TypeError, ValueError):
            vals[key] = math.nan
        if not math.isfinite(vals[key]):
            raise ValueError(f"intrinsics {key!r} must be a finite number, got {v!r}")
    fx = vals["fx"]
    fy = vals.get("fy", fx)
    if fx <= 0 or fy <= 0:
        raise ValueError(f"focal lengths must be positive, got fx={fx}, fy={fy}")
    ref_w = int(vals.get("width", width))
    ref_h = int(vals.get("height", height))
    if ref_w <= 0 or ref_h <= 0:
        raise ValueError(f"intrinsics width/height must be positive, got {ref_w}x{ref_h}")
    ccx, ccy = principal_point(ref_h, ref_w)
    k = Intrinsics(fx, fy, vals.get("cx", ccx), vals.get("cy", ccy))
    if (ref_h, ref_w) != (height, width):
        k = k.scaled(width / ref_w, height / ref_h)
    return k


def resolve_intrinsics(
    height: int,
    width: int,
    *,
    intrinsics: Intrinsics | None = None,
    fov_deg: float | None = None,
    focal_35mm: float | None = None,
    default_fov_deg: float = DEFAULT_FOV_DEG,
) -> tuple[Intrinsics, str]:
    """Pick the camera intrinsics for an image, by precedence.

    Order: explicit ``intrinsics`` > horizontal ``fov_deg`` > ``focal_35mm`` (EXIF) > ``default_fov_deg``.

    Returns:
        ``(intrinsics, source)`` where ``source`` is ``"intrinsics"``, ``"fov"``, ``"exif_35mm"`` or
        ``"default_fov"``.
    """
    if intrinsics is not None:
        return intrinsics, "intrinsics"
    if fov_deg is not None:
        return intrinsics_from_fov(height, width, fov_deg), "fov"
    if focal_35mm is not None and focal_35mm > 0:
        return intrinsics_from_35mm(height, width, focal_35mm), "exif_35mm"
    return intrinsics_from_fov(height, width, default_fov_deg), "default_fov"


def _as_tensor(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else x


def _like(t: torch.Tensor, ref: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    return t.numpy() if isinstance(ref, np.ndarray) else t


def pixel_grid(
    height: int, width: int, *, dtype: torch.dtype = torch.float32, device: torch.device | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-centre coordinates ``(u, v)``, each ``[H, W]``: ``u[i, j] = j``, ``v[i, j] = i``."""
    v, u = torch.meshgrid(
        torch.arange(height, dtype=dtype, device=device),
        torch.arange(width, dtype=dtype, device=device),
        indexing="ij",
    )
    return u, v


def unproject_depth(depth: ArrayT, intrinsics: Intrinsics) -> ArrayT:
    """Back-project a planar depth map to camera-frame 3D points.

    Args:
        depth: ``[..., H, W]`` planar depth (z) in any unit (metres for metric depth); numpy or torch.
            Non-finite or non-positive values give points with that z (mask them out downstream).
        intrinsics: pinhole intrinsics of this ``H x W`` image in pixels.

    Returns:
        ``[..., H, W, 3]`` points ``(x, y, z)`` in the unit of ``depth`` (OpenCV camera frame), same array type.
    """
    d = _as_tensor(depth)
    if d.ndim < 2:
        raise ValueError(f"depth must be [..., H, W], got shape {tuple(d.shape)}")
    if not d.is_floating_point():
        d = d.float()
    h, w = int(d.shape[-2]), int(d.shape[-1])
    u, v = pixel_grid(h, w, dtype=d.dtype, device=d.device)
    x = (u - intrinsics.cx) / intrinsics.fx * d
    y = (v - intrinsics.cy) / intrinsics.fy * d
    return _like(torch.stack([x, y, d], dim=-1), depth)  # type: ignore[return-value]


def project_points(points: ArrayT, intrinsics: Intrinsics) -> ArrayT:
    """Project camera-frame points to pixel coordinates (the inverse of ``unproject_depth``).

    Args:
        points: ``[..., 3]`` points ``(x, y, z)`` with ``z > 0``; numpy or torch.
        intrinsics: pinhole intrinsics in pixels.

    Returns:
        ``[..., 2]`` pixel coordinates ``(u, v)`` (pixel-centre convention), same array type.
    """
    p = _as_tensor(points)
    if p.shape[-1] != 3:
        raise ValueError(f"points must be [..., 3], got shape {tuple(p.shape)}")
    if not p.is_floating_point():
        p = p.float()
    z = p[..., 2]
    u = p[..., 0] / z * intrinsics.fx + intrinsics.cx
    v = p[..., 1] / z * intrinsics.fy + intrinsics.cy
    return _like(torch.stack([u, v], dim=-1), points)  # type: ignore[return-value]


def depth_edge_mask(depth: ArrayT, rtol: float = 0.05, kernel: int = 3) -> ArrayT:
    """Mark pixels at depth discontinuities ("flying pixels" when unprojected).

    A pixel is an edge when, within its ``kernel x kernel`` neighbourhood, the largest depth exceeds the
    smallest by more than the factor ``1 + rtol`` (a scale-free test, so it behaves the same for metric and
    nominal depth). Invalid pixels (non-finite or <= 0) are ignored as neighbours.

    Args:
        depth: ``[H, W]`` planar depth (> 0 where valid), numpy or torch.
        rtol: relative jump threshold; 0.05 means a 5% depth jump between neighbours.
        kernel: odd neighbourhood size in pixels.

    Returns:
        bool ``[H, W]``, True at edges, same array type.
    """
    if kernel < 3 or kernel % 2 == 0:
        raise ValueError(f"kernel must be an odd integer >= 3, got {kernel}")
    d = _as_tensor(depth)
    if d.ndim != 2:
        raise ValueError(f"depth must be [H, W], got shape {tuple(d.shape)}")
    d = d.double()
    valid = torch.isfinite(d) & (d > 0)
    logd = torch.where(valid, d.clamp_min(1e-30).log(), torch.zeros_like(d))
    big = torch.where(valid, logd, torch.full_like(d, -torch.inf))[None, None]
    small = torch.where(valid, -logd, torch.full_like(d, -torch.inf))[None, None]
    pad = kernel // 2
    mx = F.max_pool2d(big, kernel, stride=1, padding=pad)[0, 0]
    mn = -F.max_pool2d(small, kernel, stride=1, padding=pad)[0, 0]
    edge = valid & ((mx - mn) > math.log1p(rtol))
    return _like(edge, depth)  # type: ignore[return-value]
